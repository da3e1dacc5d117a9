"""Configuration: YAML -> frozen, validated models. No network, no secrets read.

The file is validated in two passes. The first checks the top level (``server``,
``stores``, ``defaults``, ``alerts``) and that ``accounts`` is a mapping. The
second validates each account with its provider's own model (so each provider
owns its keys), after filling in ``defaults``; then cross-references (sinks and
state name defined stores) are checked. Every refusal is a :class:`ConfigError`
whose message starts with the key path, e.g.
``accounts.idp-api.sinks[0].store: 'fils' is not a defined store (defined: files, vault)``.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)

from rotator.config import yamlfile
from rotator.errors import ConfigError
from rotator.secrets import SecretRef, parse_ref
from rotator.tokens import MIN_LIFETIME

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AccountSettings",
    "AlertsSettings",
    "Config",
    "Duration",
    "HttpUrl",
    "Model",
    "PositiveDuration",
    "Ref",
    "Sink",
    "config_path",
    "load_config",
    "parse_config",
    "parse_duration",
]

DEFAULT_CONFIG_PATH = "/etc/rotator/rotator.yaml"
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: object) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``7d``, ``1h30m`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m, 1h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match and any(match.groups()):
            days, hours, minutes, seconds = match.groups()
            return timedelta(
                days=int(days or 0),
                hours=int(hours or 0),
                minutes=int(minutes or 0),
                seconds=float(seconds or 0),
            )
    raise ValueError(f"{value!r} is not a duration; write it like 30s, 5m, 1h or 7d")


def _format_duration(value: timedelta) -> str:
    return f"{int(value.total_seconds())}s"


def _ref(value: object) -> SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a secret reference string: env:NAME, file:/path or cred:NAME")
    return parse_ref(value)


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+", value):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return value


def _mode(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        mode = int(value, 8)
    else:
        raise ValueError(f'{value!r} is not an octal file mode such as "0600"')
    if mode & 0o7000 or mode & 0o111:
        raise ValueError(f"{oct(mode)} must not be executable or set special bits")
    return mode


Duration = Annotated[timedelta, PlainValidator(parse_duration), PlainSerializer(_format_duration)]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


#: a duration where 0 would mean a busy loop (retry_initial: 0s retries a 503 at once, forever)
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Ref = Annotated[SecretRef, PlainValidator(_ref), PlainSerializer(str)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
FileMode = Annotated[int, PlainValidator(_mode), PlainSerializer(oct)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- server and stores ---------------------------------------------------------


class ServerSettings(Model):
    listen: Annotated[str, AfterValidator(_listen)] | None = None
    #: how long rotations in flight may take to finish on SIGTERM
    shutdown_grace: Duration = timedelta(seconds=30)
    #: rotations running at once (a bounded worker pool)
    workers: int = Field(default=16, ge=1, le=256)
    #: the encrypted local spool (default: $STATE_DIRECTORY/spool, else ~/.local/state)
    spool_dir: Path | None = None
    #: key for the spool (default: a generated 0600 key file in spool_dir)
    spool_key: Ref | None = None


def store_identity(settings: BaseModel) -> str:
    """Where a store's data lives (not how we log in): keys the local spool."""
    where = settings.model_dump(
        mode="json",
        include={
            "type",
            "directory",
            "url",
            "mount",
            "namespace",
            "prefix",
            "region",
            "endpoint_url",
        },
    )
    return json.dumps(where, sort_keys=True)


class FileStoreSettings(Model):
    type: Literal["file"]
    directory: Path
    mode: FileMode = 0o600


class VaultTokenAuth(Model):
    method: Literal["token"]
    token: Ref


class VaultAppRoleAuth(Model):
    method: Literal["approle"]
    role_id: Ref
    secret_id: Ref
    mount: str = "approle"


class VaultKubernetesAuth(Model):
    method: Literal["kubernetes"]
    role: str
    mount: str = "kubernetes"
    jwt_path: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


VaultAuth = Annotated[
    VaultTokenAuth | VaultAppRoleAuth | VaultKubernetesAuth, Field(discriminator="method")
]


class VaultStoreSettings(Model):
    type: Literal["vault"]
    url: HttpUrl
    mount: str = "secret"
    prefix: str = ""
    namespace: str | None = None
    ca_cert: Path | None = None
    verify: bool = True
    timeout: Duration = timedelta(seconds=10)
    auth: VaultAuth


