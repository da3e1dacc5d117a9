"""A BIFIT Kassa emulator: ``POST /cashdesk-api/v1/oauth/token``, form body only.

Strict where BIFIT documents it:

- parameters in an ``application/x-www-form-urlencoded`` body, never the query;
- ``client_id`` and ``client_secret`` in the body (``cashdesk-rest-client``);
- the password grant's ``password`` is base64 of SHA-256 of the UTF-8 password
  (standard padded base64; a test may make it URL-safe, ``"base64url"``, or
  URL-safe without padding, ``"base64url-unpadded"``: what a private client
  could have been set up with); the plain password, or another encoding, is
  ``Bad credentials``;
- ``client_id`` is the public ``cashdesk-rest-client`` unless a test sets a
  private one; with it, only its own ``client_secret`` is accepted;
- refresh tokens rotate; a spent or unknown one is refused the way Spring
  Security OAuth2 does (400 ``invalid_grant`` "Invalid refresh token: <value>"),
  an expired one with 401 ``invalid_token``;
- a user with ``second_factor`` set answers the password grant with that reply
  (BIFIT does not document two-factor accounts; tests pick the shape).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakes.vendorhttp import Reply, Request, VendorServer
from tests.support import leakcheck

__all__ = ["TOKEN_PATH", "BifitEmulator"]

TOKEN_PATH = "/cashdesk-api/v1/oauth/token"
PUBLIC_CLIENT = "cashdesk-rest-client"


@dataclass
class _Refresh:
    username: str
    expires: float


def _error(status: int, code: str, description: str) -> Reply:
    return Reply(status, {"error": code, "error_description": description})


class BifitEmulator(VendorServer):
    name = "bifit"

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        password_encoding: str = "base64",  # noqa: S107 - an encoding name
        client_secret: str = PUBLIC_CLIENT,
        client_id: str = PUBLIC_CLIENT,
        refresh_lifetime: float = 30 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.users = dict(users or {"79990001122": "Kassa-pa$$wörd+1"})
        self.password_encoding = password_encoding
        for password in self.users.values():
            leakcheck.register(password, "bifit password")
            leakcheck.register(self.hashed(password), "bifit password hash")
        if client_secret != PUBLIC_CLIENT:
            leakcheck.register(client_secret, "bifit client secret")
        self.client_secret = client_secret
        self.client_id = client_id
        self.refresh_lifetime = refresh_lifetime
        self.clock = clock
        self.second_factor: dict[str, Reply] = {}
        self.refresh_tokens: dict[str, _Refresh] = {}
        self.spent: set[str] = set()
        self.logins = 0

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def username(self) -> str:
        return next(iter(self.users))

    def hashed(self, password: str) -> str:
        digest = hashlib.sha256(password.encode("utf-8")).digest()
        if self.password_encoding == "base64url":
            return base64.urlsafe_b64encode(digest).decode()
        if self.password_encoding == "base64url-unpadded":
            return base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return base64.b64encode(digest).decode()

    def grant(self, username: str | None = None) -> str:
        """A refresh token as if the user had logged in."""
        token = self.issue("refresh")
        with self.lock:
            self.refresh_tokens[token] = _Refresh(
                username or self.username, self.clock() + self.refresh_lifetime
            )
        return token

    def expire_all(self) -> None:
        with self.lock:
            for entry in self.refresh_tokens.values():
                entry.expires = self.clock() - 1

    def route(self, request: Request) -> Reply:
        if request.path != TOKEN_PATH or request.method != "POST":
            return Reply(404, {"error": "not_found"})
        if request.query:
            return _error(400, "invalid_request", "parameters must be sent in the request body")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return _error(400, "invalid_request", "expected a form body")
        form = request.form_dict
        if len(form) != len(request.form):
            return _error(400, "invalid_request", "repeated parameter")
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret
        ):
            return _error(401, "invalid_client", "Bad client credentials")
        grant_type = form.get("grant_type")
        with self.lock:
            if grant_type == "password":
                return self._password(form)
            if grant_type == "refresh_token":
                return self._refresh(form)
        return _error(400, "unsupported_grant_type", f"Unsupported grant type: {grant_type}")

    def _password(self, form: dict[str, str]) -> Reply:
        if set(form) != {"grant_type", "username", "password", "client_id", "client_secret"}:
            return _error(400, "invalid_request", "unexpected parameters")
        username = form["username"]
        password = self.users.get(username)
        if password is None or form["password"] != self.hashed(password):
            return _error(400, "invalid_grant", "Bad credentials")
        if username in self.second_factor:
            return self.second_factor[username]
        self.logins += 1
        refresh = self.issue("refresh")
        self.refresh_tokens[refresh] = _Refresh(username, self.clock() + self.refresh_lifetime)
        return self._tokens(username, refresh)

    def _refresh(self, form: dict[str, str]) -> Reply:
        if set(form) != {"grant_type", "refresh_token", "client_id", "client_secret"}:
            return _error(400, "invalid_request", "unexpected parameters")
        token = form["refresh_token"]
        entry = self.refresh_tokens.get(token)
        if entry is None:
            return _error(400, "invalid_grant", f"Invalid refresh token: {token}")
        if entry.expires <= self.clock():
            del self.refresh_tokens[token]
            return _error(401, "invalid_token", f"Invalid refresh token (expired): {token}")
        del self.refresh_tokens[token]
        self.spent.add(token)
        refresh = self.issue("refresh")
        self.refresh_tokens[refresh] = _Refresh(
            entry.username, self.clock() + self.refresh_lifetime
        )
        return self._tokens(entry.username, refresh)

    def _tokens(self, username: str, refresh: str) -> Reply:
        return Reply(
            200,
            {
                "access_token": self.issue("access"),
                "expires_in": 43199,
                "refresh_token": refresh,
                "scope": "read write",
                "token_type": "bearer",
                "user_id": f"u{username[-4:]}",
            },
        )
