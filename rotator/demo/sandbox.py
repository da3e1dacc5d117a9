"""A strict local OAuth2 token server: the demo's sandbox and the tests' emulator.

Standard library only, served on loopback. It behaves like a strict provider:

- client authentication per RFC 6749 section 2.3.1: HTTP Basic with the id and
  secret form-urlencoded before base64 (a client that skips the encoding fails
  on a secret such as ``p+ss:w/rd%``), or ``client_id``/``client_secret`` in the
  body; both at once is refused;
- parameters in an ``application/x-www-form-urlencoded`` body (query only when
  ``allow_query`` is set);
- rotating refresh tokens: each refresh spends the refresh token, and presenting
  a spent one is treated as theft: the whole grant is revoked (``reuse_grace``
  models the grace period strict providers offer for the one window no client
  can close: the vendor rotated, but its answer never arrived; within it the
  last refresh token spent by a rotation stays valid);
- configurable lifetimes and injected failures;
- a vendor-like login page with an Allow button and the ``authorization_code``
  grant (rotator/demo/login.py) for the clients given ``redirects``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from rotator.demo.login import LOGIN_PATH, Authorizations
from rotator.demo.tables import Grant, Injected, SandboxServer

__all__ = ["Grant", "Injected", "Sandbox"]


class Sandbox:
    """An OAuth2 token endpoint on 127.0.0.1. Thread-safe; start() / stop()."""

    def __init__(
        self,
        *,
        clients: dict[str, str] | None = None,
        users: dict[str, str] | None = None,
        access_ttl: float = 20.0,
        refresh_ttl: float | None = None,
        rotate_refresh: bool = True,
        allow_query: bool = False,
        send_expires_in: bool = True,
        token_path: str = "/oauth/token",  # noqa: S107 - a URL path, not a password
        on_issue: Callable[[str, str], object] | None = None,
        delay: float = 0.0,
        reuse_grace: float = 0.0,
        answer_delay: float = 0.0,
        redirects: dict[str, set[str]] | None = None,
    ) -> None:
        self.clients = dict(clients or {})
        self.users = dict(users or {})
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.rotate_refresh = rotate_refresh
        self.allow_query = allow_query
        self.send_expires_in = send_expires_in
        self.token_path = token_path
        self.on_issue = on_issue
        self.delay = delay  # before handling: a slow vendor
        self.answer_delay = answer_delay  # after issuing: a slow answer (may be lost)
        self.reuse_grace = reuse_grace
        self.grace_reuses = 0
        self.grace_ages: list[float] = []  # how long after spending each grace reuse came
        self.lock = threading.Lock()
        self.grants: dict[str, Grant] = {}
        self._by_refresh: dict[str, Grant] = {}
        self._access: dict[str, tuple[float, str]] = {}  # token -> (expiry, client)
        self.failures: list[Injected] = []
        self.requests: list[dict[str, Any]] = []
        self.reuse_detected = 0
        self.token_calls = 0
        self.in_flight = 0  # token requests being handled (a killed client's still run)
        self.connections = 0  # open client connections (a dead client's close soon)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.authorizations = Authorizations(redirects or {}, self._new)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                sandbox._handle(self)

            def do_GET(self) -> None:
                sandbox._handle_get(self)

            def setup(self) -> None:
                with sandbox.lock:
                    sandbox.connections += 1
                super().setup()

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with sandbox.lock:
                        sandbox.connections -= 1

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = SandboxServer(("127.0.0.1", port), Handler)
        # A short poll interval: stop() waits for the loop to notice (0.5 s by default).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="sandbox", daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not running: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return self.base_url + self.token_path

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- test and demo controls -----------------------------------------------------------

    def _new(self, kind: str) -> str:
        value = f"{kind}-{secrets.token_urlsafe(18)}"
        if self.on_issue:
            self.on_issue(value, kind)
        return value

    def issue_grant(self, client_id: str) -> str:
        """Create a grant (as an authorization would) and return its refresh token."""
        with self.lock:
            refresh = self._new("refresh")
            grant = Grant(
                grant_id=secrets.token_hex(6), client_id=client_id, current_refresh=refresh
            )
            self.grants[grant.grant_id] = grant
            self._by_refresh[refresh] = grant
            return refresh

    def grant_for(self, refresh_token: str) -> Grant | None:
        with self.lock:
            return self._by_refresh.get(refresh_token)

    def access_valid(self, token: str) -> bool:
        with self.lock:
            entry = self._access.get(token)
            return entry is not None and entry[0] > time.time()

    def fail_next(
        self,
        count: int,
        status: int,
        body: dict[str, Any] | str | bytes = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        raw = raw.encode() if isinstance(raw, str) else raw
        with self.lock:
            self.failures.extend(
                Injected(status, raw, content_type, dict(headers or {})) for _ in range(count)
            )

    # -- the endpoint ---------------------------------------------------------------------

    def _reply(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _error(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        code: str,
        description: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps({"error": code, "error_description": description}).encode()
        self._reply(handler, status, body, headers=headers)

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        """``GET /userinfo`` with a Bearer token: 200 while the token is valid; the login page."""
        split = urlsplit(handler.path)
        if split.path == LOGIN_PATH:
            self._reply(handler, *self.authorizations.show(split.query))
            return
        auth = handler.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if urlsplit(handler.path).path == "/userinfo" and token and self.access_valid(token):
            self._reply(handler, 200, b'{"sub":"demo"}')
        else:
            self._error(handler, 401, "invalid_token", "missing, unknown or expired token")

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        if split.path == LOGIN_PATH:
            self._reply(handler, *self.authorizations.decide(raw))
            return
        if split.path != self.token_path:
            self._error(handler, 404, "not_found", "no such endpoint")
            return
        with self.lock:
            self.in_flight += 1
        try:
            self._handle_token(handler, raw, split.query)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _handle_token(self, handler: BaseHTTPRequestHandler, raw: bytes, query_string: str) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.token_calls += 1
            injected = self.failures.pop(0) if self.failures else None
        if injected is not None:
            self._reply(
                handler, injected.status, injected.body, injected.content_type, injected.headers
            )
            return
        ctype = handler.headers.get("Content-Type", "")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        if query and not self.allow_query:
            self._error(
                handler, 400, "invalid_request", "parameters must be sent in the request body"
            )
            return
        if raw and not ctype.startswith("application/x-www-form-urlencoded"):
            self._error(
                handler, 400, "invalid_request", "body must be application/x-www-form-urlencoded"
            )
            return
        params = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        params.update(query)
        self.requests.append({"params": sorted(params), "headers": dict(handler.headers)})
        client_id = self._authenticate(handler, params)
        if client_id is None:
            self._error(
                handler,
                401,
                "invalid_client",
                "client authentication failed",
                headers={"WWW-Authenticate": 'Basic realm="sandbox"'},
            )
            return
        grant_type = params.get("grant_type")
        if grant_type == "refresh_token":
            self._refresh(handler, client_id, params.get("refresh_token", ""))
        elif grant_type == "authorization_code":
            if refused := self.authorizations.redeem(client_id, params):
                self._error(handler, 400, "invalid_grant", refused)
            else:
                self._issue(handler, client_id, self.issue_grant(client_id), None)
        elif grant_type == "client_credentials":
            self._issue(handler, client_id, None, params.get("scope"))
        elif grant_type == "password":
            user, password = params.get("username", ""), params.get("password", "")
            if user not in self.users or not secrets.compare_digest(self.users[user], password):
                self._error(handler, 400, "invalid_grant", "bad username or password")
                return
            refresh = self.issue_grant(client_id)
            self._refresh(handler, client_id, refresh)
        else:
            self._error(
                handler,
                400,
                "unsupported_grant_type",
                f"grant_type {grant_type!r} is not supported",
            )

    def _authenticate(self, handler: BaseHTTPRequestHandler, params: dict[str, str]) -> str | None:
        auth = handler.headers.get("Authorization")
        in_body = "client_secret" in params
        if auth and in_body:
            return None  # RFC 6749 2.3: MUST NOT use more than one method
        if auth:
            if not auth.startswith("Basic "):
                return None
            try:
                decoded = base64.b64decode(auth[6:], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep:
                return None
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        elif in_body:
            client_id, secret = params.get("client_id", ""), params["client_secret"]
        else:
            client_id = params.get("client_id", "")
            return client_id if client_id in self.clients and not self.clients[client_id] else None
        expected = self.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected, secret):
            return None
        return client_id

    def _refresh(self, handler: BaseHTTPRequestHandler, client_id: str, refresh: str) -> None:
        with self.lock:
            grant = self._by_refresh.get(refresh)
            if grant is None or grant.client_id != client_id:
                error = "unknown refresh token"
            elif grant.revoked:
                error = "grant revoked"
            elif (
                refresh in grant.spent
                and refresh == grant.previous
                and time.time() - grant.previous_spent_at <= self.reuse_grace
            ):
                # Within the grace period the last token spent by a rotation stays
                # valid (as Okta's grace period does): each use rotates the grant
                # again, and the token whose answer was lost is spent.
                error = ""
                self.grace_reuses += 1
                self.grace_ages.append(time.time() - grant.previous_spent_at)
                grant.refreshes += 1
                grant.spent.add(grant.current_refresh)
                grant.current_refresh = self._new("refresh")
                self._by_refresh[grant.current_refresh] = grant
            elif refresh in grant.spent:
                grant.revoked = True
                self.reuse_detected += 1
                error = "refresh token reused: the whole grant is revoked"
            else:
                error = ""
                grant.refreshes += 1
                if self.rotate_refresh:
                    grant.spent.add(refresh)
                    grant.previous, grant.previous_spent_at = refresh, time.time()
                    grant.current_refresh = self._new("refresh")
                    self._by_refresh[grant.current_refresh] = grant
            # read under the lock: a racing refresh moves it
            issued = grant.current_refresh if grant is not None and not error else ""
        if error or not issued:
            self._error(handler, 400, "invalid_grant", error)
            return
        self._issue(handler, client_id, issued, None)

    def _issue(
        self,
        handler: BaseHTTPRequestHandler,
        client_id: str,
        refresh: str | None,
        scope: str | None,
    ) -> None:
        access = self._new("access")
        with self.lock:
            self._access[access] = (time.time() + self.access_ttl, client_id)
            if len(self._access) > 50_000:  # forget the long expired
                now = time.time()
                self._access = {k: v for k, v in self._access.items() if v[0] > now - 60}
        body: dict[str, Any] = {"access_token": access, "token_type": "bearer"}
        if self.send_expires_in:
            body["expires_in"] = self.access_ttl
        if refresh is not None:
            body["refresh_token"] = refresh
            if self.refresh_ttl is not None:
                body["refresh_token_expires_in"] = self.refresh_ttl
        if scope:
            body["scope"] = scope
        if self.answer_delay:
            time.sleep(self.answer_delay)
        self._reply(handler, 200, json.dumps(body).encode())