class AwsStoreSettings(Model):
    type: Literal["aws"]
    region: str | None = None
    endpoint_url: HttpUrl | None = None
    profile: str | None = None
    kms_key_id: str | None = None
    prefix: str = ""
    timeout: Duration = timedelta(seconds=10)


StoreSettings = Annotated[
    FileStoreSettings | VaultStoreSettings | AwsStoreSettings, Field(discriminator="type")
]


# --- alerts ------------------------------------------------------------------------


class WebhookChannel(Model):
    type: Literal["webhook"]
    url: Ref
    format: Literal["json", "slack"] = "json"
    timeout: Duration = timedelta(seconds=10)


class CommandChannel(Model):
    type: Literal["command"]
    argv: list[str] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=30)


class EmailChannel(Model):
    type: Literal["email"]
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    username: str | None = None
    password: Ref | None = None
    timeout: Duration = timedelta(seconds=30)


Channel = Annotated[WebhookChannel | CommandChannel | EmailChannel, Field(discriminator="type")]


class AlertsSettings(Model):
    refresh_token_warn: list[Duration] = Field(
        default_factory=lambda: [timedelta(days=7), timedelta(days=3), timedelta(days=1)]
    )
    repeat: Duration = timedelta(hours=24)
    sweep: Duration = timedelta(minutes=15)
    failure_threshold: int = Field(default=3, ge=1)
    channels: list[Channel] = Field(default_factory=list)


# --- accounts ------------------------------------------------------------------


class Sink(Model):
    store: str
    path: str = Field(min_length=1)
    format: Literal["json", "token", "env"] = "json"
    adopt: bool = False


class StateRef(Model):
    store: str
    path: str | None = None


class AccountSettings(Model):
    """Keys every account has; each provider's model adds its own."""

    provider: str
    sinks: list[Sink] = Field(min_length=1)
    state: StateRef | None = None
    refresh_share: float = Field(default=0.67, gt=0, lt=1)
    refresh_before: Duration | None = None
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    max_lifetime: PositiveDuration = timedelta(hours=1)
    #: a vendor's expires_in below this is refused as bad_response (rotator.tokens)
    min_lifetime: PositiveDuration = MIN_LIFETIME
    timeout: PositiveDuration = timedelta(seconds=30)
    retry_initial: PositiveDuration = timedelta(seconds=5)
    retry_max: PositiveDuration = timedelta(minutes=5)
    lease_ttl: PositiveDuration = timedelta(minutes=2)
    ca_bundle: Path | None = None
    tls_verify: bool = True
    refresh_token_warn: list[Duration] | None = None

    def state_path(self, account: str) -> str:
        return (self.state.path if self.state and self.state.path else None) or f"state/{account}"

    @model_validator(mode="after")
    def _check_timing(self) -> AccountSettings:
        if self.min_lifetime > self.max_lifetime:
            raise ValueError("min_lifetime must not be longer than max_lifetime")
        if self.retry_initial > self.retry_max:
            raise ValueError("retry_initial must not be longer than retry_max")
        if self.timeout >= self.lease_ttl:
            raise ValueError(
                "timeout must be shorter than lease_ttl (the lease must outlive a call)"
            )
        return self


class Config(Model):
    server: ServerSettings = ServerSettings()
    stores: dict[str, StoreSettings] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    alerts: AlertsSettings = AlertsSettings()
    accounts: dict[str, AccountSettings] = Field(default_factory=dict)
    #: where the configuration was read from (not a key of the file)
    source: str = ""


# --- loading -----------------------------------------------------------------------


