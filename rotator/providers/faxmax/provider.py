"""FaxMAX: a JSON-RPC 2.0 session token, kept alive and re-logged-in.

Requests go to ``https://{domain}/api/v1`` (``endpoint:``), one JSON-RPC call
each (:mod:`rotator.providers.faxmax.rpc`).

A session starts with either

- ``Core.login`` ``{username, password}`` when ``password`` is configured, or
- passwordless login: ``{"username", "exp": now + 3 s, "remote_ip"}`` encrypted
  with the domain's API password (``cipher:``, see
  :mod:`rotator.providers.faxmax.cipher`) and sent with the API code to the
  ``login_method`` (``Core.login_token``) as ``token_`` and ``code_``.

The result's ``token`` is the session token; consumers get it as the access
token. While it is current, each rotation calls ``Core.token_login`` with it to
check and renew it; when that is refused, it logs in again. The vendor does
not publish the session lifetime, so ``session_ttl`` (1h) is taken as the
token's lifetime.

A login token is good for about three seconds, so each one is built from a
fresh clock reading immediately before its own request
(:mod:`rotator.providers.faxmax.clock`), never from the rotation's ``now``
after a slow keep-alive. A login token refused for its ``exp`` is transient
(:class:`LoginTokenTimeRefused`, the measured clock offset in its message); only
when it is refused again and neither a measured skew nor a slow call explains
it is it the refusal it says it is (``invalid_grant``, the account stops).

A session token from the vendor is checked like any token (printable ASCII,
:func:`rotator.tokens.token_string`), and every vendor message is scrubbed of
the account's secrets (password, API code, API password, the session and
login tokens) before it is put in an error.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

import structlog
from pydantic import Field, field_validator, model_validator

from rotator.config.models import AccountSettings, Duration, HttpUrl, Ref
from rotator.errors import BadResponse, ConfigError, PermanentProviderError, secret_values
from rotator.providers.base import base_view
from rotator.providers.faxmax.cipher import check_name, importable, load_cipher
from rotator.providers.faxmax.clock import RunClock, refuses_exp
from rotator.providers.faxmax.rpc import (
    EXP_REFUSED,
    JsonRpcError,
    JsonRpcFault,
    JsonRpcRefused,
    JsonRpcServerError,
    LoginTokenTimeRefused,
    rpc_call,
)
from rotator.secrets import Secret, resolve
from rotator.tokens import TokenSet, format_time, token_string

if TYPE_CHECKING:
    import httpx

    from rotator.config.models import Config
    from rotator.state import AccountState

__all__ = [
    "LOGIN_TOKEN_LIFETIME",
    "FaxmaxProvider",
    "FaxmaxSettings",
    "JsonRpcError",
    "JsonRpcFault",
    "JsonRpcRefused",
    "JsonRpcServerError",
    "LoginTokenTimeRefused",
    "faxmax_login_url",
    "login_payload",
    "login_url",
]

_log = structlog.get_logger("rotator.providers.faxmax")

#: how far ahead ``exp`` of a passwordless login token may be (vendor: at most 3 s)
LOGIN_TOKEN_LIFETIME = 3
_HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$"  # noqa: E501
_METHOD = r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"


class FaxmaxSettings(AccountSettings):
    domain: str = Field(pattern=_HOSTNAME, max_length=253)
    endpoint: HttpUrl | None = None
    username: str = Field(min_length=1)
    password: Ref | None = None
    api_code: Ref | None = None
    api_password: Ref | None = None
    remote_ip: str | None = None
    cipher: str = "aes-256-cbc"
    login_method: str = Field(default="Core.login_token", pattern=_METHOD)
    transport: Literal["form", "json"] = "form"
    session_ttl: Duration = timedelta(hours=1)

    @field_validator("remote_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @field_validator("cipher")
    @classmethod
    def _cipher(cls, value: str) -> str:
        # a plugged-in cipher is imported now: a missing module stops `rotator check`
        importable(check_name(value))
        return value

    @model_validator(mode="after")
    def _check_login(self) -> FaxmaxSettings:
        if self.session_ttl < timedelta(seconds=30):
            raise ValueError("session_ttl must be at least 30s")
        if self.password is None and (
            self.api_code is None or self.api_password is None or self.remote_ip is None
        ):
            raise ValueError(
                "set password (Core.login), or api_code, api_password and remote_ip "
                "(passwordless login)"
            )
        return self

    @property
    def url(self) -> str:
        return self.endpoint or f"https://{self.domain}/api/v1"

    def vendor_urls(self) -> tuple[str, ...]:
        return (self.url,)


def login_payload(username: str, remote_ip: str, now: datetime) -> bytes:
    """The JSON a passwordless login token encrypts; ``exp`` is never more than 3 s ahead."""
    exp = int(now.timestamp()) + LOGIN_TOKEN_LIFETIME
    return json.dumps(
        {"username": username, "exp": exp, "remote_ip": remote_ip}, separators=(",", ":")
    ).encode("utf-8")


def encrypted_login_token(
    settings: FaxmaxSettings, username: str, remote_ip: str, now: datetime
) -> Secret:
    if settings.api_password is None:
        raise PermanentProviderError("no_api_password", "the account has no api_password")
    cipher = load_cipher(settings.cipher, path="cipher")
    token = cipher(login_payload(username, remote_ip, now), resolve(settings.api_password).reveal())
    return Secret(token)


def login_url(
    settings: FaxmaxSettings, user: str, remote_ip: str, now: datetime, page: str = "inboxes"
) -> Secret:
    """``https://{domain}/#{page}?token=...&code=...``: a web login, valid for 3 seconds."""
    if settings.api_code is None:
        raise PermanentProviderError("no_api_code", "the account has no api_code")
    token = encrypted_login_token(settings, user, remote_ip, now).reveal()
    code = resolve(settings.api_code).reveal()
    return Secret(
        f"https://{settings.domain}/#{quote(page, safe='/')}?token={quote(token, safe='')}"
        f"&code={quote(code, safe='')}"
    )


