"""A Fax.Plus emulator: authorization page, token endpoint, ``/v3/accounts/self``.

Strict where Fax.Plus documents it:

- ``POST /token`` wants the parameters in the *query string*, an empty body,
  ``Content-Type: application/x-www-form-urlencoded`` and HTTP Basic
  ``base64(client_id:client_secret)``; anything else is refused;
- ``/login`` is the sign-in page with an Allow step (tests.fakes.consent); its
  codes are single use and bound to the redirect URI they were issued for;
- ``grant_type=authorization_code`` needs ``client_id`` (the Basic one), a
  fresh ``code`` issued by ``/login`` and the same ``redirect_uri``;
- refresh tokens on enhanced-security clients die 30 days after authorization
  (the emulator's clock is injectable), and refreshing does not extend them;
- ``rotate_refresh=True`` hands out a new refresh token per refresh and refuses
  the spent one;
- API calls need ``Authorization: Bearer`` and, for OAuth tokens, the
  ``x-fax-clientid`` header of the client the token belongs to; personal access
  tokens need no client id.

Undocumented behaviour a test can switch on: ``refresh_expires_in`` adds
``refresh_token_expires_in`` to token answers (the seconds the refresh token has
left, as RFC 6749 extensions do); ``echo_state=False`` drops ``state`` from the
redirect (the documents do not say Fax.Plus echoes it).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from tests.fakes.consent import consent_page
from tests.fakes.vendorhttp import Reply, Request, VendorServer
from tests.support import leakcheck

__all__ = ["FaxPlusEmulator"]

ENHANCED_LIFETIME = 30 * 86400
ACCESS_LIFETIME = 3600


@dataclass
class _Grant:
    client_id: str
    authorized_at: float
    enhanced: bool


def _error(status: int, code: str, description: str) -> Reply:
    return Reply(status, {"error": code, "error_description": description})


class FaxPlusEmulator(VendorServer):
    name = "faxplus"

    def __init__(
        self,
        *,
        clients: dict[str, str] | None = None,
        enhanced: bool = False,
        rotate_refresh: bool = False,
        clock: Callable[[], float] = time.time,
        refresh_expires_in: int | None = None,
        echo_state: bool = True,
    ) -> None:
        super().__init__()
        self.clients = dict(clients or {"APIK-emulated-client": "S3cretClientValue42"})
        for secret in self.clients.values():
            leakcheck.register(secret, "faxplus client secret")
        self.redirect_uris: dict[str, str] = {}
        self.enhanced = enhanced
        self.rotate_refresh = rotate_refresh
        self.clock = clock
        self.refresh_expires_in = refresh_expires_in
        self.echo_state = echo_state
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (client_id, redirect_uri)
        self.refresh_tokens: dict[str, _Grant] = {}
        self.spent: set[str] = set()
        self.access: dict[str, tuple[float, str | None]] = {}  # token -> (expiry, client)

    @property
    def client_id(self) -> str:
        return next(iter(self.clients))

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def authorize_url(self) -> str:
        return self.base_url + "/login"

    @property
    def api_base(self) -> str:
        return self.base_url + "/v3"

    # -- test controls ----------------------------------------------------------------------

    def grant(self, *, authorized_at: float | None = None, client_id: str | None = None) -> str:
        """A refresh token as if the user had authorized at ``authorized_at``."""
        token = self.issue("refresh")
        with self.lock:
            self.refresh_tokens[token] = _Grant(
                client_id or self.client_id,
                self.clock() if authorized_at is None else authorized_at,
                self.enhanced,
            )
        return token

    def personal_access_token(self, lifetime: float = 365 * 86400) -> str:
        token = self.issue("pat")
        with self.lock:
            self.access[token] = (self.clock() + lifetime, None)
        return token

    def revoke_all(self) -> None:
        with self.lock:
            self.refresh_tokens.clear()
            self.access.clear()

    # -- routes -----------------------------------------------------------------------------

    def route(self, request: Request) -> Reply:
        if request.method in ("GET", "POST") and request.path == "/login":
            return self._login(request)
        if request.method == "POST" and request.path == "/token":
            return self._token(request)
        if request.method == "GET" and request.path == "/v3/accounts/self":
            return self._self(request)
        return Reply(404, {"error": "not_found"})

    def _login(self, request: Request) -> Reply:
        """The documented login page: sign in, then an Allow step (a plain form).

        GET shows the form (the request's parameters as hidden fields); POSTing it
        with ``decision=allow`` redirects to ``redirect_uri`` with a single-use code
        bound to that URI, ``decision=deny`` with ``error=access_denied``.
        """
        q = request.query_dict if request.method == "GET" else request.form_dict
        client_id = q.get("client_id", "")
        if q.get("response_type") != "code" or q.get("scope") != "all":
            return Reply(400, b"response_type=code and scope=all are required", "text/plain")
        if client_id not in self.clients:
            return Reply(400, b"unknown client_id", "text/plain")
        registered = self.redirect_uris.get(client_id)
        redirect = q.get("redirect_uri", "")
        if registered is not None and redirect != registered:
            return Reply(400, b"redirect_uri does not match the registered one", "text/plain")
        if not redirect.startswith(("http://", "https://")):
            return Reply(400, b"redirect_uri is required", "text/plain")
        if request.method == "GET":
            fields = {k: v for k, v in q.items() if k != "decision"}
            return Reply(200, consent_page("/login", fields, "the app"), "text/html; charset=utf-8")
        back: dict[str, str] = {}
        if q.get("decision") == "allow":
            code = self.issue("code")
            with self.lock:
                self.codes[code] = (client_id, redirect)
            back["code"] = code
        else:
            back["error"] = "access_denied"
        if "state" in q and self.echo_state:
            back["state"] = q["state"]
        sep = "&" if "?" in redirect else "?"
        return Reply(302, b"", "text/plain", {"Location": f"{redirect}{sep}{urlencode(back)}"})

    def _client(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme != "Basic":
            return None
        try:
            client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return client_id if self.clients.get(client_id) == secret else None

    def _token(self, request: Request) -> Reply:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return _error(400, "invalid_request", "Content-Type must be form-urlencoded")
        if request.body:
            return _error(400, "invalid_request", "parameters belong in the query string")
        client_id = self._client(request)
        if client_id is None:
            return _error(401, "invalid_client", "client authentication failed")
        q = request.query_dict
        if len(q) != len(request.query):
            return _error(400, "invalid_request", "repeated parameter")
        grant_type = q.get("grant_type")
        now = self.clock()
        with self.lock:
            if grant_type == "authorization_code":
                if set(q) != {"grant_type", "client_id", "code", "redirect_uri"}:
                    return _error(400, "invalid_request", "expected client_id, code, redirect_uri")
                issued = self.codes.pop(q["code"], None)
                if q["client_id"] != client_id or issued is None or issued[0] != client_id:
                    return _error(400, "invalid_grant", "unknown or used authorization code")
                if issued[1] != q["redirect_uri"]:
                    return _error(400, "invalid_grant", "redirect_uri does not match")
                refresh = self.issue("refresh")
                self.refresh_tokens[refresh] = _Grant(client_id, now, self.enhanced)
                return self._tokens(client_id, refresh, now)
            if grant_type == "refresh_token":
                if set(q) != {"grant_type", "refresh_token"}:
                    return _error(400, "invalid_request", "expected refresh_token only")
                token = q["refresh_token"]
                grant = self.refresh_tokens.get(token)
                if grant is None or grant.client_id != client_id:
                    if token in self.spent:
                        self.refresh_tokens.clear()  # reuse of a spent token: revoke
                    return _error(400, "invalid_grant", "invalid refresh token")
                if grant.enhanced and now >= grant.authorized_at + ENHANCED_LIFETIME:
                    del self.refresh_tokens[token]
                    return _error(400, "invalid_grant", "refresh token expired; authorize again")
                if not self.rotate_refresh:
                    return self._tokens(client_id, None, now)
                del self.refresh_tokens[token]
                self.spent.add(token)
                new = self.issue("refresh")
                self.refresh_tokens[new] = grant
                return self._tokens(client_id, new, now)
        return _error(400, "unsupported_grant_type", f"grant_type {grant_type!r}")

    def _tokens(self, client_id: str, refresh: str | None, now: float) -> Reply:
        access = self.issue("access")
        self.access[access] = (now + ACCESS_LIFETIME, client_id)
        body: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ACCESS_LIFETIME,
            "scope": "all",
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        if self.refresh_expires_in is not None:
            body["refresh_token_expires_in"] = self.refresh_expires_in
        return Reply(200, body)

    def _self(self, request: Request) -> Reply:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self.lock:
            known = self.access.get(token) if scheme == "Bearer" else None
        if known is None or known[0] <= self.clock():
            return Reply(401, {"error": "invalid_token", "description": "token is not valid"})
        client = known[1]
        if client is not None and request.headers.get("x-fax-clientid") != client:
            return Reply(403, {"error": "invalid_client", "description": "x-fax-clientid missing"})
        return Reply(200, {"uid": "7a1e0c9f", "account_type": "business"})
