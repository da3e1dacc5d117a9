"""The generic RFC 6749 client: refresh_token, client_credentials and password grants.

Every secret the account knows (the stored tokens, the client secret, the
password) goes to the parser as ``secrets``: a vendor that echoes one in its
error text must not have it published (rotator.tokens.oauth_error).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, model_validator

from rotator.config.models import AccountSettings, HttpUrl, Ref
from rotator.errors import BadResponse, InvalidGrant, secret_values
from rotator.providers.authcode import CodeFlow
from rotator.providers.base import base_view, send
from rotator.secrets import Secret, resolve
from rotator.tokens import MIN_LIFETIME, ConsumerView, TokenSet, parse_token_response

if TYPE_CHECKING:
    import httpx

    from rotator.state import AccountState

__all__ = [
    "OAuth2Provider",
    "OAuth2Settings",
    "basic_auth_header",
    "keep_refresh_token",
    "token_request",
]


class OAuth2Settings(AccountSettings):
    token_url: HttpUrl
    grant: Literal["refresh_token", "client_credentials", "password"] = "refresh_token"
    client_id: str | None = None
    client_secret: Ref | None = None
    client_auth: Literal["basic", "post", "none"] = "basic"
    params_in: Literal["body", "query"] = "body"
    scope: str | None = None
    username: str | None = None
    password: Ref | None = None
    extra_params: dict[str, str] = Field(default_factory=dict)
    #: the authorization-code bootstrap (`rotator authorize`, console links)
    authorize_url: HttpUrl | None = None
    redirect_uri: HttpUrl | None = None
    pkce: bool = True
    authorize_params: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_grant(self) -> OAuth2Settings:
        if self.grant == "password" and (self.username is None or self.password is None):
            raise ValueError("grant 'password' needs username and password")
        if self.client_auth in ("basic", "post") and (
            self.client_id is None or self.client_secret is None
        ):
            raise ValueError(
                f"client_auth {self.client_auth!r} needs client_id and client_secret "
                "(or set client_auth: none for a public client)"
            )
        if self.client_auth == "none" and self.client_secret is not None:
            raise ValueError("client_auth 'none' sends no client_secret; remove it or pick basic")
        if self.grant == "client_credentials" and self.client_auth == "none":
            raise ValueError("grant 'client_credentials' needs client_auth basic or post")
        reserved = {"grant_type", "refresh_token", "client_secret", "password"}
        clash = reserved & set(self.extra_params)
        if clash:
            raise ValueError(f"extra_params must not set {', '.join(sorted(clash))}")
        ours = {"response_type", "client_id", "redirect_uri", "state", "code_challenge"}
        clash = (ours | {"code_challenge_method"}) & set(self.authorize_params)
        if clash:
            raise ValueError(f"authorize_params must not set {', '.join(sorted(clash))}")
        if self.authorize_url is not None and self.grant != "refresh_token":
            raise ValueError("authorize_url is for grant refresh_token (the code yields one)")
        return self


def basic_auth_header(client_id: str, client_secret: Secret, *, form_encode: bool = True) -> str:
    """RFC 6749 section 2.3.1: form-urlencode id and secret, then base64 "id:secret".

    ``form_encode=False`` is for vendors that document plain ``base64(id:secret)``
    (Fax.Plus): the two differ only for ids and secrets with reserved characters.
    """
    if form_encode:
        pair = f"{quote(client_id, safe='')}:{quote(client_secret.reveal(), safe='')}"
    else:
        pair = f"{client_id}:{client_secret.reveal()}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def keep_refresh_token(tokens: TokenSet, state: AccountState) -> TokenSet:
    """An answer without a refresh token keeps the stored one.

    ``TokenSet.with_previous`` does this when the state holds a whole token set;
    right after ``rotator import`` it holds only a refresh token, which must not
    be dropped either.
    """
    if tokens.refresh_token is not None or state.refresh_token is None:
        return tokens
    from dataclasses import replace

    return replace(
        tokens,
        refresh_token=state.refresh_token,
        refresh_expires_at=tokens.refresh_expires_at or state.refresh_expires_at,
    )


def token_request(
    client: httpx.Client,
    *,
    url: str,
    params: dict[str, str],
    params_in: str,
    timeout: float,
    headers: dict[str, str] | None = None,
    requested_at: datetime,
    max_lifetime_s: float,
    previous: TokenSet | None,
    min_lifetime: timedelta = MIN_LIFETIME,
    secrets: Iterable[str] = (),
) -> TokenSet:
    """POST one token request and parse the answer strictly.

    ``secrets``: every secret value the account knows, scrubbed from vendor text.
    """
    all_headers = {"Accept": "application/json", **(headers or {})}
    if params_in == "query":
        all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        answer = send(client, "POST", url, params=params, headers=all_headers, timeout=timeout)
    else:
        answer = send(client, "POST", url, data=params, headers=all_headers, timeout=timeout)
    return parse_token_response(
        answer.body,
        status=answer.status,
        content_type=answer.content_type,
        requested_at=requested_at,
        max_lifetime=timedelta(seconds=max_lifetime_s),
        previous=previous,
        retry_after=answer.retry_after,
        min_lifetime=min_lifetime,
        secrets=secrets,
    )


class OAuth2Provider(CodeFlow):
    name: ClassVar[str] = "oauth2"
    settings_model: ClassVar[type[AccountSettings]] = OAuth2Settings

    def __init__(self, account: str, settings: OAuth2Settings) -> None:
        self.account = account
        self.settings: OAuth2Settings = settings

    @property
    def needs_seed(self) -> bool:
        return self.settings.grant == "refresh_token"

    def _pkce(self) -> bool:
        return self.settings.pkce

    def _authorize_params(self) -> dict[str, str]:
        scope = {"scope": self.settings.scope} if self.settings.scope else {}
        return {**scope, **self.settings.authorize_params}

    def authorize_problem(self) -> str | None:
        if self.settings.grant != "refresh_token":
            return f"grant {self.settings.grant!r} needs no authorization"
        if self.settings.client_id is None:
            return f"accounts.{self.account}.client_id is not set"
        if self.settings.authorize_url is None:
            return f"accounts.{self.account}.authorize_url is not set"
        return None

    def exchange_code(
        self,
        client: httpx.Client,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
        now: datetime,
    ) -> TokenSet:
        """RFC 6749 4.1.3 (and RFC 7636 4.5): the code, the redirect URI, the verifier."""
        params = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            params["code_verifier"] = code_verifier
        tokens = self._token_call(client, params, now, None, known=[code, code_verifier])
        if tokens.refresh_token is None:
            raise BadResponse("the code exchange answered without a refresh_token")
        return tokens

    def refresh(self, state: AccountState, client: httpx.Client, now: datetime) -> TokenSet:
        s = self.settings
        previous = state.tokenset()
        params: dict[str, str] = dict(s.extra_params)
        known: list[Secret | str | None] = [state.refresh_token, state.access_token]
        if s.grant == "refresh_token":
            if state.refresh_token is None:
                raise InvalidGrant(
                    "no_refresh_token",
                    f"no refresh token stored; seed one with: rotator import {self.account}",
                )
            params["grant_type"] = "refresh_token"
            params["refresh_token"] = state.refresh_token.reveal()
        elif s.grant == "password" and s.username is not None and s.password is not None:
            params["grant_type"] = "password"
            params["username"] = s.username
            password = resolve(s.password)
            known.append(password)
            params["password"] = password.reveal()
        else:
            params["grant_type"] = "client_credentials"
        if s.scope:
            params["scope"] = s.scope
        tokens = self._token_call(client, params, now, previous, known=known)
        return keep_refresh_token(tokens, state) if s.grant == "refresh_token" else tokens

    def _token_call(
        self,
        client: httpx.Client,
        params: dict[str, str],
        now: datetime,
        previous: TokenSet | None,
        *,
        known: list[Secret | str | None],
    ) -> TokenSet:
        """One token request with the account's client authentication."""
        s = self.settings
        params = {**s.extra_params, **params}
        headers: dict[str, str] = {}
        client_secret = resolve(s.client_secret) if s.client_secret is not None else None
        known = [*known, client_secret]
        # The model validator guarantees id and secret for basic and post.
        if s.client_auth == "basic" and s.client_id and client_secret:
            headers["Authorization"] = basic_auth_header(s.client_id, client_secret)
            known.append(headers["Authorization"].removeprefix("Basic "))
        elif s.client_auth == "post" and s.client_id and client_secret:
            params["client_id"] = s.client_id
            params["client_secret"] = client_secret.reveal()
        elif s.client_id:
            params["client_id"] = s.client_id
        return token_request(
            client,
            url=s.token_url,
            params=params,
            params_in=s.params_in,
            timeout=s.timeout.total_seconds(),
            headers=headers,
            requested_at=now,
            max_lifetime_s=s.max_lifetime.total_seconds(),
            previous=previous,
            min_lifetime=s.min_lifetime,
            secrets=secret_values(*known),
        )

    def consumer_view(self, tokens: TokenSet) -> ConsumerView:
        return base_view(self.account, self.name, tokens)
