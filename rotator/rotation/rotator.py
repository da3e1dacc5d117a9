"""One rotation of one account, start to finish.

::

    take the in-process lock, read the state                       [state store]
    not due and not forced?  -> make sure the sinks hold the state's token, done
    lease held by another worker?  -> busy, look again when it ends
    take the lease (compare-and-set on the version read)           [state store]
    provider.refresh(state)                                         [vendor]
    write the new state FIRST (never dropped: retried until it lands)
    publish the consumer view to every sink (unchanged -> no write)
    tell the observers (metrics, alerts)

An ``invalid_grant`` re-reads the state before it is believed: if another worker
rotated in the meantime, its result is adopted and the grant is alive.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import structlog

from rotator.backends.base import Record, SecretStore, Version, WriteResult
from rotator.config.models import Sink
from rotator.errors import (
    InvalidGrant,
    LeaseHeld,
    PermanentProviderError,
    ProviderError,
    RotatorError,
    SecretRefError,
    StoreConflict,
    StoreDamaged,
    StoreError,
)
from rotator.http import HttpClients
from rotator.rotation.accounts import Account, default_owner, owner_is_dead
from rotator.rotation.spool import Spool
from rotator.schedule import is_due, next_refresh, retry_at
from rotator.secrets import Secret
from rotator.state import AccountState
from rotator.tokens import TokenSet, format_time

__all__ = [
    "Observer",
    "Result",
    "RotationResult",
    "Rotator",
    "publish",
    "utc_now",
]

_log = structlog.get_logger("rotator.rotation")
#: in a spool entry: the refresh token the spooled state replaced (its lineage)
_SPENT = "spent_refresh_token"


FAILED_RECHECK = timedelta(seconds=60)
MIN_REFRESH_INTERVAL = timedelta(seconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Result:
    """The outcome of one job run (also the ``result`` label of the metrics)."""

    SUCCESS = "success"  # the vendor gave us a new token; state written; sinks published
    ADOPTED = "adopted"  # another worker had rotated; we took its result
    NOT_DUE = "not_due"  # nothing to do yet (sinks checked)
    BUSY = "busy"  # another worker holds the lease
    TRANSIENT = "transient_error"  # will retry with backoff
    PERMANENT = "permanent_error"  # stopped until reload or manual refresh
    FAILED = "failed"  # was already permanently failed; not attempted


@dataclass(frozen=True, slots=True)
class RotationResult:
    account: str
    result: str
    next_run: datetime | None
    state: AccountState | None = None
    error: RotatorError | None = None
    duration: float = 0.0
    sinks_written: int = 0
    sinks_unchanged: int = 0
    sinks_failed: int = 0

    @property
    def ok(self) -> bool:
        return self.result in (Result.SUCCESS, Result.ADOPTED, Result.NOT_DUE)


class Observer(Protocol):
    """Told about every job run (metrics, alerts). Must not raise; must be quick."""

    def after_rotation(self, result: RotationResult) -> None: ...


@dataclass
class Rotator:
    """Rotates accounts. Thread-safe: one in-process lock per account."""

    accounts: dict[str, Account]
    http: HttpClients
    owner: str = field(default_factory=default_owner)
    clock: Callable[[], datetime] = utc_now
    rand: Callable[[], float] = random.random
    observers: list[Observer] = field(default_factory=list)
    #: the write-ahead spool for rotated grants (None: memory only, for tests)
    spool: Spool | None = None
    #: bounded retries of a state write that must land (seconds between tries)
    state_write_delays: tuple[float, ...] = (0.2, 0.5, 1, 2, 4, 8)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    #: new states whose write has not landed yet, with the refresh token each one
    #: replaced (never dropped; see _write_new_state)
    _unsaved: dict[str, tuple[AccountState, Secret | None]] = field(
        default_factory=dict, init=False, repr=False
    )
    #: consecutive publish runs with a failed sink, per account (for the backoff)
    _sink_failures: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    #: spool keys that may have an entry besides another process's rotation (see
    #: _may_be_spooled); None until the start's replay looked: every job looks then
    _spooled: set[str] | None = field(default=None, init=False, repr=False)
    #: (store, path) -> the version this process last left a sink at: the next
    #: publish writes against it without reading the sink first
    _sink_versions: dict[tuple[str, str], Version] = field(
        default_factory=dict, init=False, repr=False
    )

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    # -- state --------------------------------------------------------------------

    def read_state(self, account: Account) -> tuple[AccountState, Version | None]:
        record: Record | None = account.state_store.read(account.state_path)
        if record is None:
            return AccountState(account=account.name, provider=account.settings.provider), None
        return AccountState.from_record(account.name, record.data), record.version

    # -- the job ------------------------------------------------------------------

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
                result = self._rotate_locked(account, force=force, retry_failed=retry_failed)
            except StoreError as exc:
                _log.warning(
                    "state store failed", account=name, error=str(exc), kind=type(exc).__name__
                )
                result = RotationResult(
                    name,
                    Result.TRANSIENT,
                    retry_at(self.clock(), 1, account.policy, self.rand()),
                    error=exc,
                )
        result = replace(result, duration=time.monotonic() - started)
        self._notify(result)
        return result

    def _notify(self, result: RotationResult) -> None:
        for observer in self.observers:
            try:
                observer.after_rotation(result)
            except Exception as exc:  # an observer must never break rotation
                _log.error("observer failed", observer=type(observer).__name__, error=repr(exc))

    def _rotate_locked(
        self, account: Account, *, force: bool, retry_failed: bool
    ) -> RotationResult:
        now = self.clock()
        state, version = self.read_state(account)
        pending = self._pending(account, state)
        if pending is not None:
            landed = self._finish_unsaved(account, *pending)
            if not (force and landed.ok):
                return landed
            # `rotator refresh` asked for a rotation: the pending grant has landed
            # (ours, or another process's in flight), so go on from the stored state.
            state, version = self.read_state(account)
        if state.failed and (force or retry_failed):
            force = True
        elif state.failed:
            # Stopped until a human acts; look again now and then, so a grant seeded
            # by `rotator import`/`authorize` or a manual refresh resumes the schedule.
            return RotationResult(account.name, Result.FAILED, now + FAILED_RECHECK, state=state)
        if not force and not is_due(
            now, has_token=state.access_token is not None, next_refresh_at=state.next_refresh_at
        ):
            return self._sync_sinks(account, state, Result.NOT_DUE)
        if (
            state.lease_held_by_other(self.owner, now)
            and state.lease_until is not None
            and not self._take_over_dead_lease(account, state)
        ):
            return RotationResult(
                account.name,
                Result.BUSY,
                state.lease_until + timedelta(seconds=1),
                state=state,
                error=LeaseHeld(account.name, state.lease_owner, state.lease_until.timestamp()),
            )
        leased = replace(
            state,
            provider=account.settings.provider,
            lease_owner=self.owner,
            lease_until=now + account.settings.lease_ttl,
            last_attempt_at=now,
        )
        try:
            lease_version = account.state_store.write(
                account.state_path, leased.to_record(), expected_version=version
            ).version
        except StoreConflict:
            # Someone wrote between our read and our lease: look again in a moment.
            return RotationResult(
                account.name, Result.BUSY, now + timedelta(seconds=1), state=state
            )
        return self._refresh_with_lease(account, leased, lease_version)

    def _take_over_dead_lease(self, account: Account, state: AccountState) -> bool:
        # A process killed mid-rotation (kill -9, OOM, a crash) leaves its lease.
        # Waiting for it to expire would present the refresh token it may have
        # spent long after the vendor's reuse grace period; taking it over at
        # once keeps us inside it. Only a provably dead local PID qualifies.
        if not owner_is_dead(state.lease_owner):
            return False
        _log.warning(
            "taking over the lease of a process that died mid-rotation",
            account=account.name,
            lease_owner=state.lease_owner,
        )
        return True

    def _refresh_with_lease(
        self, account: Account, leased: AccountState, lease_version: Version
    ) -> RotationResult:
        settings = account.settings
        client = self.http.get(verify=settings.tls_verify, ca_bundle=settings.ca_bundle)
        requested_at = self.clock()
        try:
            tokens = account.provider.refresh(leased, client, requested_at)
        except ProviderError as exc:
            return self._record_failure(account, leased, lease_version, exc)
        except SecretRefError as exc:
            # A missing credential file or variable: a human has to fix it.
            return self._record_failure(
                account, leased, lease_version, PermanentProviderError("secret_ref", str(exc))
            )
        new_state = self._success_state(account, leased, tokens)
        spent = leased.refresh_token
        if new_state.refresh_token is not None:
            # Only a refresh token is a grant that a crash could lose; an access token
            # alone (client_credentials) is obtained again with one call.
            self._spool_put(account, new_state, spent)
        saved = self._write_new_state(account, new_state, lease_version, spent)
        if saved is None:
            return RotationResult(
                account.name,
                Result.TRANSIENT,
                self.clock() + timedelta(seconds=self.state_write_delays[-1]),
                state=new_state,
            )
        result = self._sync_sinks(
            account,
            new_state,
            Result.SUCCESS,
            tokens=tokens,
            new_sinks=leased.access_token is None,  # the account's first token
        )
        # One line per rotation, once the state is saved and every sink was tried.
        _log.info(
            "rotated",
            account=account.name,
            provider=settings.provider,
            outcome=Result.SUCCESS,
            duration_ms=round((self.clock() - requested_at).total_seconds() * 1000),
            expires_at=format_time(tokens.expires_at),
            next_refresh_at=format_time(new_state.next_refresh_at or tokens.expires_at),
            sinks_written=result.sinks_written,
            sinks_unchanged=result.sinks_unchanged,
            sinks_failed=result.sinks_failed,
        )
        return result

    def _success_state(
        self, account: Account, leased: AccountState, tokens: TokenSet
    ) -> AccountState:
        return replace(
            leased.with_tokens(tokens),
            lease_owner="",
            lease_until=None,
            last_success_at=tokens.issued_at,
            last_error="",
            last_error_code="",
            consecutive_failures=0,
            failed=False,
            # A vendor answering expires_in 0 must not make us refresh in a tight loop.
            next_refresh_at=max(
                next_refresh(tokens.issued_at, tokens.expires_at, account.policy, self.rand()),
                tokens.issued_at + MIN_REFRESH_INTERVAL,
            ),
        )

    def _record_failure(
        self,
        account: Account,
        leased: AccountState,
        lease_version: Version,
        error: ProviderError,
    ) -> RotationResult:
        if isinstance(error, InvalidGrant):
            adopted = self._adopt_if_rotated(account, leased)
            if adopted is not None:
                return adopted
        now = self.clock()
        failures = leased.consecutive_failures + 1
        permanent = not error.transient
        next_run = (
            now + FAILED_RECHECK
            if permanent
            else retry_at(
                now,
                failures,
                account.policy,
                self.rand(),
                issued_at=leased.issued_at,
                expires_at=leased.expires_at,
                retry_after=error.retry_after,
            )
        )
        failed_state = replace(
            leased,
            lease_owner="",
            lease_until=None,
            consecutive_failures=failures,
            failed=permanent,
            last_error=str(error),
            last_error_code=error.code,
            next_refresh_at=leased.next_refresh_at if permanent else next_run,
        )
        log = _log.error if permanent else _log.warning
        log(
            "rotation failed",
            account=account.name,
            provider=account.settings.provider,
            outcome=Result.PERMANENT if permanent else Result.TRANSIENT,
            error=str(error),
            consecutive_failures=failures,
            retry_at=None if permanent else format_time(next_run),
            token_expires_at=format_time(leased.expires_at) if leased.expires_at else None,
            fix=_fix_for(account.name, error) if permanent else None,
        )
        try:
            account.state_store.write(
                account.state_path, failed_state.to_record(), expected_version=lease_version
            )
        except StoreError as exc:
            # The lease expires on its own; the failure is still reported.
            _log.warning("could not record the failure", account=account.name, error=str(exc))
        return RotationResult(
            account.name,
            Result.PERMANENT if permanent else Result.TRANSIENT,
            next_run,
            state=failed_state,
            error=error,
        )

    def _adopt_if_rotated(self, account: Account, leased: AccountState) -> RotationResult | None:
        """After invalid_grant: if the stored grant moved on, another worker rotated."""
        try:
            current, _ = self.read_state(account)
        except StoreError:
            return None
        if current.refresh_token is None or current.refresh_token == leased.refresh_token:
            return None
        _log.info("adopted another worker's rotation", account=account.name)
        return self._sync_sinks(account, current, Result.ADOPTED)

    # -- the state write that must not be lost -------------------------------------

    def _write_new_state(
        self,
        account: Account,
        new_state: AccountState,
        expected: Version | None,
        spent: Secret | None,
    ) -> Version | None:
        """Write a freshly rotated state; on conflict overwrite, on outage retry.

        The vendor has already spent the old refresh token (``spent``), so the new
        state is the only valid grant: it is never dropped. A conflict means
        someone wrote meanwhile: if the store still holds the spent token (our
        lease expired and another worker took it, or recorded a failure), our
        tokens go on top; if it already holds ours, or a grant that moved on
        from ours, overwriting would put a spent refresh token back, so we stop.
        If the store stays down past the bounded retries, the state is kept in
        memory and the next job run writes it before doing anything else.
        """
        delays = iter(self.state_write_delays)
        while True:
            try:
                result = account.state_store.write(
                    account.state_path, new_state.to_record(), expected_version=expected
                )
                self._forget_unsaved(account, new_state)
                return result.version
            except StoreConflict:
                current, current_version = self.read_state(account)
                if _superseded(current, new_state, spent):
                    _log.info(
                        "the state already holds this grant or a newer one; not overwriting",
                        account=account.name,
                    )
                    self._forget_unsaved(account, new_state)
                    return current_version
                _log.warning(
                    "state changed under our lease; writing the new grant on top",
                    account=account.name,
                )
                expected = current_version
                continue
            except StoreError as exc:
                delay = next(delays, None)
                if delay is None:
                    self._unsaved[account.name] = (new_state, spent)
                    _log.critical(
                        "new grant not yet saved; holding it and retrying",
                        account=account.name,
                        error=str(exc),
                    )
                    return None
                _log.warning(
                    "state write failed; retrying",
                    account=account.name,
                    error=str(exc),
                    retry_in_s=delay,
                )
                time.sleep(delay)

    def _forget_unsaved(self, account: Account, landed: AccountState) -> None:
        self._unsaved.pop(account.name, None)
        # Only a state with a refresh token is ever spooled (see _refresh_with_lease).
        if self.spool is not None and landed.refresh_token is not None:
            # Only our entry: a process sharing the spool may have spooled a newer
            # grant since, and it must stay until that one lands.
            mine = landed.access_token.reveal() if landed.access_token is not None else None
            self.spool.remove(account.spool_key, only_access_token=mine)
            if self._spooled is not None:
                # A newer entry of another process may stay: its lease says so.
                self._spooled.discard(account.spool_key)

    def _spool_put(self, account: Account, state: AccountState, spent: Secret | None) -> None:
        if self.spool is None:
            return
        record = state.to_record()
        if spent is not None:
            record[_SPENT] = spent.reveal()
        try:
            if self._spooled is not None:
                self._spooled.add(account.spool_key)
            self.spool.put(account.spool_key, account.name, account.state_path, record)
        except OSError as exc:
            # The state write below is still attempted; we only lose the crash cover.
            _log.error(
                "could not spool the new grant",
                account=account.name,
                error=exc.strerror or repr(exc),
            )

    def _pending(
        self, account: Account, state: AccountState
    ) -> tuple[AccountState, Secret | None] | None:
        """A rotated state that has not reached the state store yet (memory or spool),
        with the refresh token it replaced. ``state`` is what the store holds now."""
        pending = self._unsaved.get(account.name)
        if pending is None and self.spool is not None and self._may_be_spooled(account, state):
            entry = self.spool.get(account.spool_key)
            if entry is not None:
                spent = entry.record.get(_SPENT)
                pending = (
                    AccountState.from_record(account.name, entry.record),
                    Secret(spent) if spent else None,
                )
        return pending

    def _may_be_spooled(self, account: Account, state: AccountState) -> bool:
        """Whether the spool may hold a grant of the account that ``_unsaved`` does not.

        What the start's replay left there and what this process spooled, and a
        grant another process rotated (sharing the spool: ``rotator refresh``, a
        process that died): it leased the account in the state store before asking
        the vendor and only the write that lands its grant clears that lease, so
        until then the state shows a lease that is not ours, live, expired or left
        by a dead process. Any other job skips the look-up (a system call, and a
        hand-over of the interpreter lock, per job).
        """
        if self._spooled is None or account.spool_key in self._spooled:
            return True
        return bool(state.lease_owner) and state.lease_owner != self.owner

    def _finish_unsaved(
        self, account: Account, pending: AccountState, spent: Secret | None
    ) -> RotationResult:
        """Land a rotated state that was not saved (store outage, or a crash)."""
        current, version = self.read_state(account)
        if _superseded(current, pending, spent):
            # It landed before the crash (or something newer did): nothing to replay.
            self._forget_unsaved(account, pending)
            return self._sync_sinks(account, current, Result.NOT_DUE)
        _log.warning(
            "replaying a rotated grant that had not reached the state store", account=account.name
        )
        saved = self._write_new_state(account, pending, version, spent)
        if saved is None:
            return RotationResult(
                account.name,
                Result.TRANSIENT,
                self.clock() + timedelta(seconds=self.state_write_delays[-1]),
                state=pending,
            )
        return self._sync_sinks(account, pending, Result.SUCCESS)

    # -- publishing -------------------------------------------------------------------

    def _sync_sinks(
        self,
        account: Account,
        state: AccountState,
        result: str,
        *,
        tokens: TokenSet | None = None,
        new_sinks: bool = False,
    ) -> RotationResult:
        tokens = tokens or state.tokenset()
        next_run = state.next_refresh_at
        if tokens is None:
            return RotationResult(account.name, result, next_run or self.clock(), state=state)
        view = account.provider.consumer_view(tokens)
        written = unchanged = failed = 0
        for store, sink in account.sinks:
            key = (sink.store, sink.path)
            try:
                # as this process last left it; a first token's sinks are new
                known = self._sink_versions.get(key, None if new_sinks else UNREAD)
                done = publish(store, sink, view, expected=known)
                self._sink_versions[key] = done.version
                if done.changed:
                    written += 1
                else:
                    unchanged += 1
            except StoreError as exc:
                self._sink_versions.pop(key, None)
                failed += 1
                _log.warning(
                    "publish failed",
                    account=account.name,
                    sink=f"{sink.store}:{sink.path}",
                    error=str(exc),
                )
        if failed:
            # The state is safe; come back for the sinks that missed it, backing
            # off while they stay broken.
            streak = self._sink_failures.get(account.name, 0) + 1
            self._sink_failures[account.name] = streak
            soon = retry_at(self.clock(), streak, account.policy, self.rand())
            next_run = min(next_run, soon) if next_run else soon
        else:
            self._sink_failures.pop(account.name, None)
        return RotationResult(
            account.name,
            result,
            next_run,
            state=state,
            sinks_written=written,
            sinks_unchanged=unchanged,
            sinks_failed=failed,
        )

    def replay_spool(self) -> int:
        """Land every spooled grant before anything else runs; returns how many."""
        if self.spool is None:
            return 0
        by_key = {account.spool_key: account for account in self.accounts.values()}
        replayed = 0
        left: set[str] = set()
        for entry in self.spool.entries():
            account = by_key.get(entry.key)
            if account is None:
                left.add(entry.key)  # an account a reload may add
                _log.warning(
                    "spooled grant for an account not in this configuration; kept",
                    account=entry.account,
                    state_path=entry.state_path,
                )
                continue
            with self._lock(account.name):
                try:
                    spent = entry.record.get(_SPENT)
                    pending = AccountState.from_record(account.name, entry.record)
                    self._finish_unsaved(account, pending, Secret(spent) if spent else None)
                    replayed += 1
                except StoreError as exc:
                    left.add(entry.key)
                    _log.warning(
                        "spool replay failed; the job retries it",
                        account=account.name,
                        error=str(exc),
                    )
        self._spooled = left
        return replayed


def _superseded(current: AccountState, new: AccountState, spent: Secret | None) -> bool:
    """True when the stored state already holds ``new``'s grant or one that moved on.

    Decided by the refresh token chain, not by clocks (two hosts' clocks may
    disagree): a store still holding the token ``new`` replaced needs ``new``;
    any other refresh token there is ours or came after ours (another worker
    rotated from ours, or a human imported a new grant). Without a chain (a
    vendor that does not rotate refresh tokens), the later issue time wins.
    """
    if current.refresh_token is None:
        return False
    if current.access_token is not None and current.access_token == new.access_token:
        return True
    if spent is not None and new.refresh_token is not None and new.refresh_token != spent:
        return current.refresh_token != spent
    return (
        current.issued_at is not None
        and new.issued_at is not None
        and current.issued_at >= new.issued_at
    )


class _Unread(enum.Enum):
    UNREAD = "unread"


#: for :func:`publish`: no version known, read the sink first
UNREAD: Final = _Unread.UNREAD


def publish(
    store: SecretStore,
    sink: Sink,
    view: Mapping[str, str],
    *,
    expected: Version | _Unread | None = UNREAD,
    attempts: int = 3,
) -> WriteResult:
    """Write the consumer view to one sink; retries a lost compare-and-set.

    ``expected`` is the version the sink is believed to be at (None: absent), as
    this process last left it; the write then goes against it without reading the
    sink first. A wrong belief costs one lost compare-and-set and a read, as a
    writer between a read and the write always did.
    """
    reads = 0  # a belief that proves wrong is not one of the attempts
    while True:
        if expected is UNREAD:
            try:
                current = store.read(sink.path, fmt=sink.format)
                expected = current.version if current else None
            except StoreDamaged as exc:
                # a sink is rendered from the state: replace what cannot be read (the
                # store refuses unless rotator owns it or the sink says adopt)
                expected = exc.version
            reads += 1
        try:
            return store.write(
                sink.path, view, expected_version=expected, fmt=sink.format, adopt=sink.adopt
            )
        except StoreConflict:
            if reads >= attempts:
                raise
            expected = UNREAD


def _fix_for(account: str, error: ProviderError) -> str:
    if isinstance(error, InvalidGrant):
        return (
            f"the grant is dead: run `rotator authorize {account}` or seed a new refresh "
            f"token with `rotator import {account}`"
        )
    if error.code == "invalid_client":
        return "the vendor refused the client credentials: check client_id and client_secret"
    if error.code == "secret_ref":
        return "a secret reference cannot be read: fix it, then `systemctl reload rotator`"
    return f"fix the cause, then run `rotator refresh {account}` or reload the daemon"
