"""Configuration models: frozen, validated pydantic models of the YAML file.

The models say what a valid configuration is; :mod:`rotator.config.loading`
reads the file and runs the passes no single model can (each account is
validated with its provider's own model, then cross-references and paths), and
:mod:`rotator.config.messages` turns a pydantic error into a key-path message.
The value types (durations, URLs, store paths) live in :mod:`rotator.config.fields`;
the ones providers use are re-exported here.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from rotator.config.console import ConsoleSettings
from rotator.config.coordination import CoordinationSettings
from rotator.config.fields import (
    Duration,
    FileMode,
    HttpUrl,
    Listen,
    PositiveDuration,
    Ref,
    StorePath,
    StorePrefix,
    parse_duration,
)
from rotator.politeness import DEFAULT_LIMIT, RateLimit
from rotator.tokens import MIN_LIFETIME

__all__ = [
    "NOTIFY_EVENTS",
    "AccountSettings",
    "AlertsSettings",
    "AwsStoreSettings",
    "CommandChannel",
    "Config",
    "ConsoleSettings",
    "CoordinationSettings",
    "Duration",
    "EmailChannel",
    "ExecNotify",
    "FileStoreSettings",
    "HttpUrl",
    "Model",
    "Notify",
    "NotifyEvent",
    "PositiveDuration",
    "RateLimitSettings",
    "Ref",
    "ServerSettings",
    "Sink",
    "StateRef",
    "VaultStoreSettings",
    "WebhookChannel",
    "WebhookNotify",
    "parse_duration",
    "state_store",
    "store_identity",
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- server and stores ---------------------------------------------------------


class ServerSettings(Model):
    listen: Listen | None = None
    #: re-authorization links and the status page (off when absent); needs listen
    console: ConsoleSettings | None = None
    #: replicas sharing the accounts (absent: this process rotates them all)
    coordination: CoordinationSettings | None = None
    #: how long rotations in flight may take to finish on SIGTERM
    shutdown_grace: Duration = timedelta(seconds=30)
    workers: int = Field(default=16, ge=1, le=256)  #: rotations at once (the worker pool)
    single_cpu: bool = True  #: one CPU at a time, the least busy (rotator/service/cpus.py)
    #: the encrypted local spool (default: $STATE_DIRECTORY/spool, else ~/.local/state)
    spool_dir: Path | None = None
    #: key for the spool (default: a generated 0600 key file in spool_dir)
    spool_key: Ref | None = None

    @model_validator(mode="after")
    def _check_console(self) -> ServerSettings:
        if self.console is not None and self.listen is None:
            raise ValueError(
                "console is served on server.listen: set listen (e.g. 0.0.0.0:9464) "
                "or remove console"
            )
        return self


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
    mount: StorePrefix = "secret"
    prefix: StorePrefix = ""
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
    prefix: StorePrefix = ""
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


class _Program(Model):
    """A program rotator runs: ``argv`` without a shell, and the daemon variables it may see.

    ``pass_env`` names must be real names, none of systemd's, and none of the
    ``RESERVED`` prefix that rotator sets itself.
    """

    RESERVED: ClassVar[str] = "ROTATOR_"
    SET_FOR: ClassVar[str] = "each event"
    argv: list[str] = Field(min_length=1)
    pass_env: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_pass_env(self) -> Self:
        _check_env_names(self.pass_env, reserved=self.RESERVED, use=f"for {self.SET_FOR}")
        return self


class CommandChannel(_Program):
    """``argv`` run with the alert on stdin, in a minimal environment.

    The command sees PATH, HOME, LANG, LC_ALL and TZ (when set), the alert's
    ROTATOR_ALERT_* variables, and only those of the daemon's other variables that
    ``pass_env`` names: the daemon's environment holds its credentials.
    """

    RESERVED: ClassVar[str] = "ROTATOR_ALERT_"
    SET_FOR: ClassVar[str] = "each alert"
    type: Literal["command"]
    timeout: Duration = timedelta(seconds=30)


def _check_env_names(names: list[str], *, reserved: str, use: str) -> None:
    """``pass_env`` of a program rotator runs: real names, none of ours, none of systemd's."""
    for index, name in enumerate(names):
        where = f"pass_env[{index}] {name!r}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(
                f"{where} is not an environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        if name.startswith(reserved):
            raise ValueError(f"{where}: {reserved}* are set by rotator {use}")
        if name in {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"}:
            raise ValueError(f"{where}: the command must not speak to systemd for rotator")


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
    #: failures in a row before an alert (bounded like every number of the file)
    failure_threshold: int = Field(default=3, ge=1, le=1000)
    channels: list[Channel] = Field(default_factory=list)


# --- notifications to consumers (rotator.notify) ------------------------------------

NotifyEvent = Literal["rotated", "reauthorized", "failed", "recovered"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("rotated", "reauthorized", "failed", "recovered")


def _no_repeats(events: list[NotifyEvent]) -> list[NotifyEvent]:
    if len(set(events)) != len(events):
        raise ValueError("events lists an event twice")
    return events


class ExecNotify(_Program):
    """Run ``argv`` (no shell) after an event, in a minimal environment.

    The program sees PATH, HOME, LANG, LC_ALL and TZ (when set), the event's
    ROTATOR_* variables and the ``pass_env`` names; the access token only on its
    standard input, and only with ``token: stdin``.
    """

    type: Literal["exec"]
    #: a reload command cares that the token changed, not about the account's health
    events: Annotated[list[NotifyEvent], AfterValidator(_no_repeats)] = Field(
        default_factory=lambda: list(NOTIFY_EVENTS[:1]), min_length=1
    )
    #: "stdin": the access token on the program's standard input; "none": never
    token: Literal["stdin", "none"] = "none"
    timeout: PositiveDuration = timedelta(seconds=30)


class WebhookNotify(Model):
    """POST each event as JSON, signed per Standard Webhooks with ``secret`` (whsec_...)."""

    type: Literal["webhook"]
    url: Ref
    secret: Ref
    events: Annotated[list[NotifyEvent], AfterValidator(_no_repeats)] = Field(
        default_factory=lambda: list(NOTIFY_EVENTS), min_length=1
    )
    timeout: PositiveDuration = timedelta(seconds=10)
    #: tries of one event, the first included (backing off 1 s, 2 s, 4 s, ... up to 60 s)
    attempts: int = Field(default=5, ge=1, le=20)


Notify = Annotated[ExecNotify | WebhookNotify, Field(discriminator="type")]


# --- accounts ------------------------------------------------------------------


class Sink(Model):
    store: str
    path: StorePath
    format: Literal["json", "token", "env"] = "json"
    adopt: bool = False


class StateRef(Model):
    store: str
    path: StorePath | None = None


class RateLimitSettings(Model):
    """``rate_limit:`` of an account (or ``defaults``): the limits of its vendor's host.

    Accounts on one host share one limit; when they set different ones, each
    number's strictest value wins (``rotator.politeness.plan_limits``, logged).
    """

    per_second: float = Field(default=DEFAULT_LIMIT.per_second, gt=0, le=10_000)
    burst: int = Field(default=DEFAULT_LIMIT.burst, ge=1, le=10_000)
    concurrency: int = Field(default=DEFAULT_LIMIT.concurrency, ge=1, le=256)

    def limit(self) -> RateLimit:
        return RateLimit(self.per_second, self.burst, self.concurrency)


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
    rate_limit: RateLimitSettings = RateLimitSettings()
    notify: list[Notify] = Field(default_factory=list)

    def vendor_urls(self) -> tuple[str, ...]:
        """The URLs the provider calls (their hosts get this account's rate_limit)."""
        fields = self.__dict__  # not getattr: a miss went through pydantic's __getattr__
        return tuple(str(u) for u in (fields.get("token_url"), fields.get("api_base")) if u)

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
    #: the files ``include:`` matched, as messages name them (not a key of the file)
    included: tuple[str, ...] = ()
    #: ``include:`` globs that matched no file: allowed, ``check`` warns (not a key of the file)
    unmatched_includes: tuple[str, ...] = ()


def state_store(config: Config, account: str) -> str:
    """The name of the store holding an account's state."""
    settings = config.accounts[account]
    if settings.state is not None:
        return settings.state.store
    if len(config.stores) == 1:
        return next(iter(config.stores))
    return next(n for n, s in config.stores.items() if s.type == "file")
