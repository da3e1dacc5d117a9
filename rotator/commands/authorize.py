"""``rotator authorize``: the Fax.Plus authorization-code bootstrap.

The flow (DESIGN.md, issue 4):

1. print the authorization URL, with a random ``state``;
2. get the code back: listen on the loopback ``redirect_uri`` (or ``--listen``)
   and catch the browser's redirect (the listener, in callback.py, accepts only
   the request carrying that ``state``), or take ``--code`` pasted by the user
   (``--code -``: from standard input). Without either, the ``state`` is kept
   in the account's state (``extra``) so that a later
   ``--code 'https://.../callback?code=...&state=...'`` can be checked against it;
3. check ``state`` (in constant time); exchange the code (query string, HTTP Basic);
4. write the refresh token and ``authorized_at`` to the state store with
   compare-and-set, clearing a ``failed`` flag;
5. optionally check the token with ``GET {api_base}/accounts/self``.

Nothing here prints a token.
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
from rotator.errors import ConfigError, RotatorError, StoreConflict
from rotator.tokens import format_time
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.config.models import Config
    from rotator.providers.faxplus import FaxPlusSettings
    from rotator.state import AccountState
    from rotator.tokens import TokenSet

__all__ = [
    "AuthorizeError",
    "CallbackListener",
    "authorize",
    "parse_pasted_code",
]

#: extra keys of the account state that hold a pending authorization
PENDING_STATE = "authorize_state"
PENDING_SINCE = "authorize_started_at"
#: how long a printed authorization URL's state is accepted by a later --code
PENDING_TTL = timedelta(hours=1)
#: how often a wait for another worker's lease looks again
LEASE_POLL = 0.2


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- the command ----------------------------------------------------------------------------


def _faxplus_settings(config: Config, account: str) -> FaxPlusSettings:
    from rotator.providers.faxplus import FaxPlusSettings

    if account not in config.accounts:
        known = ", ".join(sorted(config.accounts)) or "none"
        raise ConfigError(f"no account {account!r} in {config.source} (accounts: {known})")
    settings = config.accounts[account]
    if not isinstance(settings, FaxPlusSettings):
        raise ConfigError(
            f"authorize is for faxplus accounts; this one is {settings.provider!r} "
            f"(seed it with `rotator import {account}`)",
            path=f"accounts.{account}.provider",
        )
    if settings.redirect_uri is None:
        raise ConfigError(
            "required by `rotator authorize`: the redirect URI registered with the Fax.Plus app "
            "(e.g. http://127.0.0.1:8765/callback)",
            path=f"accounts.{account}.redirect_uri",
        )
    return settings


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
    from rotator.http import HttpClients
    from rotator.providers.faxplus import (
        authorization_url,
        exchange_code,
        refresh_expiry,
        with_sent_expiry,
    )
    from rotator.service.app import open_stores

    stdout = out or sys.stdout
    waiter = waiter or Waiter()
    settings = _faxplus_settings(config, account)
    redirect_uri = settings.redirect_uri or ""
    store_name = state_store(config, account)
    store = open_stores(config)[store_name]
    path = settings.state_path(account)

    wait = settings.lease_ttl.total_seconds() if lease_wait is None else lease_wait
    owner = f"authorize:{secrets.token_hex(4)}"

    def say(line: str) -> None:
        print(line, file=stdout, flush=True)

    callback: Callback
    if code is not None:
        callback = parse_pasted_code(code)
        _check_pasted_state(callback, _read(store, account, path)[0], clock())
    else:
        state_value = secrets.token_urlsafe(24)
        url = authorization_url(settings, state_value)
        address = listen_address(listen, redirect_uri)
        if address is None:
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
                        **state.extra,
                        PENDING_STATE: state_value,
                        PENDING_SINCE: format_time(now),
                    },
                ),
            )
            say(f"Open this URL, sign in to Fax.Plus and allow access:\n\n  {url}\n")
            say(
                f"Fax.Plus then sends the browser to {redirect_uri}. Copy that whole address "
                f"and run:\n\n  rotator authorize {account} --code '<the address>'\n"
            )
            return 0
        if listen is not None:
            warn_if_exposed(*address)
        # the listener accepts only the redirect carrying state_value: nothing else ends the wait
        with CallbackListener(
            address[0], address[1], urlsplit(redirect_uri).path, state_value, account=account
        ) as listener:
            say(f"Open this URL, sign in to Fax.Plus and allow access:\n\n  {url}\n")
            say(f"Waiting for the redirect on {address[0]}:{address[1]} ...")
            callback = listener.wait(timeout)
    if callback.error:
        raise AuthorizeError(f"Fax.Plus did not grant access: {callback.error}")
    if not callback.code:
        raise AuthorizeError("no authorization code given")

    _when_free(
        store,
        account=account,
        path=path,
        clock=clock,
        wait=wait,
        waiter=waiter,
        change=lambda state, now: replace(
            state, lease_owner=owner, lease_until=now + settings.lease_ttl
        ),
    )
    clients = HttpClients(max_connections=2)
    try:
        client = clients.get(verify=settings.tls_verify, ca_bundle=settings.ca_bundle)
        now = clock()
        try:
            tokens = exchange_code(settings, client, callback.code, now)
        except RotatorError:
            _release(store, account, path, owner)
            raise
        # the code exchange's own refresh_token_expires_in (if any) and the 30-day rule
        sent = tokens.refresh_expires_at
        expiry = refresh_expiry(enhanced=settings.enhanced_security, authorized_at=now, sent=sent)
        tokens = replace(with_sent_expiry(tokens, sent), refresh_expires_at=expiry)
        _store_grant(store, account=account, path=path, settings=settings, tokens=tokens, now=now)
        refresh_note = "it does not expire"
        if expiry is not None:
            why = "enhanced security" if settings.enhanced_security else "Fax.Plus says so"
            refresh_note = f"{why}: it expires {format_time(expiry)}; authorize again before then"
        say(
            f"{account}: authorized at {format_time(now)}; refresh token stored in "
            f"{store_name}:{path} ({refresh_note})"
        )
        if verify:
            from rotator.errors import ProviderError
            from rotator.providers.faxplus import verify_token

            try:
                verify_token(
                    client,
                    settings.api_base,
                    tokens.access_token,
                    settings.client_id,
                    settings.timeout.total_seconds(),
                )
            except ProviderError as exc:
                say(f"{account}: stored, but GET /accounts/self failed: {printable(str(exc))}")
                return 1
            say(f"{account}: verified: GET {settings.api_base}/accounts/self answered OK")
        say(
            f"{account}: the daemon publishes a fresh token at its next look "
            f"(or now: rotator refresh {account})"
        )
    finally:
        clients.close()
    return 0


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


def _release(store: Any, account: str, path: str, owner: str) -> None:
    """Best effort: give the lease back after a failed exchange (it expires anyway)."""
    from rotator.errors import StoreError

    try:
        state, version = _read(store, account, path)
        if state.lease_owner == owner:
            released = replace(state, lease_owner="", lease_until=None)
            store.write(path, released.to_record(), expected_version=version)
    except StoreError:
        pass


def _store_grant(
    store: Any,
    *,
    account: str,
    path: str,
    settings: FaxPlusSettings,
    tokens: TokenSet,
    now: datetime,
) -> None:
    for _ in range(5):
        state, version = _read(store, account, path)
        extra = {
            k: v
            for k, v in {**state.extra, **tokens.extra}.items()
            if k not in (PENDING_STATE, PENDING_SINCE)
        }
        granted = replace(
            state.with_tokens(tokens),
            provider=settings.provider,
            authorized_at=now,
            refresh_expires_at=tokens.refresh_expires_at,
            last_success_at=now,
            next_refresh_at=None,  # the daemon rotates and publishes at its next look
            failed=False,
            consecutive_failures=0,
            last_error="",
            last_error_code="",
            lease_owner="",
            lease_until=None,
            extra=extra,
        )
        try:
            store.write(path, granted.to_record(), expected_version=version)
            _tell_consumers(store, granted, settings, now)
            return
        except StoreConflict:
            continue
    # The code is spent; say so plainly rather than lose the grant silently.
    raise AuthorizeError(
        "the account's state kept changing while storing the new grant; nothing was stored "
        "and the code is spent: run `rotator authorize` again"
    )


def _tell_consumers(
    store: Any, granted: AccountState, settings: FaxPlusSettings, now: datetime
) -> None:
    """``reauthorized`` to the account's ``notify:`` entries, before the command exits."""
    if not settings.notify or granted.refresh_token is None:
        return
    from rotator.notify import Notifications, StoreClaims, reauthorized
    from rotator.rotation.lease import default_owner

    Notifications(dict, claims=StoreClaims(lambda _: store), replica=default_owner()).deliver(
        reauthorized(granted, settings, now, granted.refresh_token.reveal()), settings
    )
