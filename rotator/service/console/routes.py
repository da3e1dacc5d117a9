"""The console's routes on ``server.listen``: ``/authorize/{account}`` and ``/oauth/callback``.

::

    GET /authorize/{account}?exp&nonce&sig   verify the signed link (links.py), start a
        flow in the state store (book.py): a fresh state, a PKCE verifier kept there;
        302 to the vendor's authorization page
    GET /oauth/callback?code&state           take the flow out of the book (once), spend
        the link, exchange the code under the account's lease like a rotation
        (rotation/authorization.py): state written first, spool, sinks, alerts resolve

Every refusal is a 4xx page that says what was wrong and what to do, and one log
line; none of them touches the account's state. No page, log line or generated
URL carries a token, a code, a verifier or a state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import structlog

from rotator.errors import LeaseHeld, ProviderError, RotatorError, printable
from rotator.providers.base import Authorizable
from rotator.service.console.answers import Answer, page, redirect
from rotator.service.console.book import FlowBook
from rotator.service.console.links import LinkRefused, LinkSigner
from rotator.service.console.page import StatusPage, is_page_path, status_page_for
from rotator.tokens import format_time

if TYPE_CHECKING:
    from pathlib import Path

    from rotator.config.models import ConsoleSettings
    from rotator.rotation.accounts import Account
    from rotator.rotation.authorization import Authorized
    from rotator.rotation.rotator import Rotator

__all__ = ["CALLBACK_PATH", "Console", "build_console", "can_authorize"]

_log = structlog.get_logger("rotator.console")
CALLBACK_PATH = "/oauth/callback"
_AUTHORIZE = "/authorize/"
#: callbacks exchanging a code at once (the health server has 4 threads in all)
EXCHANGES_AT_ONCE = 2


def _utcnow() -> datetime:
    return datetime.now(UTC)


def can_authorize(account: Account) -> bool:
    """The account's provider takes a code and its settings allow the flow."""
    provider = account.provider
    return isinstance(provider, Authorizable) and provider.authorize_problem() is None