class FaxmaxProvider:
    name: ClassVar[str] = "faxmax"
    settings_model: ClassVar[type[AccountSettings]] = FaxmaxSettings

    def __init__(self, account: str, settings: FaxmaxSettings) -> None:
        self.account = account
        self.settings = settings

    @property
    def needs_seed(self) -> bool:
        return False

    def secrets(self, state: AccountState | None = None) -> tuple[str, ...]:
        """Every secret value the account knows, for scrubbing vendor text."""
        s = self.settings
        refs = (s.password, s.api_code, s.api_password)
        known: list[object] = [resolve(ref) for ref in refs if ref is not None]
        if state is not None:
            known += [state.access_token, state.refresh_token]
        return secret_values(*known)

    def call(
        self,
        client: httpx.Client,
        method: str,
        params: dict[str, str],
        known: tuple[str, ...] = (),
        *,
        clock: RunClock | None = None,
    ) -> Any:
        """One JSON-RPC call (:func:`~rotator.providers.faxmax.rpc.rpc_call`)."""
        clock = clock or RunClock(datetime.now(UTC))
        return rpc_call(client, self.settings, method, params, known=known, clock=clock)

    def password_login(
        self, client: httpx.Client, clock: RunClock, known: tuple[str, ...] = ()
    ) -> Secret:
        """``Core.login`` {username, password}: a new session token."""
        s = self.settings
        if s.password is None:
            raise PermanentProviderError("no_password", "the account has no password")
        params = {"username": s.username, "password": resolve(s.password).reveal()}
        result = self.call(client, "Core.login", params, known or self.secrets(), clock=clock)
        return _session_token(result, "Core.login")

    def code_login(
        self,
        client: httpx.Client,
        clock: RunClock,
        known: tuple[str, ...] = (),
        *,
        repeat: bool = False,
    ) -> Secret:
        """Passwordless login (``login_method``); ``repeat``: the last try was refused for time.

        The login token reads the clock immediately before its request: it is good
        for about three seconds, and whatever came before it may have taken longer.
        """
        s = self.settings
        if s.api_code is None or s.remote_ip is None:  # the settings model prevents it
            raise PermanentProviderError("no_api_code", "api_code and remote_ip are needed")
        token_ = encrypted_login_token(s, s.username, s.remote_ip, clock.now())
        params = {"token_": token_.reveal(), "code_": resolve(s.api_code).reveal()}
        try:
            result = self.call(client, s.login_method, params, known or self.secrets(), clock=clock)
        except JsonRpcRefused as exc:
            raise _judged(exc, repeat=repeat) from None
        return _session_token(result, s.login_method)

    def login(
        self,
        client: httpx.Client,
        clock: RunClock,
        known: tuple[str, ...] = (),
        *,
        repeat: bool = False,
    ) -> tuple[Secret, str]:
        """A new session token, and how it was obtained (``password`` or ``api_code``)."""
        if self.settings.password is not None:
            return self.password_login(client, clock, known), "password"
        return self.code_login(client, clock, known, repeat=repeat), "api_code"

    def refresh(self, state: AccountState, client: httpx.Client, now: datetime) -> TokenSet:
        clock = RunClock(now)
        current = state.access_token
        known = self.secrets(state)
        how = ""
        token: Secret | None = None
        if current is not None and state.expires_at is not None and state.expires_at > now:
            try:
                result = self.call(
                    client, "Core.token_login", {"token_": current.reveal()}, known, clock=clock
                )
            except (JsonRpcRefused, JsonRpcFault) as exc:
                # Refused (or, on a domain without it, an unknown method): the goal is a
                # session token, and a fresh login gets one.
                _log.info(
                    "session not renewed; logging in again",
                    account=self.account,
                    error_code=exc.code,
                )
            else:
                token = _session_token(result, "Core.token_login", default=current)
                how = "keepalive"
        extra: dict[str, str] = {}
        if token is None:
            logged_in_at = clock.now()
            repeat = state.last_error_code == EXP_REFUSED
            token, how = self.login(client, clock, known, repeat=repeat)
            extra["logged_in_at"] = format_time(logged_in_at)
        extra["session_via"] = how
        # issued_at and expires_at stay on the rotation's `now`: a session that began a
        # little later is credited with a little less life, never more
        return TokenSet(
            access_token=token,
            token_type="session",  # sent as the `token_` parameter, not as a Bearer header
            issued_at=now,
            expires_at=now + self.settings.session_ttl,
            extra=extra,
        )

    def consumer_view(self, tokens: TokenSet) -> dict[str, str]:
        view = base_view(self.account, self.name, tokens)
        view["endpoint"] = self.settings.url
        return view


