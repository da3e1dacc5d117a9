"""Who may look at the console's status page, and which forms are theirs.

With ``server.console.viewer_token`` configured, a viewer is a client that sends
it as ``Authorization: Bearer`` or a browser that entered it once into the login
form; without one, a loopback client (who can reach a loopback socket can read
the state store on this host anyway) whose request no proxy forwarded. The browser's cookie holds
``expiry.HMAC(key, expiry | sha256(token))``, never the token: a stolen cookie
dies with its expiry or when the token changes, and the token cannot be
recovered from it. It is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(no other site's page sends it) and ``Secure`` when ``public_url`` is https.

Every form carries a token bound to the viewer's credential (the session, the
bearer token's hash, or "loopback") with its own expiry, and a POST whose
``Origin`` or ``Sec-Fetch-Site`` says another site sent it is refused: a loopback
viewer has no cookie for SameSite to protect, so the form token is what stops a
hostile page in the same browser from pressing the button.

All values derive from the console's signing key under labels of their own, so
none of them is also a valid link signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from rotator.secrets import Secret

__all__ = ["COOKIE", "FORM_TTL", "SESSION_TTL", "Viewers"]

COOKIE = "rotator_console"
#: how long a browser stays signed in after entering the viewer token
SESSION_TTL = 12 * 3600
#: how long a rendered form's token is accepted (a page left open over lunch still works)
FORM_TTL = 4 * 3600


def _mac(key: bytes, *parts: str) -> str:
    digest = hmac.new(key, "|".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Viewers:
    """The page's credentials: sessions, bearer tokens, loopback, form tokens."""

    def __init__(
        self,
        key: bytes,
        token: Secret | None,
        public_url: str | None,
        clock: Callable[[], float],
    ) -> None:
        self._key = key
        self._token = token
        self._public_url = public_url.rstrip("/") if public_url else None
        self._secure = bool(public_url and public_url.lower().startswith("https:"))
        self._clock = clock

    @property
    def needs_token(self) -> bool:
        return self._token is not None

    def token_ok(self, given: str) -> bool:
        return self._token is not None and _same(given.strip(), self._token.reveal())

    def _token_hash(self) -> str:
        token = self._token.reveal() if self._token is not None else ""
        return hashlib.sha256(token.encode()).hexdigest()

    def _session(self, expiry: int) -> str:
        return f"{expiry}.{_mac(self._key, 'console-session', str(expiry), self._token_hash())}"

    def session_cookie(self) -> str:
        """The ``Set-Cookie`` value for a browser that just entered the token."""
        expiry = int(self._clock()) + SESSION_TTL
        return (
            f"{COOKIE}={self._session(expiry)}; Path=/; Max-Age={SESSION_TTL}; "
            "HttpOnly; SameSite=Strict" + ("; Secure" if self._secure else "")
        )

    def credential(self, headers: Mapping[str, str], peer: str) -> str | None:
        """What binds this viewer's forms, or None for no viewer (``headers`` lower-cased)."""
        if self._token is None:
            # a reverse proxy on this host makes every client loopback: a request it
            # forwarded (and says so) is not taken for a local one
            proxied = "forwarded" in headers or "x-forwarded-for" in headers
            return "loopback" if is_loopback_peer(peer) and not proxied else None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self.token_ok(auth[7:]):
            return "bearer:" + self._token_hash()
        session = _cookie(headers.get("cookie", ""), COOKIE)
        expiry, _, _ = session.partition(".")
        if (
            expiry.isdigit()
            and int(expiry) > self._clock()
            and _same(session, self._session(int(expiry)))
        ):
            return "session:" + session
        return None

    def form_token(self, credential: str) -> str:
        expiry = str(int(self._clock()) + FORM_TTL)
        return f"{expiry}.{_mac(self._key, 'console-form', expiry, credential)}"

    def form_token_ok(self, given: str, credential: str) -> bool:
        expiry, _, _ = given.partition(".")
        if not expiry.isdigit() or int(expiry) <= self._clock():
            return False
        return _same(given, f"{expiry}.{_mac(self._key, 'console-form', expiry, credential)}")

    def cross_site(self, headers: Mapping[str, str]) -> str:
        """Why a POST looks sent by another site's page, or "" (``headers`` lower-cased)."""
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "this form was sent from another site; open the console page itself"
        origin = headers.get("origin")
        if origin is None:
            return ""  # not a browser (curl), or an old one: the form token still binds it
        host = headers.get("host", "")
        allowed = {f"http://{host}", f"https://{host}"}
        if self._public_url:
            parts = urlsplit(self._public_url)
            allowed.add(f"{parts.scheme}://{parts.netloc}")
        if origin not in allowed:
            return (
                f"this form was sent from {origin}, not from the console "
                f"({self._public_url or 'the address the page was opened at'})"
            )
        return ""


def is_loopback_peer(peer: str) -> bool:
    """``peer`` is this machine, also as an IPv4-mapped IPv6 address (a dual-stack listener)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False  # no address at all: not known to be local
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""
