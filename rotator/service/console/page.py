"""The console's read-only status page at ``/`` and its "Re-authorize" button.

Who may look, and which forms are the viewer's own, is viewers.py's business:
a viewer token (bearer header or a signed-in cookie) or, without one, loopback
only; a per-viewer form token and an Origin check on every POST.

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
import html
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

import structlog

from rotator.commands.rows import health
from rotator.commands.terminal import printable
from rotator.secrets import Secret
from rotator.service.console.guesses import Guesses
from rotator.service.console.viewers import COOKIE, SESSION_TTL, Viewers

if TYPE_CHECKING:
    from pathlib import Path

    from rotator.config.models import ConsoleSettings
    from rotator.rotation.rotator import Rotator

__all__ = [
    "COOKIE",
    "SESSION_TTL",
    "Answer",
    "ConsoleParts",
    "StatusPage",
    "is_page_path",
    "status_page_for",
]

#: (HTTP status, headers, body) as the console dispatch answers
Answer = tuple[int, dict[str, str], bytes]
Rows = tuple[list[dict[str, Any]], list[str]]

#: the page reloads itself this often (seconds): a viewer watches an account recover
REFRESH_EVERY = 5
#: the rows are read from the state store at most this often (seconds), whoever looks
ROWS_TTL = 2.0
REAUTHORIZE_PATH = "/console/reauthorize"
_PATHS = ("/", REAUTHORIZE_PATH)

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;"
    "text-align:left;vertical-align:top;white-space:nowrap}th{background:#f3f3f3}"
    ".FAILED{color:#b00;font-weight:bold}.OK{color:#070}.RETRYING{color:#a60}"
    ".err{white-space:normal;min-width:15em;max-width:30em;overflow-wrap:anywhere}"
    ".note{color:#555}"
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


class StatusPage:
    """The page's HTTP answers; :meth:`handle` is called by the console dispatch.

    ``rows`` returns the status rows and problems (:func:`rotator.commands.rows.account_rows`),
    ``can_authorize`` says which accounts get a button, ``mint`` makes a signed one-time
    link for an account, ``key`` is the console's signing key (the page derives its own
    values from it under labels of its own).
    """

    def __init__(
        self,
        *,
        rows: Callable[[], Rows],
        can_authorize: Callable[[str], bool],
        mint: Callable[[str], str | None],
        key: bytes,
        viewer_token: Secret | None = None,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rows = rows
        self._rows_lock = threading.Lock()
        self._cached: Rows | None = None
        self._cached_at = 0.0
        self._reading = False
        self._can_authorize = can_authorize
        self._mint = mint
        self._viewers = Viewers(key, viewer_token, public_url, clock)
        self._guesses = Guesses(clock)

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
            refusal = self._viewers.cross_site(lowered)
            if refusal:
                _log.warning("console request refused", path=path, reason=refusal, peer=peer)
                return self._page(403, "Refused", f"<p>{_esc(refusal)}</p>")
        form = dict(parse_qsl(body.decode("utf-8", "replace"))) if method == "POST" else {}
        guessing = (path == "/" and method == "POST" and "token" in form) or (
            self._viewers.needs_token and lowered.get("authorization", "")[:7].lower() == "bearer "
        )
        if guessing and (wait := self._guesses.wait(peer)):
            return self._too_many(wait, peer)
        if path == "/" and method == "POST" and "token" in form:
            return self._login(form["token"], peer)
        credential = self._viewers.credential(lowered, peer)
        if credential is None:
            if guessing:
                self._guesses.wrong(peer)
            return self._refuse_viewer(peer)
        if path == REAUTHORIZE_PATH:
            if method != "POST":
                return self._page(405, "Method not allowed", "<p>Use the page's button.</p>")
            return self._reauthorize(form, credential, peer)
        if method == "POST":
            return self._page(400, "Bad request", "<p>Nothing to do with that form.</p>")
        return self._status(credential)

    def _refuse_viewer(self, peer: str) -> Answer:
        if not self._viewers.needs_token:
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
        if not self._viewers.needs_token:
            return self._page(400, "Bad request", "<p>No viewer token is configured.</p>")
        if not self._viewers.token_ok(token):
            self._guesses.wrong(peer)
            _log.warning("console sign-in refused: wrong viewer token", peer=peer)
            return self._login_form(
                401, "That is not the console's viewer token (server.console.viewer_token)."
            )
        cookie = self._viewers.session_cookie()
        _log.info("console sign-in", peer=peer)
        return 303, {"Location": "/", "Set-Cookie": cookie, **_HEADERS}, b""

    def _too_many(self, wait: float, peer: str) -> Answer:
        seconds = max(1, math.ceil(wait))
        _log.warning("console refused: too many wrong viewer tokens", peer=peer, wait_s=seconds)
        status, headers, body = self._page(
            429,
            "Too many wrong tokens",
            f"<p>Too many wrong viewer tokens were tried from here. Try again in {seconds} s "
            "with the value of <code>server.console.viewer_token</code>.</p>",
        )
        return status, {**headers, "Retry-After": str(seconds)}, body

    def _current_rows(self) -> Rows:
        """The rows, read at most once per :data:`ROWS_TTL`; while one viewer's request
        reads them (a store may take its timeout), the others get the previous rows: a
        few open pages must not hold the listener's threads that answer ``/healthz``."""
        with self._rows_lock:
            now = time.monotonic()
            if self._cached is not None and (now - self._cached_at < ROWS_TTL or self._reading):
                return self._cached
            self._reading = True
        try:
            rows = self._rows()
        except Exception as exc:  # a store outage is shown, not a 500
            rows = ([], [f"the states could not be read: {type(exc).__name__}"])
        with self._rows_lock:
            self._cached, self._cached_at, self._reading = rows, now, False
        return rows

    # -- the answers ------------------------------------------------------------------------

    def _reauthorize(self, form: Mapping[str, str], credential: str, peer: str) -> Answer:
        account = form.get("account", "")
        if not self._viewers.form_token_ok(form.get("csrf", ""), credential):
            _log.warning("console re-authorize refused: bad form token", peer=peer)
            return self._page(
                403,
                "Refused",
                "<p>This form is stale or was not made by this console. "
                '<a href="/">Reload the status page</a> and press the button again.</p>',
            )
        if not self._can_authorize(account):  # also False for an unknown account
            return self._page(
                404,
                "No such account",
                f"<p>{_esc(account)!s} is not an account this console can re-authorize. "
                '<a href="/">Back to the status page</a>.</p>',
            )
        url = self._mint(account)
        if url is None:  # its settings changed since the page was shown
            return self._page(
                409, "Cannot re-authorize", f"<p>{_esc(account)} cannot be re-authorized now.</p>"
            )
        _log.info("console link minted for a viewer", account=account, peer=peer)
        return 303, {"Location": url, **_HEADERS}, b""

    def _status(self, credential: str) -> Answer:
        rows, problems = self._current_rows()
        csrf = self._viewers.form_token(credential)
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


class ConsoleParts(Protocol):
    """What the page needs of the console (routes.py's ``Console``, which imports this)."""

    settings: ConsoleSettings
    rotator: Rotator

    def link_for(self, account: str) -> str | None: ...


def status_page_for(console: ConsoleParts, key_dir: Path) -> StatusPage:
    """The status page of a daemon's console: status's rows over its rotator, links from it.

    The viewer token is resolved here, once: a changed token takes a restart (as the
    signing key does), and a token that cannot be resolved stops the start.
    """
    from rotator.commands.rows import account_rows
    from rotator.rotation.authorization import NotAuthorizable, authorizable
    from rotator.secrets import resolve
    from rotator.service.console.links import load_signing_key

    rotator, settings = console.rotator, console.settings

    def can_authorize(name: str) -> bool:
        account = rotator.accounts.get(name)
        if account is None:
            return False
        try:
            authorizable(account)
        except NotAuthorizable:
            return False
        return True

    token = settings.viewer_token
    return StatusPage(
        rows=lambda: account_rows(rotator),
        can_authorize=can_authorize,
        mint=console.link_for,
        key=load_signing_key(settings, key_dir),
        viewer_token=resolve(token) if token is not None else None,
        public_url=settings.public_url,
    )