def _session_token(result: Any, method: str, default: Secret | None = None) -> Secret:
    token = result.get("token") if isinstance(result, dict) else None
    if isinstance(token, str) and token.strip():
        # the session token is what consumers get: the same rules as any access token
        return Secret(token_string(token, f"{method}: the result's token") or "")
    if default is not None and result not in (None, False):
        return default
    raise BadResponse(f"{method}: the result has no token")


def _judged(refused: JsonRpcRefused, *, repeat: bool) -> JsonRpcError:
    """A refused login token: transient when it is about ``exp``, unless that repeats unexplained.

    A refusal of ``exp`` (expired, too far ahead) is a clock or a slow path, not a
    dead grant: transient, the measured offset in the message. Refused so again
    (``repeat``) with neither a measured skew nor a slow call to explain it, it is
    taken at its word: the refusal stands and the account stops for a human.
    """
    if not refuses_exp(refused.description):
        return refused
    timing = refused.timing
    measured = timing.describe() if timing is not None else "nothing measured"
    if repeat and (timing is None or not timing.explains_exp_refusal()):
        return JsonRpcRefused(
            refused.code,
            f"{refused.description} [refused for its time twice in a row; {measured}]",
            status=refused.status,
            timing=timing,
        )
    return LoginTokenTimeRefused(
        EXP_REFUSED,
        f"{refused.description} [the login token's exp; {measured}]",
        status=refused.status,
        timing=timing,
    )


def faxmax_login_url(
    config: Config,
    account: str,
    *,
    user: str,
    remote_ip: str,
    page: str = "inboxes",
    clock: Callable[[], datetime] | None = None,
) -> str:
    """The passwordless web login URL for ``user`` (valid for 3 seconds)."""
    if account not in config.accounts:
        known = ", ".join(sorted(config.accounts)) or "none"
        raise ConfigError(f"no account {account!r} in {config.source} (accounts: {known})")
    settings = config.accounts[account]
    if not isinstance(settings, FaxmaxSettings):
        raise ConfigError(
            f"faxmax-login-url is for faxmax accounts; this one is {settings.provider!r}",
            path=f"accounts.{account}.provider",
        )
    for key in ("api_code", "api_password"):
        if getattr(settings, key) is None:
            raise ConfigError(
                "required by faxmax-login-url (a secret reference)",
                path=f"accounts.{account}.{key}",
            )
    try:
        ipaddress.ip_address(remote_ip)
    except ValueError:
        raise ConfigError(f"--remote-ip {remote_ip!r} is not an IP address") from None
    if not user.strip():
        raise ConfigError("--user must not be empty")
    if not page or any(c in page for c in "?#& "):
        raise ConfigError(f"--page {page!r} must be a page name such as inboxes")
    now = clock() if clock is not None else datetime.now(UTC)
    return login_url(settings, user, remote_ip, now, page=page).reveal()