def config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return explicit or env.get("ROTATOR_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str) -> Config:
    """Read and validate a configuration file; every failure is a ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} does not exist (give -c FILE or set $ROTATOR_CONFIG)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    return parse_config(text, source=path)


def parse_config(text: str, *, source: str = "<string>") -> Config:
    try:
        raw = yamlfile.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return _validate(raw, source)


_TOP_KEYS = ("server", "stores", "defaults", "alerts", "accounts")


def _validate(raw: dict[str, Any], source: str) -> Config:
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown section (valid: {', '.join(_TOP_KEYS)})", path=str(key))
    accounts_raw = raw.get("accounts") or {}
    if not isinstance(accounts_raw, dict):
        raise ConfigError("must be a mapping of account name to settings", path="accounts")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("must be a mapping of account keys", path="defaults")
    top = {k: v for k, v in raw.items() if k != "accounts"}
    try:
        base = Config.model_validate({**top, "source": source})
    except ValidationError as exc:
        raise _config_error(exc, model=Config, data=top) from None

    from rotator.providers.base import PROVIDERS, provider_class

    unknown = _unknown_defaults(defaults, accounts_raw)
    if unknown is not None:
        raise ConfigError("is not an account key of any provider", path=f"defaults.{unknown}")

    accounts: dict[str, AccountSettings] = {}
    for name, body in accounts_raw.items():
        path = f"accounts.{name}"
        if not isinstance(name, str) or not ACCOUNT_NAME.match(name):
            raise ConfigError(
                "account names use letters, digits, '.', '_' and '-' (at most 100)", path=path
            )
        if not isinstance(body, dict):
            raise ConfigError("must be a mapping of account keys", path=path)
        provider = body.get("provider", defaults.get("provider"))
        if not isinstance(provider, str):
            raise ConfigError(
                f"required key is missing (one of: {', '.join(sorted(PROVIDERS))})",
                path=f"{path}.provider",
            )
        model = provider_class(provider, path=f"{path}.provider").settings_model
        merged = {
            key: value
            for key, value in defaults.items()
            if key in model.model_fields and key not in body
        }
        merged.update(body)
        try:
            accounts[name] = model.model_validate(merged)
        except ValidationError as exc:
            raise _config_error(exc, prefix=path, model=model, data=merged) from None

    config = base.model_copy(update={"accounts": accounts})
    _check_references(config)
    _check_paths(config)
    return config


def _unknown_defaults(defaults: dict[str, Any], accounts: dict[Any, Any]) -> str | None:
    """The first key of ``defaults`` that no provider has, if any.

    The providers the configuration names are asked first; the others are
    imported only for a key none of those has (a mistake, or a key meant for
    another provider's accounts).
    """
    from rotator.providers.base import PROVIDERS, provider_class

    keys = [key for key in defaults if key not in AccountSettings.model_fields]
    bodies = [defaults, *(body for body in accounts.values() if isinstance(body, dict))]
    named = {name for body in bodies if isinstance(name := body.get("provider"), str)}
    for providers in (sorted(PROVIDERS.keys() & named), sorted(PROVIDERS.keys() - named)):
        if not keys:
            return None
        known: set[str] = set()
        for name in providers:
            known.update(provider_class(name).settings_model.model_fields)
        keys = [key for key in keys if key not in known]
    return keys[0] if keys else None


def _check_references(config: Config) -> None:
    defined = ", ".join(sorted(config.stores)) or "none"
    for name, account in config.accounts.items():
        for index, sink in enumerate(account.sinks):
            where = f"accounts.{name}.sinks[{index}]"
            store = config.stores.get(sink.store)
            if store is None:
                raise ConfigError(
                    f"{sink.store!r} is not a defined store (defined: {defined})",
                    path=f"{where}.store",
                )
            if store.type != "file" and sink.format != "json":
                raise ConfigError(
                    f"format {sink.format!r} is for file stores; {store.type} stores "
                    "hold the json fields (leave format out)",
                    path=f"{where}.format",
                )
        if account.state is None:
            file_stores = [n for n, s in config.stores.items() if s.type == "file"]
            if not config.stores:
                raise ConfigError(
                    "no state store: define one under stores and set "
                    "defaults.state.store (or state.store here)",
                    path=f"accounts.{name}.state",
                )
            if len(config.stores) > 1 and len(file_stores) != 1:
                raise ConfigError(
                    "which store keeps the state? set state.store here or defaults.state.store "
                    f"(defined: {defined})",
                    path=f"accounts.{name}.state",
                )
        elif account.state.store not in config.stores:
            raise ConfigError(
                f"{account.state.store!r} is not a defined store (defined: {defined})",
                path=f"accounts.{name}.state.store",
            )


def _check_paths(config: Config) -> None:
    """Every (store, path) has one writer: a state, an alert record or a sink."""
    owners: dict[tuple[str, str], str] = {}

    def claim(store: str, path: str, owner: str) -> None:
        other = owners.setdefault((store, path.strip("/")), owner)
        if other != owner:
            raise ConfigError(
                f"{store}:{path} is already written by {other}; give each its own path",
                path=owner,
            )

    for name, account in config.accounts.items():
        store = state_store(config, name)
        claim(store, account.state_path(name), f"accounts.{name}.state")
        claim(store, f"alerts/{name}", f"accounts.{name} (alert record)")
    for name, account in config.accounts.items():
        for index, sink in enumerate(account.sinks):
            claim(sink.store, sink.path, f"accounts.{name}.sinks[{index}].path")


def state_store(config: Config, account: str) -> str:
    """The name of the store holding an account's state."""
    settings = config.accounts[account]
    if settings.state is not None:
        return settings.state.store
    if len(config.stores) == 1:
        return next(iter(config.stores))
    return next(n for n, s in config.stores.items() if s.type == "file")


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _child(node: Any, part: int | str) -> tuple[bool, Any]:
    if isinstance(node, dict) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def _clean_loc(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    """Drop the union tags pydantic inserts into a location, by walking the input."""
    out: list[int | str] = []
    node = data
    tag_skipped_in: object = None
    for part in loc:
        if (
            isinstance(part, str)
            and part in _UNION_TAGS
            and isinstance(node, dict)
            and part in (node.get("type"), node.get("method"))
            # once per mapping: in `auth: {method: token}` the second `token` is the key
            and tag_skipped_in is not node
        ):
            tag_skipped_in = node
            continue  # pydantic's tag for the union member, not a key of the input
        found, child = _child(node, part)
        if found:
            node = child
        elif isinstance(part, str) and part in _UNION_TAGS and not isinstance(node, dict):
            # lost track of the input: a tag cannot be told from a key; drop it
            continue
        else:
            node = None
        out.append(part)
    return tuple(out)


def _config_error(
    exc: ValidationError,
    *,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    data: Any = None,
) -> ConfigError:
    lines = []
    for error in exc.errors(include_url=False):
        loc = _clean_loc(error["loc"], data)
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, ctx.get("discriminator", "").strip("'"))
        path = _loc(loc)
        full = f"{prefix}.{path}" if prefix and path else (prefix or path)
        if kind == "union_tag_invalid":
            message = f"{ctx.get('tag')!r} is not valid (valid: {ctx.get('expected_tags')})"
        elif kind == "union_tag_not_found":
            message = f"required key is missing (valid: {_TAG_CHOICES.get(str(loc[-1]), '')})"
        elif kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1], data) if model else None
            keys = sorted(f.alias or n for n, f in parent.model_fields.items()) if parent else []
            valid = f" (valid keys: {', '.join(keys)})" if keys else ""
            message = f"unknown key{valid}"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if kind not in ("value_error", "assertion_error") and "input" in error:
                shown = error["input"]
                if isinstance(shown, str | int | float | bool) and len(str(shown)) < 60:
                    message = f"{shown!r}: {message}"
        lines.append(f"{full}: {message}" if full else message)
    first, *rest = lines
    if rest:
        first += "".join(f"\n  also {line}" for line in rest[:5])
    return ConfigError(first)


