"""The lease: one refresher per account (rule 2), taken and released as steps.

A worker takes the lease by compare-and-set on the state version it read, so of
two workers that read the same state only one writes its lease; the other sees a
conflict and answers ``busy``. The lease ends with the write that lands the new
grant or records the failure (:meth:`Lease.released` clears it in that state), or
with :meth:`Lease.give_back` when nothing is written. A lease owner names its
host, PID namespace and PID, so a lease left by a process that provably died
here is taken over at once instead of waiting out its TTL past the vendor's
reuse grace period.

Rule 2 is about refresh tokens: only a grant that holds one can be spent twice.
A state without a refresh token (client credentials, a password grant, a PAT)
is refreshed under the in-process lock alone, with no lease write: two
processes asking for an access token at once cost the vendor a second call and
lose nothing, and the write that lands the new state still compares the version
read, so the store never goes back. A lease another worker holds is respected
either way. That saves one durable write per rotation (a third of a
client-credentials rotation's store cost).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from rotator.backends.base import Version
from rotator.errors import LeaseHeld, StoreConflict, StoreError
from rotator.state import AccountState

if TYPE_CHECKING:
    from rotator.rotation.accounts import Account

__all__ = ["Busy", "Lease", "default_owner", "owner_is_dead", "release_left", "take_lease"]

_log = structlog.get_logger("rotator.rotation")


@dataclass(frozen=True, slots=True)
class Lease:
    """The lease we hold: the state as leased, and the version that write made."""

    account: Account
    state: AccountState
    #: the version our lease write made; for an unwritten lease, the version read
    version: Version | None
    #: False: no lease was written (a grant without a refresh token, see the module)
    written: bool = True

    @staticmethod
    def released(state: AccountState, **changes: Any) -> AccountState:
        """``state`` without a lease (and with ``changes``): what the write that ends
        the lease holds. One copy of the state's twenty fields, however many change."""
        return replace(state, **changes, lease_owner="", lease_until=None)

    def give_back(self, state: AccountState | None = None) -> bool:
        """End the lease with no new grant; ``state`` (default: as leased) is written.

        Compare-and-set on our lease's version: a state that moved on since is not
        ours to touch. Never raises: a lease that cannot be given back expires.
        """
        if state is None and not self.written:
            return True  # nothing was written, so nothing is held
        state = self.released(state if state is not None else self.state)
        try:
            self.account.state_store.write(
                self.account.state_path, state.to_record(), expected_version=self.version
            )
        except Exception as exc:  # the lease expires on its own
            _log.warning(
                "could not release the lease; it expires on its own",
                account=self.account.name,
                error=str(exc) if isinstance(exc, StoreError) else type(exc).__name__,
            )
            return False
        return True


@dataclass(frozen=True, slots=True)
class Busy:
    """Another worker holds the lease (or wrote between our read and our lease)."""

    until: datetime | None
    error: LeaseHeld | None = None


def take_lease(
    account: Account,
    state: AccountState,
    version: Version | None,
    *,
    owner: str,
    now: datetime,
    always: bool = False,
) -> Lease | Busy:
    """Lease the account for one refresh, by compare-and-set on ``version``.

    ``always``: write the lease for a grant without a refresh token too (partitioned
    replicas: another process may run the account, and its call would be a second one).
    """
    if (
        state.lease_held_by_other(owner, now)
        and state.lease_until is not None
        and not _dead_owner(account, state)
    ):
        return Busy(
            state.lease_until,
            LeaseHeld(account.name, state.lease_owner, state.lease_until.timestamp()),
        )
    leased = replace(
        state,
        provider=account.settings.provider,
        lease_owner=owner,
        lease_until=now + account.settings.lease_ttl,
        last_attempt_at=now,
    )
    if state.refresh_token is None and not always:
        # nothing to spend twice: the in-process lock is enough (see the module)
        return Lease(account, leased, version, written=False)
    try:
        written = account.state_store.write(
            account.state_path, leased.to_record(), expected_version=version
        )
    except StoreConflict:
        # Someone wrote between our read and our lease: look again in a moment.
        return Busy(None)
    return Lease(account, leased, written.version)


def release_left(account: Account, owner: str) -> bool:
    """Release a lease left on the account by a process that died (or by ``owner``,
    this process), when its grant was set aside. Never raises."""
    try:
        current, version = account.read_state()
    except Exception as exc:
        _log.warning(
            "could not read the lease to release it", account=account.name, error=repr(exc)
        )
        return False
    held_by = current.lease_owner
    if version is None or not held_by or not (held_by == owner or owner_is_dead(held_by)):
        return False
    return Lease(account, current, version).give_back()


def _dead_owner(account: Account, state: AccountState) -> bool:
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


def default_owner() -> str:
    """``host/pid-namespace/pid:random``: unique, and says where to look for the holder."""
    return f"{_process_home()}/{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _process_home() -> str:
    """This host and PID namespace: where a lease owner's PID means something."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()}/{namespace}"


def owner_is_dead(owner: str) -> bool:
    """True only when the lease owner provably died: a process of this host and
    PID namespace whose PID no longer exists. Anything else (another host, an
    older owner format, a live or foreign PID) is treated as alive: its lease
    is left to expire."""
    where, _, rest = owner.rpartition("/")
    pid_text, sep, _ = rest.partition(":")
    if where != _process_home() or not sep or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: alive, someone else's
    return False
