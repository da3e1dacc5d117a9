"""``rotator authorize``: the authorization-code bootstrap, for every provider that takes one.

Any account whose provider is :class:`~rotator.providers.base.Authorizable`
(``faxplus``, and ``oauth2`` with ``authorize_url``) can be authorized. The flow:

1. print the authorization URL, with a random ``state`` (and a PKCE S256
   challenge where the provider uses PKCE);
2. get the code back: listen on the loopback ``redirect_uri`` (or ``--listen``)
   and catch the browser's redirect (the listener, in callback.py, accepts only
   the request carrying that ``state``), or take ``--code`` pasted by the user
   (``--code -``: from standard input). Without either, the ``state`` (and the
   PKCE verifier) is kept in the account's state (``extra``) so that a later
   ``--code 'https://.../callback?code=...&state=...'`` can be checked against it;
3. check ``state``; exchange the code by the rotation's rules (rotation/authorization.py);
4. optionally check a Fax.Plus token with ``GET {api_base}/accounts/self``.

``--link`` prints a signed console link instead (``server.console``). The redirect
URI is ``redirect_uri``, else the console's. Nothing here prints a token.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from rotator.commands.callback import (
    AuthorizeError,
    Callback,
    CallbackListener,
    listen_address,
    parse_pasted_code,
    same_state,
    warn_if_exposed,
)
from rotator.commands.terminal import printable
from rotator.errors import ConfigError, LeaseHeld, StoreConflict
from rotator.tokens import format_time
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.config.models import Config
    from rotator.providers.base import Authorizable
    from rotator.rotation.authorization import Authorized

__all__ = [
    "AuthorizeError",
    "CallbackListener",
    "authorize",
    "parse_pasted_code",
]

#: extra keys of the account state that hold a pending authorization
PENDING_STATE = "authorize_state"
PENDING_SINCE = "authorize_started_at"
PENDING_VERIFIER = "authorize_verifier"
#: how long a printed authorization URL's state is accepted by a later --code
PENDING_TTL = timedelta(hours=1)
#: how often a wait for another worker's lease looks again
LEASE_POLL = 0.2


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- the command ----------------------------------------------------------------------------


def _provider(config: Config, account: str) -> tuple[Authorizable, str]:
    """The account's provider, if it can be authorized, and the redirect URI to use."""
    from rotator.providers.base import Authorizable
    from rotator.providers.registry import provider_class

    if account not in config.accounts:
        known = ", ".join(sorted(config.accounts)) or "none"
        raise ConfigError(f"no account {account!r} in {config.source} (accounts: {known})")
    settings = config.accounts[account]
    provider = provider_class(settings.provider)(account, settings)
    if not isinstance(provider, Authorizable):
        from rotator.alerts.fixes import grant_fix

        raise ConfigError(
            f"authorize is for providers that take an authorization code (faxplus, oauth2 "
            f"with authorize_url); this one is {settings.provider!r}: "
            f"{grant_fix(account, settings).action}",
            path=f"accounts.{account}.provider",
        )
    problem = provider.authorize_problem()
    if problem is not None:
        raise ConfigError(f"required by `rotator authorize`: {problem}", path=f"accounts.{account}")
    console = config.server.console
    redirect_uri = provider.redirect_uri or (console.callback_url if console else None)
    if redirect_uri is None:
        raise ConfigError(
            "required by `rotator authorize`: the redirect URI registered with the vendor's app "
            "(e.g. http://127.0.0.1:8765/callback), or server.console (its "
            "{public_url}/oauth/callback is then the redirect URI)",
            path=f"accounts.{account}.redirect_uri",
        )
    return provider, redirect_uri


def _vendor(config: Config, account: str) -> str:
    return {"faxplus": "Fax.Plus"}.get(config.accounts[account].provider, "the vendor")