_TAG_CHOICES = {
    "type": "file, vault, aws for stores; webhook, command, email for channels",
    "method": "token, approle, kubernetes",
}
_UNION_TAGS = {
    "file",
    "vault",
    "aws",
    "token",
    "approle",
    "kubernetes",
    "webhook",
    "command",
    "email",
}


def _model_at(
    model: type[BaseModel] | None, loc: tuple[int | str, ...], data: Any
) -> type[BaseModel] | None:
    """The nested model class a location points into, to list its valid keys.

    Walks the annotations and the input together: inside ``dict[str, Store]`` or
    ``list[Channel]`` the key or index is skipped, and a union of models is
    resolved by the input's discriminator (``type`` / ``method``).
    """
    annotation: Any = model
    node = data
    for part in loc:
        current = _pick_model(annotation, node)
        if current is not None:
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        else:
            args = typing.get_args(_unwrap(annotation))
            annotation = args[-1] if args else None
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return _pick_model(annotation, node)


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None`` down to the type that matters."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (types.UnionType, typing.Union):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) == 1:
                annotation = rest[0]
                continue
        return annotation


def _pick_model(annotation: Any, node: Any) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) not in (types.UnionType, typing.Union):
        return None
    members = [_unwrap(a) for a in typing.get_args(annotation)]
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if not isinstance(node, dict):
        return models[0] if len(models) == 1 else None
    for candidate in models:
        for tag in ("type", "method"):
            field = candidate.model_fields.get(tag)
            if field is not None and node.get(tag) in typing.get_args(field.annotation):
                return candidate
    return None
