"""Reading a configuration file: YAML -> :class:`~rotator.config.models.Config`.

The file is validated in passes. The first checks the top level (``server``,
``stores``, ``defaults``, ``alerts``) and that ``accounts`` is a mapping. The
second validates each account with its provider's own model (so each provider
owns its keys), after filling in ``defaults``; then cross-references (sinks and
state name defined stores) and paths (each place in a store has one writer) are
checked. Every refusal is a :class:`ConfigError` whose message starts with the
key path, e.g.
``accounts.idp-api.sinks[0].store: 'fils' is not a defined store (defined: files, vault)``.

The file is hostile input: :func:`load_config` raises nothing but ConfigError,
whatever the bytes (the daemon's reload on SIGHUP relies on it), and the YAML
loader bounds alias expansion, nesting and number sizes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import yaml
from pydantic import ValidationError

from rotator.config import yamlfile
from rotator.config.fields import shown
from rotator.config.messages import MAX_MESSAGE, config_error, key_path
from rotator.config.models import AccountSettings, Config, Model, state_store
from rotator.errors import ConfigError
from rotator.providers.registry import PROVIDERS, provider_class

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "INTERNAL",
    "MAX_FILE_BYTES",
    "config_path",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = "/etc/rotator/rotator.yaml"
#: a configuration larger than this is refused unread (-c /dev/zero must not fill memory)
MAX_FILE_BYTES = 32 * 2**20
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOP_KEYS = ("server", "stores", "defaults", "alerts", "accounts")


def config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return explicit or env.get("ROTATOR_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str) -> Config:
    """Read and validate a configuration file; every failure is a ConfigError."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} does not exist (give -c FILE or set $ROTATOR_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"configuration file {path} is larger than {MAX_FILE_BYTES // 2**20} MB "
            "(10,000 accounts take about 1.2 MB)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"configuration file {path} is not UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None
    return parse_config(text, source=path)


def parse_config(text: str, *, source: str = "<string>") -> Config:
    """Validate the text of a configuration file; every failure is a ConfigError.

    Every value is bounded before it reaches arithmetic, so an exception other
    than ConfigError is a bug in these checks; it still becomes a ConfigError
    (``check`` exits 2, a daemon reloading on SIGHUP keeps its configuration),
    and its message says so (the hostile-input tests look for it).
    """
    try:
        return _parse(text, source)
    except ConfigError:
        raise
    except Exception as exc:  # the contract: nothing but ConfigError leaves
        raise ConfigError(f"{source}: {INTERNAL} ({type(exc).__name__})") from None


#: the message of a ConfigError that stands for a bug in the checks
INTERNAL = "the file could not be validated; this is a bug in rotator's checks, please report it"


def _parse(text: str, source: str) -> Config:
    try:
        raw = yamlfile.load(text, one_line=True)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return _validate(raw, source)


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    """A refusal of the loader starts with its key path; a syntax error with the file."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = str(getattr(exc, "problem", None) or "invalid YAML")
    located = getattr(exc, "key_path", None)
    syntax = isinstance(exc, yaml.scanner.ScannerError | yaml.parser.ParserError)
    if located and not syntax:
        shown_path = located if len(located) <= _PATH_PARTS else [*located[:_PATH_PARTS], "…"]
        message = f"{key_path(shown_path)}: {problem} ({source}, {where or 'no position'})"
    else:
        message = f"{source}: not valid YAML{' at ' + where if where else ''}: {problem}"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return ConfigError(message)


#: keys of a path shown in a YAML refusal (one nested 64 deep would fill a screen)
_PATH_PARTS = 12


def _validate(raw: dict[Any, Any], source: str) -> Config:
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"unknown section (valid: {', '.join(_TOP_KEYS)})", path=key_path([key])
            )
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
        raise config_error(exc, model=Config, data=top) from None

    unknown = _unknown_defaults(defaults, accounts_raw)
    if unknown is not None:
        raise ConfigError(
            "is not an account key of any provider", path=key_path(["defaults", unknown])
        )

    accounts: dict[str, AccountSettings] = {}
    shared: dict[Any, Any] = {}
    # Each account's parsed YAML is dropped once its model is built: the raw and the
    # validated copies of 100,000 accounts are never in memory together.
    for name in list(accounts_raw):
        body = accounts_raw.pop(name)
        if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
            raise ConfigError(
                "account names use letters, digits, '.', '_' and '-' (at most 100)",
                path=key_path(["accounts", name]),
            )
        path = f"accounts.{name}"
        if not isinstance(body, dict):
            raise ConfigError("must be a mapping of account keys", path=path)
        provider = body.get("provider", defaults.get("provider"))
        if not isinstance(provider, str):
            raise ConfigError(
                f"required key is missing (one of: {', '.join(PROVIDERS.names())})",
                path=f"{path}.provider",
            )
        if provider not in PROVIDERS:
            # the registry quotes the name whole and looks for the closest: not for 1 MB of it
            raise ConfigError(PROVIDERS.unknown(shown(provider)[1:-1]), path=f"{path}.provider")
        model = provider_class(provider, path=f"{path}.provider").settings_model
        merged = {
            key: value
            for key, value in defaults.items()
            if key in model.model_fields and key not in body
        }
        merged.update(body)
        try:
            accounts[name] = _shared(model.model_validate(merged), shared)
        except ValidationError as exc:
            raise config_error(exc, prefix=path, model=model, data=merged) from None

    config = base.model_copy(update={"accounts": accounts})
    _check_references(config)
    _check_paths(config)
    _check_aws_names(config)
    return config


def _shared(model: Any, seen: dict[Any, Any]) -> Any:
    """``model`` with each value equal to one an earlier account has replaced by that one.

    Accounts filled from ``defaults`` hold equal values (a ``state`` reference, a
    secret reference, the set of fields given); pydantic builds each anew for
    every account. At 100,000 accounts the copies were about half of the
    configuration's memory. The models are frozen, so a shared value is never
    changed through one of them (``model_copy`` copies the fields set first).
    Strings, numbers and durations are left alone: a value merged from
    ``defaults`` is already the same object, and one an account spells out is small.
    """
    values = model.__dict__
    for key, value in values.items():
        if isinstance(value, _PLAIN):
            continue
        if isinstance(value, list):
            values[key] = [_shared(v, seen) if isinstance(v, Model) else v for v in value]
            continue
        inner = _shared(value, seen) if isinstance(value, Model) else value
        try:
            values[key] = seen.setdefault((key, type(inner), _frozen(inner)), inner)
        except TypeError:  # unhashable: kept as it is
            continue
    fields_set = model.__pydantic_fields_set__
    fields_set = seen.setdefault((type(model), frozenset(fields_set)), fields_set)
    object.__setattr__(model, "__pydantic_fields_set__", fields_set)
    return model


#: values not worth sharing (see _shared)
_PLAIN = (str, int, float, type(None), timedelta)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a value, with the types inside it (1 is not True)."""
    if isinstance(value, dict):
        return tuple((k, type(v), _frozen(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return (type(value), *((type(v), _frozen(v)) for v in value))
    return value


def _unknown_defaults(defaults: dict[Any, Any], accounts: dict[Any, Any]) -> str | None:
    """The first key of ``defaults`` that no provider has, if any.

    The providers the configuration names are asked first; the others are
    imported only for a key none of those has (a mistake, or a key meant for
    another provider's accounts).
    """
    keys = [key for key in defaults if key not in AccountSettings.model_fields]
    bodies = [defaults, *(body for body in accounts.values() if isinstance(body, dict))]
    named = {name for body in bodies if isinstance(name := body.get("provider"), str)}
    known_names = set(PROVIDERS.names())
    for providers in (sorted(known_names & named), sorted(known_names - named)):
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
                    f"{shown(sink.store)} is not a defined store (defined: {defined})",
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
                f"{shown(account.state.store)} is not a defined store (defined: {defined})",
                path=f"accounts.{name}.state.store",
            )


def _check_paths(config: Config) -> None:
    """Every (store, path) has one writer: a state, an alert record or a sink.

    Paths are compared as a store reads them, percent-decoded: ``a%2Fb`` and
    ``a/b`` are one place in Vault.
    """
    owners: dict[tuple[str, str], str] = {}

    def claim(store: str, path: str, owner: str) -> None:
        other = owners.setdefault((store, _spelling(path)), owner)
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


def _check_aws_names(config: Config) -> None:
    """Secrets Manager takes fewer names than a path allows: say so in ``check``, not
    at the first write (``prefix`` + path, letters, digits and ``/_+=.@-``)."""
    for name, account in config.accounts.items():
        places = [(state_store(config, name), account.state_path(name), f"accounts.{name}.state")]
        places += [
            (sink.store, sink.path, f"accounts.{name}.sinks[{index}].path")
            for index, sink in enumerate(account.sinks)
        ]
        for store_name, path, where in places:
            store = config.stores[store_name]
            if store.type == "aws" and not _AWS_NAME.fullmatch(store.prefix + path):
                raise ConfigError(
                    f"{shown(store.prefix + path)} is not a Secrets Manager name (prefix + "
                    "path: letters, digits and /_+=.@-, at most 512 characters)",
                    path=where,
                )


_AWS_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")


def _spelling(path: str) -> str:
    """One spelling of a validated store path (decoded until it stops changing)."""
    path = path.strip("/")
    while "%" in path and (decoded := unquote(path)) != path:
        path = decoded
    return path