def authorize(
    config: Config,
    account: str,
    *,
    code: str | None = None,
    listen: str | None = None,
    verify: bool = True,
    timeout: float = 300.0,
    lease_wait: float | None = None,
    out: TextIO | None = None,
    waiter: Waiter | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> int:
    """Run the bootstrap; returns the exit code. Raises ConfigError / RotatorError.

    The code is exchanged under the account's lease (like a rotation), so a daemon
    rotating at the same moment can never write its older grant over the new one;
    when another worker holds the lease, it waits up to ``lease_wait`` (default:
    the account's ``lease_ttl``) before the code is spent.
    """
    from rotator.config.models import state_store
    from rotator.providers.base import pkce_challenge
    from rotator.service.app import open_stores

    stdout = out or sys.stdout
    waiter = waiter or Waiter()
    provider, redirect_uri = _provider(config, account)
    settings = config.accounts[account]
    store = open_stores(config)[state_store(config, account)]
    path = settings.state_path(account)
    wait = settings.lease_ttl.total_seconds() if lease_wait is None else lease_wait
    vendor = _vendor(config, account)

    def say(line: str) -> None:
        print(line, file=stdout, flush=True)

    callback: Callback
    verifier: str | None = None
    if code is not None:
        callback = parse_pasted_code(code)
        pending = _read(store, account, path)[0]
        _check_pasted_state(callback, pending, clock())
        verifier = pending.extra.get(PENDING_VERIFIER) or None
    else:
        state_value = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48) if provider.supports_pkce else None
        challenge = pkce_challenge(verifier) if verifier else None
        url = provider.authorization_url(state_value, redirect_uri, challenge)
        address = listen_address(listen, redirect_uri)
        if address is None:
            kept = {PENDING_VERIFIER: verifier} if verifier else {}
            _when_free(
                store,
                account=account,
                path=path,
                clock=clock,
                wait=wait,
                waiter=waiter,
                change=lambda state, now: replace(
                    state,
                    provider=state.provider or settings.provider,
                    extra={
                        **{k: v for k, v in state.extra.items() if k != PENDING_VERIFIER},
                        PENDING_STATE: state_value,
                        PENDING_SINCE: format_time(now),
                        **kept,
                    },
                ),
            )
            say(f"Open this URL, sign in to {vendor} and allow access:\n\n  {url}\n")
            say(
                f"{vendor} then sends the browser to {redirect_uri}. Copy that whole address "
                f"and run:\n\n  rotator authorize {account} --code '<the address>'\n"
            )
            return 0
        if listen is not None:
            warn_if_exposed(*address)
        # the listener accepts only the redirect carrying state_value: nothing else ends the wait
        with CallbackListener(
            address[0], address[1], urlsplit(redirect_uri).path, state_value, account=account
        ) as listener:
            say(f"Open this URL, sign in to {vendor} and allow access:\n\n  {url}\n")
            say(f"Waiting for the redirect on {address[0]}:{address[1]} ...")
            callback = listener.wait(timeout)
    if callback.error:
        raise AuthorizeError(f"{vendor} did not grant access: {callback.error}")
    if not callback.code:
        raise AuthorizeError("no authorization code given")
    done = _exchange(
        config,
        account,
        callback.code,
        redirect_uri=redirect_uri,
        verifier=verifier,
        wait=wait,
        waiter=waiter,
    )
    return _report(config, account, done, verify=verify, say=say)


def _exchange(
    config: Config,
    account: str,
    code: str,
    *,
    redirect_uri: str,
    verifier: str | None,
    wait: float,
    waiter: Waiter,
) -> Authorized:
    """The code's grant, kept by the rotation's rules."""
    from rotator.commands.common import open_rotator
    from rotator.rotation.authorization import authorize_code

    rotator = open_rotator(config)
    try:
        return authorize_code(
            rotator,
            account,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=verifier,
            lease_wait=wait,
            waiter=waiter,
            on_reauthorized=_tell_consumers(config, account),
        )
    except LeaseHeld as exc:
        raise AuthorizeError(
            f"a worker ({exc.owner}) is rotating {account} right now; "
            "try again in a moment (nothing was spent)"
        ) from None
    finally:
        rotator.http.close()


def _tell_consumers(config: Config, account: str) -> Callable[[Authorized], None]:
    """``reauthorized`` to the account's ``notify:`` entries, before the command exits."""

    def tell(done: Authorized) -> None:
        settings = config.accounts[account]
        grant = done.state.refresh_token
        if not settings.notify or grant is None:
            return
        from rotator.config.models import state_store
        from rotator.notify import Notifications, StoreClaims, reauthorized
        from rotator.rotation.lease import default_owner
        from rotator.service.app import open_stores

        store = open_stores(config)[state_store(config, account)]
        Notifications(dict, claims=StoreClaims(lambda _: store), replica=default_owner()).deliver(
            reauthorized(done.state, settings, done.tokens.issued_at, grant.reveal()), settings
        )

    return tell


