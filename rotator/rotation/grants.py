"""Rule 1 in one place: a rotated grant is never dropped.

The vendor spends the old refresh token the moment it answers, so from then on
the new state is the only valid grant. :class:`GrantKeeper` owns every copy of
it until the state store holds it:

::

    room_for     reserve spool space BEFORE the vendor is asked (no room: not asked)
    keep         write the answer ahead into that space (encrypted, fsynced)
    land         write it to the state store; retried through the waiter; on a store
                 that stays down, held in memory (and spool) for the next run
    pending      what a run must land before anything else (memory, then spool)
    replay       at start, land what a previous process left in the spool

A grant remembers the refresh token it replaced (its lineage, :class:`Pending`),
so landing it never puts a spent token back over a newer grant. A grant whose
landing raises anything unexpected is set aside (still encrypted, beside the
spool) with a CRITICAL line, so one bad entry never stops the others.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from rotator.backends.base import Version
from rotator.errors import (
    NewerFormat,
    StoreConflict,
    StoreError,
    StoreUnavailable,
    scrub_values,
)
from rotator.rotation.lease import release_left
from rotator.rotation.spool import Reservation, Spool, SpoolEntry
from rotator.secrets import Secret
from rotator.state import AccountState
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.rotation.accounts import Account

__all__ = ["GrantKeeper", "Landing", "NoRoomForGrant", "Pending", "superseded"]

_log = structlog.get_logger("rotator.rotation")


@dataclass(frozen=True, slots=True)
class Pending:
    """A rotated state not yet in the state store, with the refresh token it replaced."""

    state: AccountState
    spent: Secret | None
    #: the spool file holding it, when it was read from the spool
    where: Path | None = None

    @classmethod
    def from_entry(cls, name: str, entry: SpoolEntry) -> Pending:
        entry.check()  # a newer format: NewerFormat, before anything of it is used
        return cls(
            AccountState.from_record(name, entry.record),
            Secret(entry.spent) if entry.spent else None,
            entry.path,
        )

    def secrets(self) -> list[str | None]:
        return [
            s.reveal() if s is not None else None
            for s in (self.state.access_token, self.state.refresh_token, self.spent)
        ]


class Landing(enum.Enum):
    LANDED = "landed"  # the state store holds it now (written, or found there meanwhile)
    ALREADY = "already"  # the store held it, or a newer grant, before we wrote
    HELD = "held"  # the store stayed down: kept in memory and spool for the next run
    SET_ASIDE = "set_aside"  # can never land as it is: set aside for a human


class NoRoomForGrant(StoreUnavailable):
    """The spool has no room for the successor of a refresh token: it is not spent."""


class GrantKeeper:
    """Owns every rotated grant until the state store holds it. Callers hold the
    account's lock around each call that names an account."""

    def __init__(
        self, spool: Spool | None, waiter: Waiter, delays: tuple[float, ...], owner: str
    ) -> None:
        self.spool = spool
        self.waiter = waiter
        #: bounded retries of a state write that must land (seconds between tries)
        self.delays = delays
        self.owner = owner
        #: grants whose write did not land in this run; the next run lands them first
        self._unsaved: dict[str, Pending] = {}
        #: spool keys that may have an entry besides another process's rotation (see
        #: may_be_spooled); None until the start's replay looked: every job looks then
        self._spooled: set[str] | None = None

    # -- before and right after the vendor call -------------------------------------

    def room_for(self, account: Account, state: AccountState) -> Reservation | None:
        """Reserve spool space for the successor of ``state``'s refresh token.

        Raises :class:`NoRoomForGrant` when there is none: the vendor must not be
        asked. Nothing is reserved without a spool, or without a refresh token to
        spend (an access token alone is obtained again with one call).
        """
        if self.spool is None or state.refresh_token is None:
            return None
        try:
            return self.spool.reserve(account.spool_key)
        except OSError as exc:
            raise NoRoomForGrant(
                f"no room to keep the new grant of {account.name} in the spool directory "
                f"{self.spool.directory} ({exc.strerror or type(exc).__name__}); the refresh "
                "token was not spent: free space there (or set server.spool_dir)"
            ) from None

    def release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            Spool.release(reservation)

    def keep(self, account: Account, pending: Pending, reservation: Reservation | None) -> None:
        """Write the grant ahead of the state store (into the reserved space)."""
        if self.spool is None or pending.state.refresh_token is None:
            return  # only a refresh token is a grant a crash could lose
        if self._spooled is not None:
            self._spooled.add(account.spool_key)
        record = pending.state.to_record()
        spent = pending.spent.reveal() if pending.spent is not None else None
        try:
            if reservation is not None:
                self.spool.fill(reservation, account.name, account.state_path, record, spent=spent)
            else:
                self.spool.put(
                    account.spool_key, account.name, account.state_path, record, spent=spent
                )
        except Exception as exc:  # the state write below is still attempted
            _log.error(
                "could not spool the new grant",
                account=account.name,
                error=_describe(exc, pending),
            )

    # -- landing ---------------------------------------------------------------------

    def land(self, account: Account, pending: Pending, expected: Version | None) -> Landing:
        """Write a freshly rotated state; on conflict overwrite, on outage retry.

        A conflict means someone wrote meanwhile: if the store still holds the
        spent token (our lease expired and another worker took it, or recorded a
        failure), our tokens go on top; if it already holds ours, or a grant that
        moved on from ours, overwriting would put a spent refresh token back, so
        we stop. A store that stays down past the bounded retries (or a stop of the
        waiter) leaves the grant held for the next run.
        """
        delays = iter(self.delays)
        while True:
            try:
                try:
                    account.state_store.write(
                        account.state_path, pending.state.to_record(), expected_version=expected
                    )
                except StoreConflict:
                    current, expected = account.read_state()
                    if not superseded(current, pending.state, pending.spent):
                        _log.warning(
                            "state changed under our lease; writing the new grant on top",
                            account=account.name,
                        )
                        continue
                    _log.info(
                        "the state already holds this grant or a newer one; not overwriting",
                        account=account.name,
                    )
                self.forget(account, pending)
                return Landing.LANDED
            except StoreError as exc:
                delay = next(delays, None)
                if delay is not None:
                    _log.warning(
                        "state write failed; retrying",
                        account=account.name,
                        error=str(exc),
                        retry_in_s=delay,
                    )
                if delay is None or not self.waiter.sleep(delay):
                    self._unsaved[account.name] = pending
                    _log.critical(
                        "new grant not yet saved; holding it and retrying",
                        account=account.name,
                        error=str(exc),
                    )
                    return Landing.HELD
            except Exception as exc:
                self.set_aside(account, pending, exc)
                return Landing.SET_ASIDE

    def settle(self, account: Account, pending: Pending) -> tuple[Landing, AccountState]:
        """Land a grant left by an earlier run or process; with the state now current."""
        current, version = account.read_state()
        if superseded(current, pending.state, pending.spent):
            # It landed before the crash (or something newer did): nothing to replay.
            self.forget(account, pending)
            return Landing.ALREADY, current
        _log.warning(
            "replaying a rotated grant that had not reached the state store", account=account.name
        )
        landing = self.land(account, pending, version)
        if landing is Landing.SET_ASIDE:
            release_left(account, self.owner)
        return landing, pending.state

    def forget(self, account: Account, landed: Pending) -> None:
        """The state store holds ``landed`` (or a newer grant): drop our copies."""
        self._unsaved.pop(account.name, None)
        if self.spool is None or landed.state.refresh_token is None:
            return  # only a state with a refresh token is ever spooled
        token = landed.state.access_token
        # Only our entry: a process sharing the spool may have spooled a newer
        # grant since, and it must stay until that one lands.
        self.spool.remove(account.spool_key, only_access_token=token.reveal() if token else None)
        if landed.where is not None and landed.where != self.spool.entry_path(account.spool_key):
            with contextlib.suppress(FileNotFoundError):
                landed.where.unlink()  # a reservation filled before a crash
        if self._spooled is not None:
            # A newer entry of another process may stay: its lease says so.
            self._spooled.discard(account.spool_key)

    def set_aside(self, account: Account, pending: Pending, error: BaseException) -> None:
        """Take a grant that cannot land out of the flow, kept encrypted, and say so."""
        self._unsaved.pop(account.name, None)
        kept: object = None
        if self.spool is not None:
            token = pending.state.access_token
            try:
                kept = self.spool.set_aside(
                    account.spool_key,
                    path=pending.where,
                    access_token=token.reveal() if token is not None else None,
                )
            except OSError as exc:
                kept = f"in place (it could not be moved: {exc.strerror})"
            if self._spooled is not None:
                self._spooled.discard(account.spool_key)
        _log.critical(
            "a rotated grant cannot be saved to the state store; set aside",
            account=account.name,
            error=_describe(error, pending),
            kept=str(kept) if kept else "nowhere: no spool, or the spool write had failed",
            fix=(
                "fix what refused it, then rename the file back to its name without "
                f"'.unlandable' and restart (the start replays it); if the grant is bad, "
                f"run `rotator authorize {account.name}` or `rotator import {account.name}`"
            ),
        )

    # -- what a run lands first ---------------------------------------------------------

    def pending(self, account: Account, state: AccountState) -> Pending | None:
        """A rotated grant that has not reached the state store yet (memory or spool).
        ``state`` is what the store holds now."""
        held = self._unsaved.get(account.name)
        if held is None and self.spool is not None and self.may_be_spooled(account, state):
            entry = self.spool.get(account.spool_key)
            if entry is not None:
                return self._read(account, entry)
        return held

    def may_be_spooled(self, account: Account, state: AccountState) -> bool:
        """Whether the spool may hold a grant of the account that memory does not.

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

    def replay(
        self,
        accounts: Mapping[str, Account],
        lock: Callable[[str], contextlib.AbstractContextManager[None]],
    ) -> int:
        """Land every spooled grant before anything else runs; returns how many.

        Each entry on its own: a store error leaves it for the job; anything else
        sets it aside, releases the lease its process left, and the others go on.
        """
        if self.spool is None:
            return 0
        entries = list(self.spool.entries())
        if not entries:  # the usual start: no account is built to find none
            self._spooled = set()
            return 0
        by_key = {account.spool_key: account for account in accounts.values()}
        replayed = 0
        left: set[str] = set()
        for entry in entries:
            account = by_key.get(entry.key)
            if account is None:
                left.add(entry.key)  # an account a reload may add
                _log.warning(
                    "spooled grant for an account not in this configuration; kept",
                    account=entry.account,
                    state_path=entry.state_path,
                )
                continue
            with lock(account.name):
                try:
                    landing = self._replay_one(account, entry)
                except StoreError as exc:
                    left.add(entry.key)
                    _log.warning(
                        "spool replay failed; the job retries it",
                        account=account.name,
                        error=str(exc),
                    )
                    continue
                if landing is not Landing.SET_ASIDE:
                    replayed += 1
        self._spooled = left
        return replayed

    def _replay_one(self, account: Account, entry: SpoolEntry) -> Landing:
        pending = self._read(account, entry)
        if pending is None:
            release_left(account, self.owner)
            return Landing.SET_ASIDE
        try:
            landing, _ = self.settle(account, pending)
        except StoreError:
            raise
        except Exception as exc:  # one entry must never stop the others, nor the start
            self.set_aside(account, pending, exc)
            release_left(account, self.owner)
            return Landing.SET_ASIDE
        return landing

    def _read(self, account: Account, entry: SpoolEntry) -> Pending | None:
        """The entry as a pending grant; one that cannot be read is set aside."""
        try:
            return Pending.from_entry(account.name, entry)
        except NewerFormat:
            raise  # a newer rotator's grant: left in place, the account waits (spool.py)
        except Exception as exc:  # a damaged record: replaying it again cannot help
            self.set_aside(account, Pending(AccountState(account.name), None, entry.path), exc)
            return None


def superseded(current: AccountState, new: AccountState, spent: Secret | None) -> bool:
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


def _describe(error: BaseException, pending: Pending) -> str:
    """The error, for a log line: never a token the grant holds."""
    text = str(error) if isinstance(error, StoreError) else f"{type(error).__name__}: {error}"
    return scrub_values(text, pending.secrets())
