"""BIFIT Kassa: the OAuth2 password grant with a hashed password, and refresh.

The password is never sent as typed: BIFIT wants base64 of the SHA-256 digest
of its UTF-8 bytes (``password_encoding: base64``, the documented default;
``base64url`` uses the URL-safe alphabet, ``base64url-unpadded`` drops the
``=`` as well: a private client may have been set up either way). Both grants
post a form body with the client id and secret (``cashdesk-rest-client`` for the
public client; a custom ``client_id`` must bring its ``client_secret``, since the
public secret would only be refused as ``invalid_client`` at the first login).

The refresh grant is not what BIFIT's documents show for accounts (they show
the password grant); it is our guess. When the refresh token is refused and a
password is configured, the provider logs in again with the password and marks
it in ``extra`` (``relogin_at``, ``relogin_reason``); the first time per account
it says so with a warning (the refresh grant does not work here, which the
password login would otherwise hide forever), and the daemon counts every one
(``rotator_password_relogins_total``, from the marker). An answer to the
password grant that is neither a token nor a known OAuth error (an account
with a second factor, which BIFIT does not document) raises
:class:`UnexpectedLoginAnswer` carrying the vendor's message; we do not guess.

Every vendor text in an error is scrubbed of the secrets the account knows:
the stored tokens, the client secret, the password and its hashed form (the
one BIFIT actually receives, and so the one it could echo).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import structlog
from pydantic import Field, model_validator

from rotator.config.models import AccountSettings, Duration, HttpUrl, Ref
from rotator.errors import (
    InvalidClient,
    InvalidGrant,
    PermanentProviderError,
    ProviderError,
    scrub_values,
    secret_values,
)
from rotator.providers.base import HttpAnswer, base_view, send
from rotator.secrets import Secret, resolve
from rotator.tokens import (
    ConsumerView,
    TokenSet,
    error_from_status,
    format_time,
    oauth_error,
    parse_token_response,
)

if TYPE_CHECKING:
    import httpx

    from rotator.state import AccountState

__all__ = [
    "PUBLIC_CLIENT",
    "RELOGIN_AT",
    "BifitProvider",
    "BifitSettings",
    "UnexpectedLoginAnswer",
    "hash_password",
]

_log = structlog.get_logger("rotator.providers.bifit")

PUBLIC_CLIENT = "cashdesk-rest-client"
#: ``extra`` key: when the token in hand came from a password login that replaced a
#: refused refresh token ("" once an ordinary refresh worked again)
RELOGIN_AT = "relogin_at"

# RFC 6749 section 5.2: the error codes a token endpoint may answer with.
_OAUTH_CODES = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "invalid_token",
        "access_denied",
        "server_error",
        "temporarily_unavailable",
    }
)


class UnexpectedLoginAnswer(PermanentProviderError):
    """The password grant answered neither a token nor a known OAuth error."""


class BifitSettings(AccountSettings):
    username: str = Field(pattern=r"^[0-9]{10,15}$")
    password: Ref | None = None
    password_encoding: Literal["base64", "base64url", "base64url-unpadded"] = "base64"
    client_id: str = Field(default=PUBLIC_CLIENT, min_length=1)
    #: a reference for a private client; the public client's secret is its id
    client_secret: Ref | None = None
    token_url: HttpUrl = "https://kassa.bifit.com/cashdesk-api/v1/oauth/token"
    # BIFIT access tokens live 12 hours (expires_in 43199)
    max_lifetime: Duration = timedelta(hours=12)

    @model_validator(mode="after")
    def _private_client_has_its_secret(self) -> BifitSettings:
        if self.client_id != PUBLIC_CLIENT and self.client_secret is None:
            raise ValueError(
                f"client_id {self.client_id!r} needs client_secret (a secret reference such "
                f"as env:BIFIT_CLIENT_SECRET); only the public client {PUBLIC_CLIENT} has "
                "its id as its secret (leave client_id out to use it)"
            )
        return self


def hash_password(password: Secret, encoding: str = "base64") -> str:
    """base64 of SHA-256 of the UTF-8 password: standard and padded (``base64``),
    URL-safe and padded (``base64url``) or URL-safe without ``=`` (``base64url-unpadded``)."""
    digest = hashlib.sha256(password.reveal().encode("utf-8")).digest()
    if encoding == "base64":
        return base64.b64encode(digest).decode("ascii")
    encoded = base64.urlsafe_b64encode(digest).decode("ascii")
    return encoded.rstrip("=") if encoding == "base64url-unpadded" else encoded


class BifitProvider:
    name: ClassVar[str] = "bifit"
    settings_model: ClassVar[type[AccountSettings]] = BifitSettings

    def __init__(self, account: str, settings: BifitSettings) -> None:
        self.account = account
        self.settings = settings
        #: the re-login warning is given once per account (and configuration load)
        self._told = False

    @property
    def needs_seed(self) -> bool:
        return self.settings.password is None

    def _secrets(self, state: AccountState | None = None) -> tuple[str, ...]:
        """Every secret value this account knows, for scrubbing vendor text."""
        s = self.settings
        known: list[object] = [self._client_params()["client_secret"]]
        if s.password is not None:
            password = resolve(s.password)
            known += [password, hash_password(password, s.password_encoding)]
        if state is not None:
            known += [state.refresh_token, state.access_token]
        return secret_values(*known)

    def _client_params(self) -> dict[str, str]:
        s = self.settings
        secret = resolve(s.client_secret).reveal() if s.client_secret is not None else PUBLIC_CLIENT
        return {"client_id": s.client_id, "client_secret": secret}

    def _post(self, client: httpx.Client, form: dict[str, str]) -> HttpAnswer:
        return send(
            client,
            "POST",
            self.settings.token_url,
            data={**form, **self._client_params()},
            headers={"Accept": "application/json"},
            timeout=self.settings.timeout.total_seconds(),
        )

    def refresh(self, state: AccountState, client: httpx.Client, now: datetime) -> TokenSet:
        s = self.settings
        previous = state.tokenset()
        if state.refresh_token is None:
            if s.password is None:
                raise InvalidGrant(
                    "no_refresh_token",
                    f"no refresh token stored and no password configured; seed one with "
                    f"`rotator import {self.account}` or set password",
                )
            return self._clean(self.password_login(client, now, state))
        answer = self._post(
            client, {"grant_type": "refresh_token", "refresh_token": state.refresh_token.reveal()}
        )
        try:
            tokens = self._parse(answer, now, previous, self._secrets(state))
        except ProviderError as exc:
            if not _refresh_refused(exc) or s.password is None:
                raise
            _log.info(
                "refresh token refused; logging in again with the password",
                account=self.account,
                error_code=exc.code,
                status_code=exc.status,
            )
            tokens = self.password_login(client, now, state)
            if not self._told:
                self._told = True
                _log.warning(
                    "the refresh grant was refused and the password login worked: rotator "
                    "logs in with the password whenever BIFIT refuses a refresh token; said "
                    "once, counted in rotator_password_relogins_total",
                    account=self.account,
                    error_code=exc.code,
                    status_code=exc.status,
                )
            return replace(
                tokens,
                extra={
                    **tokens.extra,
                    RELOGIN_AT: format_time(now),
                    "relogin_reason": exc.code,
                },
            )
        return self._clean(tokens)

    @staticmethod
    def _clean(tokens: TokenSet) -> TokenSet:
        # a normal refresh or first login clears a previous re-login marker
        return replace(tokens, extra={**tokens.extra, RELOGIN_AT: "", "relogin_reason": ""})

    def password_login(
        self, client: httpx.Client, now: datetime, state: AccountState | None = None
    ) -> TokenSet:
        s = self.settings
        if s.password is None:
            raise InvalidGrant("no_password", "no password configured for a password login")
        secrets = self._secrets(state)
        answer = self._post(
            client,
            {
                "grant_type": "password",
                "username": s.username,
                "password": hash_password(resolve(s.password), s.password_encoding),
            },
        )
        payload = _json_object(answer.body)
        if answer.status >= 500 or answer.status == 429:
            raise error_from_status(
                answer.status, answer.body, answer.content_type, answer.retry_after, secrets
            )
        if payload is not None and "access_token" not in payload:
            code = payload.get("error")
            if isinstance(code, str) and code in _OAUTH_CODES:
                raise oauth_error(answer.status if answer.status >= 400 else 400, payload, secrets)
            raise UnexpectedLoginAnswer(
                "unexpected_login_answer",
                "the password login answered without a token (an account with a second "
                "factor? rotator cannot do that): "
                + scrub_values(_vendor_message(payload), secrets),
                status=answer.status,
            )
        return self._parse(answer, now, None, secrets)

    def _parse(
        self,
        answer: HttpAnswer,
        now: datetime,
        previous: TokenSet | None,
        secrets: tuple[str, ...],
    ) -> TokenSet:
        return parse_token_response(
            answer.body,
            status=answer.status,
            content_type=answer.content_type,
            requested_at=now,
            max_lifetime=self.settings.max_lifetime,
            previous=previous,
            retry_after=answer.retry_after,
            min_lifetime=self.settings.min_lifetime,
            secrets=secrets,
        )

    def consumer_view(self, tokens: TokenSet) -> ConsumerView:
        view = base_view(self.account, self.name, tokens)
        if tokens.extra.get("user_id"):
            view["user_id"] = tokens.extra["user_id"]
        return view


def _refresh_refused(error: ProviderError) -> bool:
    """True when the vendor refused the refresh token itself (not the client, not an outage)."""
    if error.transient or (isinstance(error, InvalidClient) and error.code == "invalid_client"):
        return False
    return isinstance(error, InvalidGrant) or error.status in (400, 401)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        loaded = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." past the stack
        return None
    return loaded if isinstance(loaded, dict) else None


def _vendor_message(payload: dict[str, Any]) -> str:
    for key in ("error_description", "message", "error", "status", "detail"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return "no message; keys: " + ", ".join(sorted(str(k) for k in payload)[:10])
