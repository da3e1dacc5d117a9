"""Fax.Plus: OAuth2 refresh (``faxplus``) and personal access tokens (``faxplus-pat``).

Fax.Plus wants the token request's parameters in the *query string* of a POST
with ``Content-Type: application/x-www-form-urlencoded`` and HTTP Basic client
authentication. Access tokens live an hour. Refresh tokens never expire, except
on accounts with enhanced security controls: there the refresh token dies 30
days after the *authorization* (``rotator authorize``), and refreshing does not
move that date, so ``refresh_expires_at`` is ``authorized_at + 30d``. Whether an
account has those controls cannot be read from the API: ``enhanced_security`` is
a required key, never a default that lets an account die unannounced on day 30.
A ``refresh_token_expires_in`` Fax.Plus does send is honoured either way (the
earlier expiry wins, :func:`refresh_expiry`).

A personal access token cannot be refreshed: the provider re-reads the secret
reference now and then (every ``max_lifetime`` share, see :class:`FaxPlusPatProvider`),
checks it with ``GET {api_base}/accounts/self``, and publishes it; its expiry
date is the account's ``refresh_expires_at`` so the expiry alerts fire for it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, ClassVar

import structlog
from pydantic import Field, PlainValidator

from rotator.config.fields import shown
from rotator.config.models import AccountSettings, HttpUrl, Ref
from rotator.errors import BadResponse, InvalidGrant, PermanentProviderError, secret_values
from rotator.providers.authcode import CodeFlow
from rotator.providers.base import base_view, send
from rotator.providers.oauth2 import basic_auth_header, keep_refresh_token, token_request
from rotator.secrets import Secret, resolve
from rotator.tokens import (
    ConsumerView,
    TokenSet,
    ViewValue,
    error_from_status,
    format_time,
    parse_time,
)

if TYPE_CHECKING:
    import httpx

    from rotator.state import AccountState

__all__ = [
    "ENHANCED_SECURITY_LIFETIME",
    "SENT_EXPIRY",
    "FaxPlusPatProvider",
    "FaxPlusPatSettings",
    "FaxPlusProvider",
    "FaxPlusSettings",
    "api_headers",
    "authorization_url",
    "exchange_code",
    "refresh_expiry",
    "verify_token",
    "with_sent_expiry",
]

_log = structlog.get_logger("rotator.providers.faxplus")

#: on accounts with enhanced security controls, a refresh token lives this long
#: from the authorization; refreshing does not extend it.
ENHANCED_SECURITY_LIFETIME = timedelta(days=30)
#: what the client id of every Fax.Plus app starts with (their documents and console)
CLIENT_ID_PREFIX = "APIK-"
#: ``extra`` key: the refresh-token expiry Fax.Plus itself sent for the stored refresh
#: token (``refresh_token_expires_in``), kept while that token is in use
SENT_EXPIRY = "refresh_expiry_sent"


def _aware_time(value: object) -> datetime:
    """``2027-01-31`` (midnight UTC, the safe side) or an ISO 8601 time (naive = UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            return parse_time(value.strip())
        except ValueError:
            pass
    raise ValueError(
        f"{value!r} is not a date or time; write it like 2027-01-31 or 2027-01-31T12:00:00Z"
    )


AwareTime = Annotated[datetime, PlainValidator(_aware_time)]


class FaxPlusSettings(AccountSettings):
    client_id: str = Field(min_length=1)
    client_secret: Ref
    redirect_uri: HttpUrl | None = None
    #: required: left at a default ``false`` on an account that has the controls, the
    #: refresh token would die on day 30 with no alert (issue 16)
    enhanced_security: bool = Field(
        description=(
            "set true when the Fax.Plus account has enhanced security controls (its "
            "refresh token then dies 30 days after authorization, whatever the refreshes, "
            "and rotator alerts before that), false when it has not; rotator cannot tell "
            "from the API, and a wrong false lets the account die unannounced on day 30 "
            "(may be set in defaults)"
        )
    )
    token_url: HttpUrl = "https://accounts.fax.plus/token"
    authorize_url: HttpUrl = "https://accounts.fax.plus/login"
    api_base: HttpUrl = "https://restapi.fax.plus/v3"

    def config_warnings(self) -> list[tuple[str, str]]:
        """(key, advice) for what is valid but unlike Fax.Plus's documents (`rotator check`)."""
        if self.client_id.startswith(CLIENT_ID_PREFIX):
            return []
        return [
            (
                "client_id",
                f"{shown(self.client_id)} does not start with {CLIENT_ID_PREFIX}, as the client "
                "ids of Fax.Plus apps do; check that it is the app's client id (not its name), "
                "or the token endpoint will answer invalid_client",
            )
        ]


class FaxPlusPatSettings(AccountSettings):
    token: Ref
    expires_at: AwareTime
    scopes: list[str] = Field(default_factory=list)
    api_base: HttpUrl = "https://restapi.fax.plus/v3"


def api_headers(access_token: str, client_id: str | None) -> dict[str, str]:
    """What an API call to Fax.Plus carries (a PAT sends no client id)."""
    headers = {"Authorization": f"Bearer {access_token}"}
    if client_id is not None:
        headers["x-fax-clientid"] = client_id
    return headers


def refresh_expiry(
    *,
    enhanced: bool,
    authorized_at: datetime | None,
    sent: datetime | None,
    kept: datetime | None = None,
) -> datetime | None:
    """When the refresh token dies: the earlier of the 30-day rule and the vendor's word.

    ``enhanced``: the account has enhanced security controls, so the token dies
    ``authorized_at`` + 30 days (``kept``, the expiry already stored, when the
    authorization time is unknown). ``sent``: a ``refresh_token_expires_in`` that
    Fax.Plus sent, honoured whatever the setting: a vendor that says when the
    token dies knows better than a configuration key.
    """
    candidates = [sent]
    if enhanced:
        candidates.append(
            authorized_at + ENHANCED_SECURITY_LIFETIME if authorized_at is not None else kept
        )
    known = [moment for moment in candidates if moment is not None]
    return min(known) if known else None


def with_sent_expiry(tokens: TokenSet, sent: datetime | None) -> TokenSet:
    """Remember the vendor's own expiry in ``extra`` (later answers may not repeat it)."""
    return replace(tokens, extra={**tokens.extra, SENT_EXPIRY: format_time(sent) if sent else ""})


def _sent_before(state: AccountState) -> datetime | None:
    text = state.extra.get(SENT_EXPIRY, "")
    try:
        return parse_time(text) if text else None
    except ValueError:
        return None


def authorization_url(
    settings: FaxPlusSettings, state: str, redirect_uri: str | None = None
) -> str:
    """The page the user opens to grant access (``scope=all``, plus our ``state``)."""
    if (uri := redirect_uri or settings.redirect_uri) is None:
        raise PermanentProviderError("no_redirect_uri", "the account has no redirect_uri")
    return FaxPlusProvider("", settings).authorization_url(state, uri, None)


def _token_call(
    settings: FaxPlusSettings,
    client: httpx.Client,
    params: dict[str, str],
    now: datetime,
    previous: TokenSet | None,
    *,
    known: tuple[Secret | None, ...] = (),
) -> TokenSet:
    """One token request. ``known``: the account's secrets beyond those in ``params``."""
    client_secret = resolve(settings.client_secret)
    # Fax.Plus documents plain base64(client_id:client_secret), not RFC 6749's
    # form-encoded pair; they differ only for secrets with reserved characters.
    authorization = basic_auth_header(settings.client_id, client_secret, form_encode=False)
    secrets = secret_values(
        client_secret,
        authorization.removeprefix("Basic "),
        params.get("refresh_token"),
        params.get("code"),
        *known,
    )
    return token_request(
        client,
        url=settings.token_url,
        params=params,
        params_in="query",
        timeout=settings.timeout.total_seconds(),
        headers={"Authorization": authorization},
        requested_at=now,
        max_lifetime_s=settings.max_lifetime.total_seconds(),
        previous=previous,
        min_lifetime=settings.min_lifetime,
        secrets=secrets,
    )


def exchange_code(
    settings: FaxPlusSettings,
    client: httpx.Client,
    code: str,
    now: datetime,
    redirect_uri: str | None = None,
) -> TokenSet:
    """Trade an authorization code for tokens; the answer must carry a refresh token."""
    if (uri := redirect_uri or settings.redirect_uri) is None:
        raise PermanentProviderError("no_redirect_uri", "the account has no redirect_uri")
    params = {"grant_type": "authorization_code", "client_id": settings.client_id}
    tokens = _token_call(settings, client, {**params, "code": code, "redirect_uri": uri}, now, None)
    if tokens.refresh_token is None:
        raise BadResponse("the code exchange answered without a refresh_token")
    return tokens


def verify_token(
    client: httpx.Client,
    api_base: str,
    access_token: Secret,
    client_id: str | None,
    timeout: float,
) -> None:
    """``GET {api_base}/accounts/self``: raises a typed error unless the token works."""
    answer = send(
        client,
        "GET",
        api_base.rstrip("/") + "/accounts/self",
        headers={"Accept": "application/json", **api_headers(access_token.reveal(), client_id)},
        timeout=timeout,
    )
    if 200 <= answer.status < 300:
        return
    error = error_from_status(
        answer.status,
        answer.body,
        answer.content_type,
        answer.retry_after,
        secret_values(access_token),
    )
    if answer.status in (401, 403):
        raise InvalidGrant(
            error.code, f"the API refused the token: {error.description}", status=answer.status
        )
    raise error


class FaxPlusProvider(CodeFlow):
    name: ClassVar[str] = "faxplus"
    settings_model: ClassVar[type[AccountSettings]] = FaxPlusSettings

    def __init__(self, account: str, settings: FaxPlusSettings) -> None:
        self.account = account
        self.settings: FaxPlusSettings = settings

    @property
    def needs_seed(self) -> bool:
        return True

    def _authorize_params(self) -> dict[str, str]:
        return {"scope": "all"}

    def exchange_code(
        self,
        client: httpx.Client,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
        now: datetime,
    ) -> TokenSet:
        """The code's tokens; the refresh token's expiry by the 30-day rule from ``now``."""
        tokens = exchange_code(self.settings, client, code, now, redirect_uri)
        sent = tokens.refresh_expires_at
        enhanced = self.settings.enhanced_security
        expiry = refresh_expiry(enhanced=enhanced, authorized_at=now, sent=sent)
        return replace(with_sent_expiry(tokens, sent), refresh_expires_at=expiry)

    def refresh(self, state: AccountState, client: httpx.Client, now: datetime) -> TokenSet:
        if state.refresh_token is None:
            raise InvalidGrant(
                "no_refresh_token",
                f"no refresh token stored; run: rotator authorize {self.account} (or seed one: "
                f"rotator import {self.account})",
            )
        # previous=None: refresh_expires_at is then only what this answer carried
        tokens = _token_call(
            self.settings,
            client,
            {"grant_type": "refresh_token", "refresh_token": state.refresh_token.reveal()},
            now,
            None,
            known=(state.access_token,),
        )
        sent = tokens.refresh_expires_at
        if sent is None and tokens.refresh_token is None:
            # the same refresh token: what an earlier answer said about it still holds
            sent = _sent_before(state)
        tokens = keep_refresh_token(tokens, state)
        enhanced = self.settings.enhanced_security
        if enhanced and state.authorized_at is None:
            # Seeded by `rotator import`: we do not know when it was authorized. Keep an
            # expiry we already had; never invent a later one.
            _log.warning(
                "enhanced security account without an authorization time; the 30-day expiry "
                "cannot be computed",
                account=self.account,
                fix=f"run `rotator authorize {self.account}` to record it",
            )
        expiry = refresh_expiry(
            enhanced=enhanced,
            authorized_at=state.authorized_at,
            sent=sent,
            kept=state.refresh_expires_at,
        )
        return with_sent_expiry(replace(tokens, refresh_expires_at=expiry), sent)

    def consumer_view(self, tokens: TokenSet) -> ConsumerView:
        view: dict[str, ViewValue] = {**base_view(self.account, self.name, tokens)}
        view["client_id"] = self.settings.client_id
        # an object: the HTTP headers of an API call as they are (DESIGN.md)
        view["headers"] = api_headers(tokens.access_token.reveal(), self.settings.client_id)
        return view


class FaxPlusPatProvider:
    """A personal access token: published, checked, never refreshed.

    Scheduling: each "refresh" re-reads the secret reference (so a token replaced
    in the file or variable is picked up), checks it against ``/accounts/self``
    and hands out a TokenSet whose ``expires_at`` is at most ``max_lifetime``
    ahead: that is what the scheduler plans by, so the token is looked at again
    after ``refresh_share`` of ``max_lifetime`` (about 40 minutes by default).
    The consumer view carries the token's real expiry, so an unchanged token
    rewrites nothing. ``refresh_expires_at`` is the real expiry: the refresh
    token alerts (``refresh_token_warn``) fire before it.
    """

    name: ClassVar[str] = "faxplus-pat"
    settings_model: ClassVar[type[AccountSettings]] = FaxPlusPatSettings

    def __init__(self, account: str, settings: FaxPlusPatSettings) -> None:
        self.account = account
        self.settings = settings

    @property
    def needs_seed(self) -> bool:
        return False

    def refresh(self, state: AccountState, client: httpx.Client, now: datetime) -> TokenSet:
        s = self.settings
        if s.expires_at <= now:
            raise InvalidGrant(
                "token_expired",
                f"the personal access token expired at {format_time(s.expires_at)}; create a "
                f"new one in Fax.Plus, put it in {s.token} and update expires_at",
            )
        token = resolve(s.token)
        verify_token(client, s.api_base, token, None, s.timeout.total_seconds())
        return TokenSet(
            access_token=token,
            token_type="Bearer",
            issued_at=now,
            expires_at=min(s.expires_at, now + s.max_lifetime),
            refresh_token=None,
            refresh_expires_at=s.expires_at,
            scope=" ".join(s.scopes) or None,
            extra={"pat_expires_at": format_time(s.expires_at)},
        )

    def consumer_view(self, tokens: TokenSet) -> ConsumerView:
        view: dict[str, ViewValue] = {**base_view(self.account, self.name, tokens)}
        view["expires_at"] = format_time(self.settings.expires_at)
        view["headers"] = api_headers(tokens.access_token.reveal(), None)
        return view
