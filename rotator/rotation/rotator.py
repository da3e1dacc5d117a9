"""One rotation of one account, start to finish.

::

    take the in-process lock, read the state                       [state store]
    a rotated grant not yet in the store?  -> land it first (rule 1)
    not due and not forced?  -> make sure the sinks hold the state's token, done
    reserve spool room for the new grant (no room: the vendor is not asked)
    take the lease (compare-and-set on the version read)           [state store]
        held by another worker?  -> busy, look again when it ends
    provider.refresh(state)                                         [vendor]
        failed?  -> adopt another worker's rotation, or record the failure (ends the lease)
    keep the answer in the reserved spool room, then write the new state FIRST
        (ends the lease; never dropped: retried, held, or set aside for a human)
    publish the consumer view to every sink (unchanged -> no write)
    decide the next run (schedule.next_run); tell the observers (metrics, alerts,
        consumer notifications: a run only reports what it did, rotator.notify delivers)

Each step lives in its own module: the lease (lease.py), the grant keeper that
owns rule 1 (grants.py), publishing (publish.py), failures (failure.py). This
module tells the story in :meth:`Rotator.rotate` and :meth:`Rotator._run`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import structlog

from rotator.backends.base import Version
from rotator.errors import (
    InvalidGrant,
    PermanentProviderError,
    ProviderError,
    SecretRefError,
    StoreError,
    StoreUnavailable,
)
from rotator.http import HttpClients
from rotator.locks import NamedLocks
from rotator.rotation.accounts import Account
from rotator.rotation.failure import moved_on, record_failure
from rotator.rotation.grants import GrantKeeper, Landing, NoRoomForGrant, Pending
from rotator.rotation.lease import Busy, Lease, default_owner, take_lease
from rotator.rotation.publish import Publisher, publish
from rotator.rotation.result import Observer, RotationResult, Run
from rotator.rotation.spool import Reservation, Spool
from rotator.schedule import Outcome, RunFacts, is_due, next_run, planned_refresh
from rotator.state import AccountState
from rotator.tokens import TokenSet, format_time
from rotator.waits import Waiter

__all__ = [
    "Observer",
    "Outcome",
    "RotationResult",
    "Rotator",
    "publish",
    "utc_now",
]

_log = structlog.get_logger("rotator.rotation")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Rotator:
    """Rotates accounts. Thread-safe: one in-process lock per account."""

    #: every account by name (the daemon's builds each one at its first use)
    accounts: Mapping[str, Account]
    http: HttpClients
    owner: str = field(default_factory=default_owner)
    clock: Callable[[], datetime] = utc_now
    #: the jitter's draws, from a generator of the rotator's own (worker threads that
    #: drew from the process-wide one changed it under other code's feet)
    rand: Callable[[], float] = field(default_factory=lambda: random.Random().random)  # noqa: S311
    observers: list[Observer] = field(default_factory=list)
    #: the write-ahead spool for rotated grants (None: memory only, for tests)
    spool: Spool | None = None
    #: bounded retries of a state write that must land (seconds between tries)
    state_write_delays: tuple[float, ...] = (0.2, 0.5, 1, 2, 4, 8)
    #: every wait of a rotation (the state write retries): the daemon's stop ends it
    waiter: Waiter = field(default_factory=Waiter)
    #: lease every grant, not only one with a refresh token (set by partitioned replicas)
    lease_every_grant: bool = False
    grants: GrantKeeper = field(init=False, repr=False)
    publisher: Publisher = field(default_factory=Publisher, init=False, repr=False)
    #: one lock per account, alive only while a run holds or waits for it
    _locks: NamedLocks = field(default_factory=NamedLocks, init=False, repr=False)

    def __post_init__(self) -> None:
        self.grants = GrantKeeper(self.spool, self.waiter, self.state_write_delays, self.owner)

    def _lock(self, name: str) -> AbstractContextManager[None]:
        return self._locks(name)

    def read_state(self, account: Account) -> tuple[AccountState, Version | None]:
        return account.read_state()

    def replay_spool(self) -> int:
        """Land every spooled grant before anything else runs; returns how many."""
        return self.grants.replay(self.accounts, self._lock)

    # -- the story ------------------------------------------------------------------

    def rotate(
        self, name: str, *, force: bool = False, retry_failed: bool = False
    ) -> RotationResult:
        """Run the account's job: rotate when due (or forced), else keep sinks in step.

        ``retry_failed`` gives a permanently failed account one more attempt (a
        reload); ``force`` refreshes even when not due (``rotator refresh``).
        """
        account = self.accounts[name]
        started = time.monotonic()
        with self._lock(name):
            try:
                run = self._run(account, force=force, retry_failed=retry_failed)
            except StoreError as exc:
                _log.warning(
                    "state store failed", account=name, error=str(exc), kind=type(exc).__name__
                )
                run = Run(Outcome.TRANSIENT, error=exc)
        result = self._result(account, run, time.monotonic() - started)
        self._notify(result)
        return result

    def _run(self, account: Account, *, force: bool, retry_failed: bool) -> Run:
        state, version = account.read_state()
        pending = self.grants.pending(account, state)
        if pending is not None:
            landed = self._land_pending(account, pending)
            if not (force and landed.outcome.ok):
                return landed
            # `rotator refresh` asked for a rotation: the pending grant has landed
            # (ours, or another process's in flight), so go on from the stored state.
            state, version = account.read_state()
        attempt = force or (retry_failed and state.failed)
        if state.failed and not attempt:
            # Stopped until a human acts; looked at again now and then, so a grant
            # seeded by `rotator import`/`authorize` or a manual refresh resumes.
            return Run(Outcome.FAILED, state)
        if not attempt and not is_due(
            self.clock(),
            has_token=state.access_token is not None,
            next_refresh_at=state.next_refresh_at,
        ):
            return self._published(account, state, Outcome.NOT_DUE)
        try:
            reservation = self.grants.room_for(account, state)
        except NoRoomForGrant as exc:
            _log.error("no room to keep a new grant; the vendor is not asked", error=str(exc))
            return Run(Outcome.TRANSIENT, state, error=exc)
        try:
            lease = take_lease(
                account,
                state,
                version,
                owner=self.owner,
                now=self.clock(),
                always=self.lease_every_grant,
            )
            if isinstance(lease, Busy):
                return Run(
                    Outcome.BUSY, state, error=lease.error, facts=RunFacts(lease_until=lease.until)
                )
            return self._refresh(account, lease, reservation)
        finally:
            self.grants.release(reservation)  # unless the new grant filled it

    def _refresh(self, account: Account, lease: Lease, reservation: Reservation | None) -> Run:
        settings = account.settings
        client = self.http.get(verify=settings.tls_verify, ca_bundle=settings.ca_bundle)
        requested_at = self.clock()
        try:
            tokens = account.provider.refresh(lease.state, client, requested_at)
        except SecretRefError as exc:
            # A missing credential file or variable: a human has to fix it.
            return self._failed(lease, PermanentProviderError("secret_ref", str(exc)))
        except ProviderError as exc:
            return self._failed(lease, exc)
        pending = Pending(self._rotated(account, lease, tokens), spent=lease.state.refresh_token)
        self.grants.keep(account, pending, reservation)
        landing = self.grants.land(account, pending, lease.version)
        if landing is Landing.HELD:
            return self._held(account, pending.state)
        if landing is Landing.SET_ASIDE:
            lease.give_back(replace(lease.state, last_error="the new grant could not be saved"))
            return Run(Outcome.PERMANENT, lease.state, error=_unlandable(account))
        run = self._published(
            account,
            pending.state,
            Outcome.SUCCESS,
            tokens=tokens,
            new_sinks=lease.state.access_token is None,  # the account's first token
        )
        if lease.state.failed:
            run = replace(run, revived=True)
        # One line per rotation, once the state is saved and every sink was tried.
        _log.info(
            "rotated",
            account=account.name,
            provider=settings.provider,
            outcome=Outcome.SUCCESS,
            duration_ms=round((self.clock() - requested_at).total_seconds() * 1000),
            expires_at=format_time(tokens.expires_at),
            next_refresh_at=format_time(pending.state.next_refresh_at or tokens.expires_at),
            sinks_written=run.published.written,
            sinks_unchanged=run.published.unchanged,
            sinks_failed=run.published.failed,
        )
        return run

    # -- the steps' small pieces ------------------------------------------------------

    def _rotated(self, account: Account, lease: Lease, tokens: TokenSet) -> AccountState:
        """The new state: the vendor's tokens, no error, and the lease released."""
        return Lease.released(
            lease.state,
            **lease.state.token_fields(tokens),
            last_success_at=tokens.issued_at,
            last_error="",
            last_error_code="",
            consecutive_failures=0,
            failed=False,
            next_refresh_at=planned_refresh(
                tokens.issued_at, tokens.expires_at, account.policy, self.rand()
            ),
        )

    def _failed(self, lease: Lease, error: ProviderError) -> Run:
        if isinstance(error, InvalidGrant):
            current = moved_on(lease)
            if current is not None:
                return self._published(lease.account, current, Outcome.ADOPTED)
        outcome, state, facts = record_failure(lease, error, now=self.clock(), rand=self.rand())
        return Run(outcome, state, error=error, facts=facts)

    def _land_pending(self, account: Account, pending: Pending) -> Run:
        """Land a rotated grant that was not saved (store outage, or a crash)."""
        landing, state = self.grants.settle(account, pending)
        if landing is Landing.HELD:
            return self._held(account, state)
        if landing is Landing.SET_ASIDE:
            current, _ = account.read_state()
            return Run(Outcome.PERMANENT, current, error=_unlandable(account))
        outcome = Outcome.NOT_DUE if landing is Landing.ALREADY else Outcome.SUCCESS
        return self._published(account, state, outcome)

    def _held(self, account: Account, state: AccountState) -> Run:
        """The state store did not take a rotated grant: it waits in memory and spool."""
        error = StoreUnavailable(
            f"the state store did not take the new grant of {account.name}; it is kept "
            f"{'in memory and in the spool' if self.spool is not None else 'in memory'} "
            f"and lands at the next run (the daemon's, or `rotator refresh {account.name}`)"
        )
        facts = RunFacts(hold=timedelta(seconds=self.state_write_delays[-1]))
        return Run(Outcome.TRANSIENT, state, error=error, facts=facts)

    def _published(
        self,
        account: Account,
        state: AccountState,
        outcome: Outcome,
        *,
        tokens: TokenSet | None = None,
        new_sinks: bool = False,
    ) -> Run:
        done = self.publisher.sync(account, state, tokens=tokens, new_sinks=new_sinks)
        facts = RunFacts(planned=state.next_refresh_at, sink_failures=done.streak)
        return Run(outcome, state, facts=facts, published=done)

    def _result(self, account: Account, run: Run, duration: float) -> RotationResult:
        """The one result of the run, with its next run decided in one place."""
        when = next_run(
            run.outcome, run.facts, now=self.clock(), policy=account.policy, rand=self.rand()
        )
        return RotationResult(
            account.name,
            run.outcome,
            when,
            state=run.state,
            error=run.error,
            duration=duration,
            sinks_written=run.published.written,
            sinks_unchanged=run.published.unchanged,
            sinks_failed=run.published.failed,
            revived=run.revived,
        )

    def _notify(self, result: RotationResult) -> None:
        for observer in self.observers:
            try:
                observer.after_rotation(result)
            except Exception as exc:  # an observer must never break rotation
                _log.error("observer failed", observer=type(observer).__name__, error=repr(exc))


def _unlandable(account: Account) -> StoreError:
    return StoreError(
        f"the new grant of {account.name} could not be saved and was set aside beside the "
        f"spool (see the CRITICAL log line); re-authorize with `rotator authorize "
        f"{account.name}` or `rotator import {account.name}` if it cannot be landed"
    )
