"""A grant from an authorization code, kept by the same rules as a rotation.

``rotator authorize`` and the console's ``/oauth/callback`` both end here, so a
code is spent exactly like a refresh token:

::

    take the in-process lock; land a pending grant first (rule 1)
    reserve spool room for the new grant (no room: the code is not spent)
    take the lease (compare-and-set; wait a while for a worker that holds it)
    provider.exchange_code                                         [vendor]
        refused?  -> give the lease back, the state as it was
    keep the grant in the spool, then write the state FIRST (authorized_at now,
        failed flag cleared, next refresh planned)
    publish the consumer view to every sink; tell the observers (metrics,
        alerts: their conditions no longer hold, so they resolve)

The ``reauthorized`` event is a log line and the ``on_reauthorized`` hook (where
consumer notifications plug in).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from rotator.errors import (
    ConfigError,
    LeaseHeld,
    PermanentProviderError,
    ProviderError,
    SecretRefError,
    StoreError,
)
from rotator.providers.base import Authorizable
from rotator.rotation.grants import Landing, NoRoomForGrant, Pending
from rotator.rotation.lease import Busy, Lease, take_lease
from rotator.schedule import Outcome, planned_refresh
from rotator.tokens import format_time

if TYPE_CHECKING:
    from rotator.rotation.accounts import Account
    from rotator.rotation.rotator import Rotator
    from rotator.rotation.spool import Reservation
    from rotator.state import AccountState
    from rotator.tokens import TokenSet
    from rotator.waits import Waiter

__all__ = ["PENDING_KEYS", "Authorized", "NotAuthorizable", "authorizable", "authorize_code"]

_log = structlog.get_logger("rotator.rotation")

#: ``extra`` keys of a pending `rotator authorize` (printed URL, pasted code later)
PENDING_KEYS = ("authorize_state", "authorize_started_at", "authorize_verifier")
#: how often a wait for another worker's lease looks again
LEASE_POLL = 0.2


class NotAuthorizable(ConfigError):
    """The account's provider cannot take an authorization code (exit 2; says why)."""


@dataclass(frozen=True, slots=True)
class Authorized:
    """A code became the account's grant."""

    account: str
    state: AccountState
    tokens: TokenSet
    #: LANDED, or HELD (the store is down: kept in the spool, lands at the next run)
    landing: Landing
    sinks_failed: int = 0


def authorizable(account: Account) -> Authorizable:
    """The account's provider as :class:`Authorizable`; NotAuthorizable says why not."""
    provider = account.provider
    if not isinstance(provider, Authorizable):
        raise NotAuthorizable(
            f"{account.name} ({account.settings.provider}) cannot be authorized with a code"
        )
    problem = provider.authorize_problem()
    if problem is not None:
        raise NotAuthorizable(f"{account.name} cannot be authorized: {problem}")
    return provider