class Console:
    """Signed links and the authorization-code flow, over the daemon's rotator."""

    def __init__(
        self,
        settings: ConsoleSettings,
        signer: LinkSigner,
        rotator: Rotator,
        *,
        clock: Callable[[], datetime] = _utcnow,
        on_reauthorized: Callable[[Authorized], None] | None = None,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.rotator = rotator
        self.clock = clock
        self.on_reauthorized = on_reauthorized
        self.book = FlowBook(lambda name: rotator.accounts[name].state_store)
        # The listener answers with a few threads that /healthz shares: callbacks
        # waiting on a slow vendor must never take them all (a failed probe is a restart).
        self._exchanging = threading.BoundedSemaphore(EXCHANGES_AT_ONCE)
        #: the read-only status page at ``/`` (page.py); set by :func:`build_console`
        self.status_page: StatusPage | None = None

    def link_for(self, account: str) -> str | None:
        """A fresh link for an account that can be authorized (alerts: one per sending)."""
        found = self.rotator.accounts.get(account)
        if found is None or not can_authorize(found):
            return None
        return self.signer.mint(account, self.clock())

    def handle(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        peer: str = "",
    ) -> Answer | None:
        """The answer for a console path; None for a path that is not the console's."""
        if self.status_page is not None and is_page_path(path):
            return self.status_page.handle(method, path, query, headers, body, peer=peer)
        if path == CALLBACK_PATH:
            route = self._callback
        elif path.startswith(_AUTHORIZE):
            route = self._authorize
        else:
            return None
        if method not in ("GET", "HEAD"):
            return page(405, "Method not allowed", ["Open the link in a browser."])
        try:
            return route(path, query)
        except LinkRefused as refused:
            account = (
                printable(path.removeprefix(_AUTHORIZE))[:100] if route == self._authorize else None
            )
            return self._refused(refused.status, refused.reason, path=path, account=account)
        except RotatorError as exc:  # the state store is down: nothing was started or spent
            _log.error("console: cannot answer", path=path, error=str(exc))
            return page(503, "Try again", ["The state store did not answer; try again shortly."])

    # -- the routes ----------------------------------------------------------------------

    def _authorize(self, path: str, query: str) -> Answer:
        name = path.removeprefix(_AUTHORIZE)
        account = self.rotator.accounts.get(name)
        if account is None:
            raise LinkRefused(404, "no such account here (it left the configuration?)")
        link = self.signer.verify(name, query, self.clock())
        provider = account.provider
        if not isinstance(provider, Authorizable) or provider.authorize_problem() is not None:
            raise LinkRefused(409, f"{name} cannot be re-authorized from a browser any more")
        redirect_uri = self.settings.callback_url
        state, challenge = self.book.start(
            link, redirect_uri=redirect_uri, pkce=provider.supports_pkce, now=self.clock()
        )
        _log.info("console: sign-in started", account=name, link_expires_at=format_time(link.until))
        return redirect(provider.authorization_url(state, redirect_uri, challenge))

    def _callback(self, path: str, query: str) -> Answer:
        params: dict[str, list[str]] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(key, []).append(value)
        if any(len(values) > 1 for values in params.values()):
            raise LinkRefused(400, "the callback repeats a parameter; open the link again")
        state = params.get("state", [""])[0]
        code = params.get("code", [""])[0]
        error = params.get("error", [""])[0]
        if not state:
            raise LinkRefused(400, "the callback has no state; open the link from the alert again")
        if not self._exchanging.acquire(blocking=False):
            # answered before the flow is touched: the same callback works on a reload
            raise LinkRefused(503, "other sign-ins are being finished; reload this page shortly")
        try:
            return self._finish(path, state, code, error)
        finally:
            self._exchanging.release()

    def _finish(self, path: str, state: str, code: str, error: str) -> Answer:
        flow = self.book.finish(state, self.clock(), spend=bool(code) and not error)
        name = flow.account
        if error:
            what = printable(error)[:60]
            return self._refused(
                403,
                f"the vendor did not grant access ({what}); open the link again to retry",
                path=path,
                account=name,
            )
        if not code:
            return self._refused(
                400, "the vendor sent no code back; open the link again", path=path, account=name
            )
        if name not in self.rotator.accounts:
            raise LinkRefused(404, "no such account here (it left the configuration?)")
        from rotator.rotation.authorization import authorize_code

        try:
            done = authorize_code(
                self.rotator,
                name,
                code=code,
                redirect_uri=flow.redirect_uri,
                code_verifier=flow.verifier,
                lease_wait=10.0,
                on_reauthorized=self.on_reauthorized,
            )
        except ProviderError as exc:
            return self._refused(
                400,
                f"the vendor refused the code ({exc.code}); nothing was changed. Open the link "
                "of a newer alert (or `rotator authorize --link`) to try again",
                path=path,
                account=name,
            )
        except LeaseHeld:
            return self._refused(
                503, "a rotation of this account is running; the code was not spent", path, name
            )
        except RotatorError as exc:
            _log.error("console: the grant was not stored", account=name, error=str(exc))
            return page(500, "Not stored", [f"{name}: {exc}"])
        return page(200, "Re-authorized", [self._done_text(done)])

    # -- small pieces ------------------------------------------------------------------------

    def _done_text(self, done: Authorized) -> str:
        expiry = done.tokens.refresh_expires_at
        enhanced = getattr(self.rotator.accounts[done.account].settings, "enhanced_security", False)
        if expiry is None:
            told = "the refresh token does not expire"
        else:
            told = f"the refresh token is valid until {expiry.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
            if enhanced:
                told += " (enhanced security)"
        held = (
            ""
            if done.landing.value == "landed"
            else " (kept in the spool until the store takes it)"
        )
        return f"{done.account} re-authorized; {told}{held}."

    def _refused(self, status: int, reason: str, path: str, account: str | None) -> Answer:
        _log.warning("console: refused", status=status, path=path, account=account, reason=reason)
        return page(status, "Refused", [reason])


def build_console(settings: ConsoleSettings, rotator: Rotator, key_dir: Path) -> Console:
    """The console of a daemon (its key beside the spool key unless ``signing_key``)."""
    console = Console(settings, LinkSigner.from_settings(settings, key_dir), rotator)
    console.status_page = status_page_for(console, key_dir)
    return console
