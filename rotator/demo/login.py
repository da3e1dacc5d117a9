"""The sandbox's vendor-like login page: the authorization-code half of a token server.

``rotator demo`` shows a newcomer the whole re-authorization loop without a
vendor account: the console link in the alert sends the browser here, the page
asks "Allow demo-app?" as a vendor's consent page does, and Allow sends the
browser back to the console's ``/oauth/callback`` with a code the sandbox's
token endpoint then exchanges. It keeps the rules a strict vendor keeps, so the
demo proves nothing a real vendor would refuse (RFC 6749 4.1, RFC 7636):

- a request names a known client and one of the redirect URIs registered for
  it (else the page refuses and redirects nowhere, as 4.1.2.1 requires);
- the form carries only a random request id, the request itself stays here
  (a page that trusted hidden fields would let them be rewritten);
- a code is single use, lives ``code_ttl`` seconds, is bound to its client
  and redirect URI, and to the PKCE S256 challenge when one was sent;
- Deny answers ``error=access_denied`` to the redirect URI.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LOGIN_PATH", "Authorizations", "Pending"]

LOGIN_PATH = "/login"
#: an answer in the argument order of the sandbox's reply: status, body, content type, headers
Page = tuple[int, bytes, str, dict[str, str]]
_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"


@dataclass(frozen=True, slots=True)
class Pending:
    """An authorization request (shown, awaiting a decision) or an issued code."""

    client_id: str
    redirect_uri: str
    state: str
    challenge: str
    expires: float


class Authorizations:
    """The login page and the codes it issues; thread-safe.

    ``redirects`` maps a client id to the redirect URIs registered for it; ``new``
    makes a random value of a kind (the sandbox's, so that tests register codes).
    """

    def __init__(
        self,
        redirects: dict[str, set[str]],
        new: Callable[[str], str],
        *,
        app_name: str = "rotator",
        code_ttl: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redirects = redirects
        self._new = new
        self.app_name = app_name
        self.code_ttl = code_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, Pending] = {}
        self._codes: dict[str, Pending] = {}
        self.allowed = 0
        self.denied = 0

    def show(self, query: str) -> Page:
        """``GET /login?response_type=code&client_id=..&redirect_uri=..&state=..``."""
        with self._lock:
            return self._show(query)

    def decide(self, body: bytes) -> Page:
        """``POST /login`` with ``request`` and ``decision``: back to the redirect URI."""
        with self._lock:
            return self._decide(body)

    def redeem(self, client_id: str, params: dict[str, str]) -> str:
        """Spend the code in a token request's ``params``; "" when valid, else why not."""
        with self._lock:
            return self._redeem(client_id, params)

    def _show(self, query: str) -> Page:
        params = dict(parse_qsl(query, keep_blank_values=True))
        client, uri = params.get("client_id", ""), params.get("redirect_uri", "")
        if uri not in self.redirects.get(client, set()):
            return _page(
                400,
                "Unknown application",
                "<p>This sign-in request names an unknown application or a redirect address "
                "not registered for it; nothing was sent anywhere.</p>",
            )
        if params.get("response_type") != "code":
            return _redirect(uri, {"error": "unsupported_response_type", **_state(params)})
        challenge = params.get("code_challenge", "")
        if challenge and params.get("code_challenge_method") != "S256":
            return _redirect(uri, {"error": "invalid_request", **_state(params)})
        request = secrets.token_urlsafe(16)
        self._requests[request] = Pending(
            client, uri, params.get("state", ""), challenge, self._clock() + 600
        )
        return _page(
            200,
            "Sandbox: sign in",
            f"<p>Signed in as <b>demo@sandbox</b>.</p><p><b>{html.escape(self.app_name)}</b> "
            f"(client <code>{html.escape(client)}</code>) asks to access your sandbox account "
            "and to keep that access (a refresh token).</p>"
            f'<form method="post" action="{LOGIN_PATH}">'
            f'<input type="hidden" name="request" value="{request}">'
            '<button type="submit" name="decision" value="allow" id="allow">Allow</button> '
            '<button type="submit" name="decision" value="deny" id="deny">Deny</button></form>',
        )

    def _decide(self, body: bytes) -> Page:
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        pending = self._requests.pop(form.get("request", ""), None)
        if pending is None or pending.expires < self._clock():
            return _page(400, "Expired", "<p>This sign-in request is over; start again.</p>")
        if form.get("decision") != "allow":
            self.denied += 1
            return _redirect(pending.redirect_uri, {"error": "access_denied", **_st(pending)})
        code = self._new("code")
        self._codes[code] = Pending(
            pending.client_id,
            pending.redirect_uri,
            pending.state,
            pending.challenge,
            self._clock() + self.code_ttl,
        )
        self.allowed += 1
        return _redirect(pending.redirect_uri, {"code": code, **_st(pending)})

    def _redeem(self, client_id: str, params: dict[str, str]) -> str:
        pending = self._codes.pop(params.get("code", ""), None)  # single use, valid or not
        if pending is None:
            return "unknown or already used authorization code"
        if pending.expires < self._clock():
            return "authorization code expired"
        if pending.client_id != client_id:
            return "authorization code issued to another client"
        if params.get("redirect_uri") != pending.redirect_uri:
            return "redirect_uri differs from the authorization request's"
        if pending.challenge:
            verifier = params.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
            expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            if not verifier or not secrets.compare_digest(expected, pending.challenge):
                return "code_verifier does not match the code_challenge"
        return ""


def _state(params: dict[str, str]) -> dict[str, str]:
    return {"state": params["state"]} if "state" in params else {}


def _st(pending: Pending) -> dict[str, str]:
    return {"state": pending.state} if pending.state else {}


def _redirect(uri: str, params: dict[str, str]) -> Page:
    location = uri + ("&" if "?" in uri else "?") + urlencode(params)
    return 302, b"", "text/plain", {"Location": location}  # the sandbox adds Cache-Control


def _page(status: int, title: str, content: str) -> Page:
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font-family:system-ui,sans-serif;margin:3em;max-width:40em}"
        "button{font-size:1.1em;padding:.3em 1.2em}</style></head>"
        f"<body><h1>{title}</h1>{content}</body></html>"
    )
    # a consent button must not be clickjacked: no frame may hold it
    headers = {"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"}
    return status, text.encode(), "text/html; charset=utf-8", headers