def authorize_code(
    rotator: Rotator,
    name: str,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None = None,
    lease_wait: float | None = None,
    waiter: Waiter | None = None,
    on_reauthorized: Callable[[Authorized], None] | None = None,
) -> Authorized:
    """Exchange ``code`` under the account's lease and keep the grant (rule 1).

    Raises ProviderError (the vendor refused the code; the state is as it was),
    LeaseHeld (a worker held the lease all of ``lease_wait``; nothing spent),
    NoRoomForGrant, StoreError.
    """
    account = rotator.accounts[name]
    provider = authorizable(account)
    started = time.monotonic()
    with rotator._lock(name):
        state, _ = account.read_state()
        pending = rotator.grants.pending(account, state)
        if pending is not None:
            rotator.grants.settle(account, pending)
        reservation = _reserve(rotator, account)
        try:
            lease = _lease(rotator, account, lease_wait, waiter or rotator.waiter)
            before = lease.state
            client = rotator.http.get(
                verify=account.settings.tls_verify, ca_bundle=account.settings.ca_bundle
            )
            now = rotator.clock()
            try:
                tokens = provider.exchange_code(client, code, redirect_uri, code_verifier, now)
            except SecretRefError as exc:
                lease.give_back(replace(before, last_attempt_at=state.last_attempt_at))
                raise PermanentProviderError("secret_ref", str(exc)) from None
            except ProviderError:
                lease.give_back(replace(before, last_attempt_at=state.last_attempt_at))
                raise
            granted = _granted(rotator, account, before, tokens)
            kept = Pending(granted, spent=before.refresh_token)
            rotator.grants.keep(account, kept, reservation)
            landing = rotator.grants.land(account, kept, lease.version)
        finally:
            rotator.grants.release(reservation)
        if landing is Landing.SET_ASIDE:
            raise StoreError(
                f"the new grant of {name} could not be saved and was set aside beside the spool "
                "(see the CRITICAL log line)"
            )
        run = (
            rotator._held(account, granted)
            if landing is Landing.HELD
            else rotator._published(
                account, granted, Outcome.SUCCESS, tokens=tokens, new_sinks=True
            )
        )
    # an account that had stopped is running again: "recovered" for the consumers
    run = replace(run, revived=state.failed and landing is Landing.LANDED)
    rotator._notify(rotator._result(account, run, time.monotonic() - started))
    done = Authorized(name, granted, tokens, landing, run.published.failed)
    _log.info(
        "reauthorized",
        account=name,
        provider=account.settings.provider,
        refresh_expires_at=format_time(tokens.refresh_expires_at)
        if tokens.refresh_expires_at
        else None,
        stored=landing.value,
        sinks_written=run.published.written,
        sinks_failed=run.published.failed,
    )
    if on_reauthorized is not None:
        try:
            on_reauthorized(done)
        except Exception as exc:  # a notification must never undo a stored grant
            _log.error("reauthorized hook failed", account=name, error=type(exc).__name__)
    return done


def _reserve(rotator: Rotator, account: Account) -> Reservation | None:
    """Spool room for the grant the code becomes (even when no grant was stored yet)."""
    if rotator.spool is None:
        return None
    try:
        return rotator.spool.reserve(account.spool_key)
    except OSError as exc:
        raise NoRoomForGrant(
            f"no room to keep the new grant of {account.name} in the spool directory "
            f"{rotator.spool.directory} ({exc.strerror or type(exc).__name__}); the code was "
            "not spent: free space there (or set server.spool_dir) and authorize again"
        ) from None


def _lease(rotator: Rotator, account: Account, wait: float | None, waiter: Waiter) -> Lease:
    """Take the account's lease, waiting up to ``wait`` (default lease_ttl) for a holder."""
    limit = account.settings.lease_ttl.total_seconds() if wait is None else wait
    deadline = time.monotonic() + limit
    while True:
        state, version = account.read_state()
        lease = take_lease(account, state, version, owner=rotator.owner, now=rotator.clock())
        if not isinstance(lease, Busy):
            return lease
        left = deadline - time.monotonic()
        if left <= 0 or not waiter.sleep(min(LEASE_POLL, left)):
            raise lease.error or LeaseHeld(account.name, state.lease_owner, 0.0)


def _granted(
    rotator: Rotator, account: Account, leased: AccountState, tokens: TokenSet
) -> AccountState:
    """The state the code makes: a fresh grant, no failure, the 30-day clock reset."""
    extra = {k: v for k, v in {**leased.extra, **tokens.extra}.items() if k not in PENDING_KEYS}
    return Lease.released(
        replace(
            leased.with_tokens(tokens),
            provider=account.settings.provider,
            authorized_at=tokens.issued_at,
            last_success_at=tokens.issued_at,
            failed=False,
            consecutive_failures=0,
            last_error="",
            last_error_code="",
            extra=extra,
            next_refresh_at=planned_refresh(
                tokens.issued_at, tokens.expires_at, account.policy, rotator.rand()
            ),
        )
    )
