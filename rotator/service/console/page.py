"""The console's read-only status page at ``/`` and its "Re-authorize" button.

Who may look: with ``server.console.viewer_token`` configured, a client that
sends it as ``Authorization: Bearer`` or a browser that entered it once into
the login form; without one, loopback clients only (anyone who can reach a
loopback socket can already read the state store on this host). The browser
gets a cookie holding ``expiry.HMAC(key, expiry | sha256(token))``, never the
token: a stolen cookie dies with its expiry or when the token changes, and the
token cannot be recovered from it. The cookie is ``HttpOnly`` (no script reads
it), ``SameSite=Strict`` (no other site's page sends it) and ``Secure`` when
``public_url`` is https.

Every form carries a token bound to the viewer's credential (the cookie, the
bearer token or "loopback") and its own expiry, and every POST whose
``Origin`` or ``Sec-Fetch-Site`` says another site sent it is refused: a
loopback viewer has no cookie for SameSite to protect, so the form token is
what stops a hostile page in the same browser from minting links.

Everything on the page is HTML-escaped (account names, vendor error text
come from configuration and vendors), the rows are the ones ``rotator status``
prints (already scrubbed of every secret the account knows), and the strict
Content-Security-Policy allows no script and no external asset at all.
``form-action`` is left out on purpose: browsers apply it to the redirects
after a form is sent, and the button's redirect ends at the vendor's site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog

from rotator.commands.callback import is_loopback
from rotator.commands.status import health
from rotator.commands.terminal import printable
from rotator.secrets import Secret

__all__ = ["COOKIE", "Answer", "StatusPage", "is_page_path"]

#: (HTTP status, headers, body) as the console dispatch answers
Answer = tuple[int, dict[str, str], bytes]
Rows = tuple[list[dict[str, Any]], list[str]]

COOKIE = "rotator_console"
#: how long a browser stays signed in after entering the viewer token
SESSION_TTL = 12 * 3600
#: how long a rendered form's token is accepted (a page left open over lunch still works)
FORM_TTL = 4 * 3600
#: the page reloads itself this often (seconds): a viewer watches an account recover
REFRESH_EVERY = 5
REAUTHORIZE_PATH = "/console/reauthorize"
_PATHS = ("/", REAUTHORIZE_PATH)

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}"
    ".FAILED{color:#b00;font-weight:bold}.OK{color:#070}.err{max-width:30em;"
    "overflow-wrap:anywhere}.note{color:#555}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_log = structlog.get_logger("rotator.console")


def is_page_path(path: str) -> bool:
    """True for the paths this page answers (the dispatch asks before anything else)."""
    return path in _PATHS


def _esc(value: object) -> str:
    # printable() first: a bidi override or a control in a vendor's error text must show
    # as its escape, as ``rotator status`` shows it, not reorder what the viewer reads
    return html.escape(printable(str(value)), quote=True)


def _mac(key: bytes, *parts: str) -> str:
    digest = hmac.new(key, "|".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class StatusPage:
    """The page's HTTP answers; :meth:`handle` is called by the console dispatch.

    ``rows`` returns the status rows and problems (:func:`rotator.commands.status.account_rows`),
    ``can_authorize`` says which accounts get a button, ``mint`` makes a signed one-time
    link for an account, ``key`` is the console's signing key (the page derives its own
    values from it under labels of its own).
    """

    def __init__(
        self,
        *,
        rows: Callable[[], Rows],
        can_authorize: Callable[[str], bool],
        mint: Callable[[str], str],
        key: bytes,
        viewer_token: Secret | None = None,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rows = rows
        self._can_authorize = can_authorize
        self._mint = mint
        self._key = key
        self._token = viewer_token
        self._public_url = public_url.rstrip("/") if public_url else None
        self._secure = bool(public_url and public_url.lower().startswith("https:"))
        self._clock = clock

    # -- the dispatch entry -----------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        peer: str,
    ) -> Answer | None:
        """The answer for a request to one of this page's paths, else None."""
        if not is_page_path(path):
            return None
        lowered = {k.lower(): v for k, v in headers.items()}
        method = method.upper()
        if method not in ("GET", "HEAD", "POST"):
            return self._page(405, "Method not allowed", "<p>Use GET or POST.</p>")
        if method == "POST":
            refusal = self._cross_site(lowered)
            if refusal:
                _log.warning("console request refused", path=path, reason=refusal, peer=peer)
                return self._page(403, "Refused", f"<p>{_esc(refusal)}</p>")
        form = dict(parse_qsl(body.decode("utf-8", "replace"))) if method == "POST" else {}
        if path == "/" and method == "POST" and "token" in form:
            return self._login(form["token"], peer)
        credential = self._credential(lowered, peer)
        if credential is None:
            return self._refuse_viewer(peer)
        if path == REAUTHORIZE_PATH:
            if method != "POST":
                return self._page(405, "Method not allowed", "<p>Use the page's button.</p>")
            return self._reauthorize(form, credential, peer)
        if method == "POST":
            return self._page(400, "Bad request", "<p>Nothing to do with that form.</p>")
        return self._status(credential)

    # -- who is looking ---------------------------------------------------------------------

    def _token_hash(self) -> str:
        token = self._token.reveal() if self._token is not None else ""
        return hashlib.sha256(token.encode()).hexdigest()

    def _session(self, expiry: int) -> str:
        return f"{expiry}.{_mac(self._key, 'console-session', str(expiry), self._token_hash())}"

    def _credential(self, headers: Mapping[str, str], peer: str) -> str | None:
        """What binds this viewer's forms: the session, the bearer token's hash, or "loopback"."""
        if self._token is None:
            return "loopback" if is_loopback(peer) else None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(
            auth[7:].strip().encode(), self._token.reveal().encode()
        ):
            return "bearer:" + self._token_hash()
        session = _cookie(headers.get("cookie", ""), COOKIE)
        expiry, _, _ = session.partition(".")
        if (
            expiry.isdigit()
            and int(expiry) > self._clock()
            and hmac.compare_digest(session.encode(), self._session(int(expiry)).encode())
        ):
            return "session:" + session
        return None

    def _cross_site(self, headers: Mapping[str, str]) -> str:
        """Why a POST looks sent by another site's page, or ""."""
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "this form was sent from another site; open the console page itself"
        origin = headers.get("origin")
        if origin is None:
            return ""  # not a browser (curl), or an old one: the form token still binds it
        allowed = {f"http://{headers.get('host', '')}", f"https://{headers.get('host', '')}"}
        if self._public_url:
            parts = urlsplit(self._public_url)
            allowed.add(f"{parts.scheme}://{parts.netloc}")
        if origin not in allowed:
            return (
                f"this form was sent from {origin}, not from the console "
                f"({self._public_url or 'the address the page was opened at'})"
            )
        return ""

    def _refuse_viewer(self, peer: str) -> Answer:
        if self._token is None:
            _log.warning("console refused a non-loopback viewer", peer=peer)
            return self._page(
                403,
                "Forbidden",
                "<p>The status page answers loopback clients only while no viewer token is "
                "configured. To open it from elsewhere, set "
                "<code>server.console.viewer_token</code> (a secret reference, e.g. "
                "<code>env:ROTATOR_CONSOLE_TOKEN</code>) and enter that token here.</p>",
            )
        return self._login_form(401, "")

    def _login(self, token: str, peer: str) -> Answer:
        if self._token is None:
            return self._page(400, "Bad request", "<p>No viewer token is configured.</p>")
        if not hmac.compare_digest(token.strip().encode(), self._token.reveal().encode()):
            _log.warning("console sign-in refused: wrong viewer token", peer=peer)
            return self._login_form(
                401, "That is not the console's viewer token (server.console.viewer_token)."
            )
        expiry = int(self._clock()) + SESSION_TTL
        cookie = (
            f"{COOKIE}={self._session(expiry)}; Path=/; Max-Age={SESSION_TTL}; "
            "HttpOnly; SameSite=Strict" + ("; Secure" if self._secure else "")
        )
        _log.info("console sign-in", peer=peer)
        return 303, {"Location": "/", "Set-Cookie": cookie, **_HEADERS}, b""

    # -- the forms' tokens ------------------------------------------------------------------

    def _form_token(self, credential: str) -> str:
        expiry = str(int(self._clock()) + FORM_TTL)
        return f"{expiry}.{_mac(self._key, 'console-form', expiry, credential)}"

    def _form_token_ok(self, given: str, credential: str) -> bool:
        expiry, _, _ = given.partition(".")
        if not expiry.isdigit() or int(expiry) <= self._clock():
            return False
        expected = f"{expiry}.{_mac(self._key, 'console-form', expiry, credential)}"
        return hmac.compare_digest(given.encode(), expected.encode())

    # -- the answers ------------------------------------------------------------------------

    def _reauthorize(self, form: Mapping[str, str], credential: str, peer: str) -> Answer:
        account = form.get("account", "")
        if not self._form_token_ok(form.get("csrf", ""), credential):
            _log.warning("console re-authorize refused: bad form token", peer=peer)
            return self._page(
                403,
                "Refused",
                "<p>This form is stale or was not made by this console. "
                '<a href="/">Reload the status page</a> and press the button again.</p>',
            )
        names = {row["account"] for row in self._rows()[0]}
        if account not in names or not self._can_authorize(account):
            return self._page(
                404,
                "No such account",
                f"<p>{_esc(account)!s} is not an account this console can re-authorize. "
                '<a href="/">Back to the status page</a>.</p>',
            )
        url = self._mint(account)
        _log.info("console link minted for a viewer", account=account, peer=peer)
        return 303, {"Location": url, **_HEADERS}, b""

    def _status(self, credential: str) -> Answer:
        rows, problems = self._rows()
        csrf = self._form_token(credential)
        lines = [
            "<table><tr><th>Account</th><th>Provider</th><th>State</th><th>Access expires</th>"
            "<th>Refresh expires</th><th>Next refresh</th><th>Last error</th><th></th></tr>"
        ]
        for row in rows:
            state = health(row)
            refresh = row["refresh_token_expires_at"] or (
                "never" if row["has_refresh_token"] else "-"
            )
            button = ""
            if self._can_authorize(row["account"]):
                button = (
                    f'<form method="post" action="{REAUTHORIZE_PATH}">'
                    f'<input type="hidden" name="account" value="{_esc(row["account"])}">'
                    f'<input type="hidden" name="csrf" value="{_esc(csrf)}">'
                    '<button type="submit">Re-authorize</button></form>'
                )
            cells = (
                _esc(row["account"]),
                _esc(row["provider"] or "-"),
                f'<span class="{_esc(state.split("(")[0].replace(" ", "-"))}">{_esc(state)}</span>',
                _esc(row["access_token_expires_at"] or "-"),
                _esc(refresh),
                _esc(row["next_refresh_at"] or "-"),
                f'<div class="err">{_esc(row["last_error"] or "")}</div>',
                button,
            )
            lines.append(
                f'<tr data-account="{_esc(row["account"])}">'
                + "".join(f"<td>{cell}</td>" for cell in cells)
                + "</tr>"
            )
        lines.append("</table>")
        if not rows:
            lines.append('<p class="note">No account is configured.</p>')
        for problem in problems:
            lines.append(f'<p class="FAILED">{_esc(problem)}</p>')
        lines.append(
            f'<p class="note">Read-only; reloads every {REFRESH_EVERY}s. "Re-authorize" opens the '
            "vendor's login with a link that works once.</p>"
        )
        return self._page(200, "rotator status", "".join(lines), refresh=True)

    def _login_form(self, status: int, error: str) -> Answer:
        note = f'<p class="FAILED">{_esc(error)}</p>' if error else ""
        return self._page(
            status,
            "rotator console: sign in",
            f"{note}<p>Enter the console's viewer token (server.console.viewer_token).</p>"
            '<form method="post" action="/"><input type="password" name="token" '
            'autocomplete="current-password" aria-label="viewer token" autofocus> '
            '<button type="submit">Sign in</button></form>',
        )

    def _page(self, status: int, title: str, content: str, *, refresh: bool = False) -> Answer:
        meta = f'<meta http-equiv="refresh" content="{REFRESH_EVERY}">' if refresh else ""
        text = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_esc(title)}</title>{meta}<style>{_STYLE}</style></head>"
            f"<body><h1>{_esc(title)}</h1>{content}</body></html>"
        )
        return (
            status,
            {"Content-Type": "text/html; charset=utf-8", **_HEADERS},
            text.encode("utf-8", "replace"),
        )


_HEADERS = {
    "Content-Security-Policy": _CSP,
    "Cache-Control": "no-store",
    # not no-referrer: with it Chromium sends "Origin: null" on the page's own forms
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""
