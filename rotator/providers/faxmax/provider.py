"""FaxMAX: a JSON-RPC 2.0 session token, kept alive and re-logged-in.

Requests go to ``https://{domain}/api/v1`` (``endpoint:``) as the form field
``data`` holding the JSON-RPC request (``transport: json`` posts the JSON
itself). A JSON-RPC ``error`` object is an error whatever the HTTP status,
including the 200 FaxMAX answers with.

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

A session token from the vendor is checked like any token (printable ASCII,
:func:`rotator.tokens.token_string`), and every vendor message is scrubbed of
the account's secrets (password, API code, API password, the session and
login tokens) before it is put in an error.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

import structlog
from pydantic import Field, field_validator, model_validator

from rotator.config.models import AccountSettings, Duration, HttpUrl, Ref
from rotator.errors import (
    BadResponse,
    ConfigError,
    InvalidGrant,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    scrub_values,
    secret_values,
)
from rotator.providers.base import base_view, send
from rotator.providers.faxmax.cipher import check_name, load_cipher
from rotator.secrets import Secret, resolve
from rotator.tokens import TokenSet, error_from_status, format_time, token_string

if TYPE_CHECKING:
    import httpx

    from rotator.config.models import Config
    from rotator.state import AccountState

__all__ = [
    "LOGIN_TOKEN_LIFETIME",
    "FaxmaxProvider",
    "FaxmaxSettings",
    "JsonRpcError",
    "faxmax_login_url",
    "login_payload",
    "login_url",
]

_log = structlog.get_logger("rotator.providers.faxmax")

#: how far ahead ``exp`` of a passwordless login token may be (vendor: at most 3 s)
LOGIN_TOKEN_LIFETIME = 3
#: request parameters that carry a secret (scrubbed from the vendor's answer)
_SECRET_PARAMS = ("password", "token_", "code_")

_ids = itertools.count(1)
_HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$"  # noqa: E501
_METHOD = r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"


class JsonRpcError(ProviderError):
    """Marker base: every error that came as a JSON-RPC ``error`` object."""


class JsonRpcRefused(JsonRpcError, InvalidGrant):
    """An application error: the login, code or session was refused."""


class JsonRpcFault(JsonRpcError, PermanentProviderError):
    """A protocol error (-32700..-32600): our request or the method name is wrong."""


class JsonRpcServerError(JsonRpcError, TransientProviderError):
    """-32603 internal error: worth retrying."""


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
        return check_name(value)

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
    ) -> Any:
        """One JSON-RPC call; the ``result`` or a typed error.

        ``known``: the account's secrets; with the secret parameters of this
        call they are scrubbed from any vendor text put in an error.
        """
        s = self.settings
        secrets = (*known, *(params[key] for key in _SECRET_PARAMS if key in params))
        request_id = next(_ids)
        body = json.dumps(
            {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id},
            separators=(",", ":"),
        )
        timeout = s.timeout.total_seconds()
        headers = {"Accept": "application/json"}
        if s.transport == "json":
            answer = send(
                client,
                "POST",
                s.url,
                content=body.encode("utf-8"),
                headers={**headers, "Content-Type": "application/json"},
                timeout=timeout,
            )
        else:
            answer = send(
                client, "POST", s.url, data={"data": body}, headers=headers, timeout=timeout
            )
        payload: Any = None
        try:
            payload = json.loads(answer.body)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." past the stack
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            raise _rpc_error(method, payload["error"], answer.status, secrets)
        if not 200 <= answer.status < 300:
            raise error_from_status(
                answer.status, answer.body, answer.content_type, answer.retry_after, secrets
            )
        if (
            not isinstance(payload, dict)
            or payload.get("jsonrpc") != "2.0"
            or "result" not in payload
        ):
            raise BadResponse(
                f"{method}: the answer is not a JSON-RPC 2.0 result", status=answer.status
            )
        if payload.get("id") != request_id:
            raise BadResponse(
                f"{method}: the answer's id does not match the request's", status=answer.status
            )
        return payload["result"]

    def login(
        self, client: httpx.Client, now: datetime, known: tuple[str, ...] = ()
    ) -> tuple[Secret, str]:
        """A new session token, and how it was obtained."""
        s = self.settings
        known = known or self.secrets()
        if s.password is not None:
            result = self.call(
                client,
                "Core.login",
                {"username": s.username, "password": resolve(s.password).reveal()},
                known,
            )
            how = "password"
        else:
            if s.api_code is None or s.remote_ip is None:  # the settings model prevents it
                raise PermanentProviderError("no_api_code", "api_code and remote_ip are needed")
            token_ = encrypted_login_token(s, s.username, s.remote_ip, now)
            result = self.call(
                client,
                s.login_method,
                {"token_": token_.reveal(), "code_": resolve(s.api_code).reveal()},
                known,
            )
            how = "api_code"
        return _session_token(result, s.login_method if how == "api_code" else "Core.login"), how

    def refresh(self, state: AccountState, client: httpx.Client, now: datetime) -> TokenSet:
        current = state.access_token
        known = self.secrets(state)
        how = ""
        token: Secret | None = None
        if current is not None and state.expires_at is not None and state.expires_at > now:
            try:
                result = self.call(client, "Core.token_login", {"token_": current.reveal()}, known)
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
            token, how = self.login(client, now, known)
            extra["logged_in_at"] = format_time(now)
        extra["session_via"] = how
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


def _rpc_error(
    method: str, error: dict[str, Any], status: int, secrets: tuple[str, ...] = ()
) -> ProviderError:
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else 0
    message = error.get("message")
    said = scrub_values(message, secrets) if isinstance(message, str) else "no message"
    text = f"{method}: {said}"
    kind = f"jsonrpc_{code}"
    if code == -32603:
        return JsonRpcServerError(kind, text, status=status)
    if -32768 <= code <= -32600:
        return JsonRpcFault(kind, text, status=status)
    return JsonRpcRefused(kind, text, status=status)


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