def _report(
    config: Config, account: str, done: Authorized, *, verify: bool, say: Callable[[str], None]
) -> int:
    from rotator.config.models import state_store

    settings = config.accounts[account]
    expiry = done.tokens.refresh_expires_at
    refresh_note = "it does not expire"
    if expiry is not None:
        enhanced = getattr(settings, "enhanced_security", False)
        why = "enhanced security" if enhanced else f"{_vendor(config, account)} says so"
        refresh_note = f"{why}: it expires {format_time(expiry)}; authorize again before then"
    where = f"{state_store(config, account)}:{settings.state_path(account)}"
    held = "" if done.landing.value == "landed" else " (held in the spool: the store is down)"
    say(
        f"{account}: authorized at {format_time(done.tokens.issued_at)}; refresh token stored "
        f"in {where}{held} ({refresh_note}); sinks published"
        + (f" ({done.sinks_failed} failed)" if done.sinks_failed else "")
    )
    api_base = getattr(settings, "api_base", None)
    if verify and settings.provider == "faxplus" and api_base:
        from rotator.errors import ProviderError
        from rotator.http import HttpClients
        from rotator.providers.faxplus import verify_token

        clients = HttpClients(max_connections=1)
        try:
            client = clients.get(verify=settings.tls_verify, ca_bundle=settings.ca_bundle)
            verify_token(
                client,
                api_base,
                done.tokens.access_token,
                getattr(settings, "client_id", None),
                settings.timeout.total_seconds(),
            )
        except ProviderError as exc:
            say(f"{account}: stored, but GET /accounts/self failed: {printable(str(exc))}")
            return 1
        finally:
            clients.close()
        say(f"{account}: verified: GET {api_base}/accounts/self answered OK")
    return 0 if done.landing.value == "landed" else 1


def _read(store: Any, account: str, path: str) -> tuple[Any, Any]:
    from rotator.state import AccountState

    record = store.read(path)
    if record is None:
        return AccountState(account), None
    return AccountState.from_record(account, record.strings()), record.version


def _check_pasted_state(callback: Callback, state: Any, now: datetime) -> None:
    if callback.state is None:
        print(
            "note: no state came with the code (a bare code, or Fax.Plus did not send the "
            "state back in the redirect), so it cannot be checked against the URL printed "
            "by `rotator authorize`; going on. Where the redirect address has a state, paste "
            "the whole address to have it checked",
            file=sys.stderr,
        )
        return
    pending = state.extra.get(PENDING_STATE)
    since = state.extra.get(PENDING_SINCE)
    if not pending:
        raise AuthorizeError(
            "the pasted address has a state, but no authorization was started for this account "
            "(run `rotator authorize ACCOUNT` without --code first)"
        )
    if not same_state(pending, callback.state):
        raise AuthorizeError(
            "the pasted address's state does not match the URL printed by the last "
            "`rotator authorize`; nothing was stored"
        )
    from rotator.tokens import parse_time

    if since and now - parse_time(since) > PENDING_TTL:
        raise AuthorizeError("that authorization URL is older than an hour; start again")


def _when_free(
    store: Any,
    *,
    account: str,
    path: str,
    clock: Callable[[], datetime],
    wait: float,
    waiter: Waiter,
    change: Callable[[Any, datetime], Any],
) -> None:
    """Write ``change(state)`` with compare-and-set once no other worker holds the lease."""
    deadline = time.monotonic() + wait
    while True:
        state, version = _read(store, account, path)
        now = clock()
        if state.lease_held_by_other("", now):
            if time.monotonic() >= deadline or not waiter.sleep(
                min(LEASE_POLL, max(0.0, deadline - time.monotonic()))
            ):
                raise AuthorizeError(
                    f"a worker ({state.lease_owner}) is rotating {account} right now; "
                    "try again in a moment (nothing was spent)"
                )
            continue
        try:
            store.write(path, change(state, now).to_record(), expected_version=version)
            return
        except StoreConflict:
            continue
