"""The OAuth2 emulator for tests: rotator's strict sandbox, with every token registered,
and an authorization server in front of it.

Every token it issues and every client secret it knows is registered with the
leak check, so a secret that reaches captured output fails the suite.

The authorization code grant (RFC 6749 4.1, RFC 7636 PKCE), strictly:

- ``GET /authorize`` checks ``response_type=code``, a known ``client_id`` and a
  ``redirect_uri`` (the registered one, when ``redirect_uris`` names one), and
  with ``require_pkce`` a ``code_challenge`` with ``code_challenge_method=S256``;
  it answers the Allow page (tests.fakes.consent); POSTing it redirects back
  with a single-use code bound to the client, the redirect URI and the challenge,
  or ``error=access_denied``;
- the token endpoint's ``grant_type=authorization_code`` needs that code, the same
  ``redirect_uri``, and the ``code_verifier`` whose S256 is the challenge (a
  missing or wrong verifier is ``invalid_grant``; so is one sent for a code that
  had no challenge).

Knobs for politeness (tests/proofs/test_politeness.py): ``calls`` records when
each token request arrived and which refresh token it spent; ``vendor_limit``
makes the emulator enforce a rate of its own, as a vendor does: a request over
it is answered ``429`` with ``Retry-After`` (and counted in ``over_limit``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from rotator.demo.sandbox import Grant, Sandbox
from tests.fakes.consent import consent_page
from tests.support import leakcheck

__all__ = ["Grant", "OAuth2Emulator", "emulator"]


@dataclass(frozen=True)
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str | None
    scope: str | None


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OAuth2Emulator(Sandbox):
    def __init__(self, *, require_pkce: bool = False, **kwargs: Any) -> None:
        # above rotator.tokens.MIN_LIFETIME unless a test asks for less (and sets
        # min_lifetime in its configuration)
        kwargs.setdefault("access_ttl", 300.0)
        super().__init__(on_issue=leakcheck.register, **kwargs)
        for secret in (*self.clients.values(), *self.users.values()):
            leakcheck.register(secret, "client secret")
        self.require_pkce = require_pkce
        self.redirect_uris: dict[str, str] = {}
        self.codes: dict[str, _Code] = {}
        #: every /authorize request's parameters (a test checks what rotator sent)
        self.authorize_requests: list[dict[str, str]] = []
        #: (time.monotonic() at arrival, the refresh token sent or "") per token request
        self.calls: list[tuple[float, str]] = []
        self.over_limit = 0
        self._limit: tuple[float, float, str] | None = None
        self._tat = 0.0

    def vendor_limit(self, per_second: float, burst: int, retry_after: str = "1") -> None:
        """Answer 429 + Retry-After to requests over ``per_second`` (``burst`` at once)."""
        with self.lock:
            self._limit = (per_second, burst, retry_after)

    @property
    def authorize_url(self) -> str:
        return self.base_url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.base_url + self.token_path

    # -- /authorize -----------------------------------------------------------------------

    def _authorize(self, handler: BaseHTTPRequestHandler, params: dict[str, str]) -> None:
        problem = self._authorize_problem(params)
        if problem:
            self._reply(handler, 400, problem.encode(), "text/plain")
            return
        if handler.command == "GET":
            with self.lock:
                self.authorize_requests.append(dict(params))
            fields = {k: v for k, v in params.items() if k != "decision"}
            self._reply(handler, 200, consent_page("/authorize", fields), "text/html")
            return
        back: dict[str, str] = {}
        if params.get("decision") == "allow":
            code = self._new("code")
            with self.lock:
                self.codes[code] = _Code(
                    params["client_id"],
                    params["redirect_uri"],
                    params.get("code_challenge"),
                    params.get("scope"),
                )
            back["code"] = code
        else:
            back["error"] = "access_denied"
        if "state" in params:
            back["state"] = params["state"]
        redirect = params["redirect_uri"]
        location = redirect + ("&" if "?" in redirect else "?") + urlencode(back)
        self._reply(handler, 302, b"", "text/plain", {"Location": location})

    def _authorize_problem(self, params: dict[str, str]) -> str:
        client_id = params.get("client_id", "")
        if params.get("response_type") != "code":
            return "response_type=code is required"
        if client_id not in self.clients:
            return "unknown client_id"
        redirect = params.get("redirect_uri", "")
        registered = self.redirect_uris.get(client_id)
        if not redirect or (registered is not None and redirect != registered):
            return "redirect_uri is missing or not the registered one"
        challenge = params.get("code_challenge")
        if challenge is not None and params.get("code_challenge_method") != "S256":
            return "code_challenge_method must be S256"
        if self.require_pkce and not challenge:
            return "PKCE is required: send code_challenge (S256)"
        return ""

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        if split.path == "/authorize":
            self._authorize(handler, dict(parse_qsl(split.query, keep_blank_values=True)))
            return
        super()._handle_get(handler)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if urlsplit(handler.path).path != "/authorize":
            super()._handle(handler)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        self._authorize(handler, dict(parse_qsl(raw.decode(), keep_blank_values=True)))

    # -- the token endpoint's authorization_code grant -------------------------------------

    def _handle_token(self, handler: BaseHTTPRequestHandler, raw: bytes, query_string: str) -> None:
        now = time.monotonic()
        params = dict(parse_qsl(raw.decode("utf-8", "replace")))
        params.update(parse_qsl(query_string))
        with self.lock:
            self.calls.append((now, params.get("refresh_token", "")))
            over = False
            if self._limit is not None:  # GCRA, as rotator's own gate (independent code)
                per_second, burst, retry_after = self._limit
                interval = 1 / per_second
                if now < self._tat - (burst - 1) * interval:
                    over = True
                    self.over_limit += 1
                else:
                    self._tat = max(self._tat, now) + interval
        if over:
            self._error(
                handler, 429, "slow_down", "rate limit", headers={"Retry-After": retry_after}
            )
            return
        if params.get("grant_type") != "authorization_code" or self.failures:
            super()._handle_token(handler, raw, query_string)
            return
        client_id = self._authenticate(handler, params)
        if client_id is None:
            self._error(handler, 401, "invalid_client", "client authentication failed")
            return
        with self.lock:
            self.token_calls += 1
            issued = self.codes.pop(params.get("code", ""), None)  # single use, whatever follows
        if issued is None or issued.client_id != client_id:
            self._error(handler, 400, "invalid_grant", "unknown or used authorization code")
        elif issued.redirect_uri != params.get("redirect_uri"):
            self._error(handler, 400, "invalid_grant", "redirect_uri does not match")
        elif not _verified(issued.challenge, params.get("code_verifier")):
            self._error(handler, 400, "invalid_grant", "PKCE verification failed")
        else:
            refresh = self.issue_grant(client_id)
            self._issue(handler, client_id, refresh, issued.scope)


def _verified(challenge: str | None, verifier: str | None) -> bool:
    if challenge is None:
        return verifier is None
    return verifier is not None and secrets.compare_digest(s256(verifier), challenge)


@contextmanager
def emulator(**kwargs: Any) -> Iterator[OAuth2Emulator]:
    server = OAuth2Emulator(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
