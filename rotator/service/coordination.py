"""Partitioned replicas: several ``rotator run`` processes divide the accounts through tooz.

With ``server.coordination`` set, each replica joins one tooz group on the
backend the user runs (Redis, etcd, ...) and owns the accounts that tooz's
consistent-hash ring (``tooz.hashring``, over the group's members as read at
each look) gives it. A
replica heartbeats on tooz's own thread (``start(start_heart=True)``); a thread
of ours looks at the membership every ``watch_interval``. When it changes (a
replica joins, leaves, or stops heartbeating for ``membership_timeout``), every
replica computes its share again: it plans the first runs of the accounts it
gained as the daemon's start does (the overdue ones spread, most urgent first:
:func:`move_jobs`) and drops the jobs of those it lost (a rotation in flight
finishes; the per-account compare-and-set lease in the state store stays the
final guard against two writers). A consistent hash moves only the accounts of
the member that came or went, so a change costs about a replica's share, not a
reshuffle.

A replica drops the accounts it lost at once, but takes on the ones it gained
only from a group it has seen on two looks in a row: a member that has just
joined (this one, on its first look) may not be known to the others yet, and
they would go on running the accounts it takes meanwhile. Replicas started
together would otherwise each begin alone and run every account. A departure
adds no member, so the survivors take its share over on the look that sees it.
What overlap is left (a rotation still in flight at the replica that lost the
account) meets the lease, which replicas write for every grant: one process
leases only grants with a refresh token, but here a client-credentials call
made twice would be a second vendor call for nothing.

A replica that loses the backend keeps its last share. The others remove it
from the group after ``membership_timeout`` and take its accounts over, so for
the length of the outage those accounts have two schedulers: the lease makes
that safe (at most one spends a refresh token; the other re-reads the state and
finds the token fresh), and it costs state reads, not vendor calls. Dropping
the share instead would stop every rotation while the backend is down, and an
outage of the shared backend is the likelier case. Once the membership timeout
has passed without an answer such a replica is not ready (``/readyz``); when
the backend answers again, the others have removed it, so it joins again and
the ring settles.

tooz is imported only through :mod:`rotator.service.coordination_backend`, and
these modules only when ``server.coordination`` is set: ``rotator --help`` and
a one-process daemon never load them.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from rotator.config.models import CoordinationSettings
from rotator.service import heap
from rotator.service.coordination_backend import connect, member_id, scrubbed, tooz, within
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.service.daemon import Daemon
    from rotator.service.monitor import Monitor
    from rotator.service.scheduling import StartPlan

__all__ = [
    "Change",
    "Replica",
    "join_replicas",
    "move_jobs",
    "repartition",
    "share_of",
]

_log = structlog.get_logger("rotator.coordination")
#: how long a stopping replica waits for its loop and for its goodbye to the group
_STOP_WAIT = 3.0


@dataclass(frozen=True, slots=True)
class Change:
    """What a new share means for the scheduler: jobs to add, jobs to drop."""

    gained: frozenset[str]
    lost: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.gained or self.lost)


def repartition(before: Collection[str], after: Collection[str]) -> Change:
    """The change from one share to the next."""
    return Change(frozenset(after) - frozenset(before), frozenset(before) - frozenset(after))


def share_of(accounts: Iterable[str], owns: Callable[[str], bool]) -> frozenset[str]:
    """The accounts ``owns`` (the ring's word for this member) gives to this replica."""
    return frozenset(name for name in accounts if owns(name))


class Replica:
    """This process's place in the group and its share of the accounts.

    ``accounts`` returns the configured account names (they change on reload);
    ``on_change`` gets each :class:`Change` and adds or drops jobs. :meth:`owns`
    is the scheduler's gate: a job of an account this replica does not own is
    neither run nor scheduled again.
    """

    def __init__(
        self,
        settings: CoordinationSettings,
        *,
        accounts: Callable[[], Collection[str]],
        on_change: Callable[[Change], None],
        connect: Callable[[CoordinationSettings, bytes], Any] = connect,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.member = member_id()
        self._accounts = accounts
        self._on_change = on_change
        self._connect = connect
        self._monotonic = monotonic
        self._waiter = Waiter()
        self._owned: frozenset[str] = frozenset()
        self._members: frozenset[bytes] = frozenset()
        self._seen: tuple[frozenset[bytes], frozenset[str]] | None = None
        self._coordinator: Any = None
        self._joined = False
        #: tooz's consistent-hash ring over ``_members`` (the same ring on every replica)
        self._ring: Any = None
        self._last_contact: float | None = None
        self._thread: threading.Thread | None = None
        self._group = settings.group.encode()

    # -- what the daemon, the probes and the metrics ask -------------------------------

    def owns(self, name: str) -> bool:
        return name in self._owned

    @property
    def owned(self) -> frozenset[str]:
        return self._owned

    @property
    def members(self) -> frozenset[bytes]:
        return self._members

    def in_touch(self) -> bool:
        """True while the group has heard from us within the membership timeout."""
        last = self._last_contact
        timeout = self.settings.membership_timeout.total_seconds()
        return last is not None and self._monotonic() - last < timeout

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``'s word on coordination: in the group, and with what share."""
        if self._last_contact is None:
            return False, "not yet in the coordination group"
        if not self.in_touch():
            return False, (
                "coordination backend unreachable; keeping the last share of "
                f"{len(self._owned)} accounts"
            )
        return True, f"one of {len(self._members)} replicas, {len(self._owned)} accounts"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rotator-coordination")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Leave the group now, so the others take the accounts over at once.

        Bounded: with the backend gone, tooz's Redis driver retries a call for
        about a minute, and a SIGTERM must not wait for that (the others drop
        this replica after the membership timeout anyway).
        """
        self._waiter.stop()
        if self._thread is not None:
            self._thread.join(timeout=_STOP_WAIT)
        try:
            within(_STOP_WAIT, self._disconnect)
        except TimeoutError:
            _log.warning("left the coordination group without a goodbye (no answer in time)")

    def _run(self) -> None:
        interval = self.settings.watch_interval.total_seconds()
        failing = False
        while True:
            try:
                self.step()
            except Exception as exc:
                # Logged when it starts, not every look: the connection and the heart
                # thread retry on their own, and the next look tries again.
                if not failing:
                    _log.warning(
                        "coordination backend unreachable; keeping the last share",
                        error=self._scrub(f"{type(exc).__name__}: {exc}"),
                        owned=len(self._owned),
                        member=self.member.decode(),
                    )
                failing = True
            else:
                if failing:
                    _log.info("coordination backend reachable again", owned=len(self._owned))
                failing = False
            if not self._waiter.sleep(interval):
                return

    # -- one look at the group ---------------------------------------------------------

    def step(self) -> Change:
        """Join if out of the group, read the membership, apply a new share."""
        if self._coordinator is None:
            self._coordinator = self._connect(self.settings, self.member)
        if not self._joined:
            self._join()
        members = self._read_members()
        if self.member not in members:
            # removed by the others after an outage: tooz does not rejoin by itself
            _log.warning("dropped from the coordination group; joining again")
            self._joined = False
            self._join()
            members = self._read_members()
        self._last_contact = self._monotonic()
        accounts = frozenset(self._accounts())
        if self._seen == (members, accounts):
            return Change(frozenset(), frozenset())
        if self._ring is None or frozenset(self._ring.nodes) != members:
            self._ring = importlib.import_module("tooz.hashring").HashRing(members)
        ring = self._ring
        share = share_of(accounts, lambda name: self.member in ring.get_nodes(name.encode()))
        # Losses apply at once, gains only from a group seen twice in a row: a member
        # that joined since the last look (this replica too, on its first) may still
        # be unknown to the others, and they would run the same accounts meanwhile
        # (replicas started together would each begin alone, with every account).
        owned = share if members <= self._members else share & self._owned
        change = repartition(self._owned, owned)
        self._members, self._owned = members, owned
        self._seen = (members, accounts) if owned == share else None  # else look again
        _log.info(
            "share of the accounts",
            member=self.member.decode(),
            members=len(members),
            owned=len(owned),
            gained=len(change.gained),
            lost=len(change.lost),
            **({"waiting": len(share - owned)} if owned != share else {}),
        )
        if change:
            self._on_change(change)
        return change

    def _read_members(self) -> frozenset[bytes]:
        """The group's live members, read whole at every look.

        Not tooz's partitioner: it reads the members, then starts watching for
        joins and leaves with a second read as its baseline, and a member that
        joined or left between the two reads is never added to (or removed from)
        its ring. Under load, replicas started together missed one another that
        way for good (a ring without a member runs that member's accounts too; a
        ring with a dead one leaves its accounts to nobody). tooz's Redis driver
        drops members whose heartbeat expired as it reads. No group (a backend that
        lost its data) has no members: this replica joins again.
        """
        try:
            return frozenset(self._coordinator.get_members(self._group).get())
        except tooz().GroupNotCreated:
            return frozenset()

    def _join(self) -> None:
        # what join_partitioned_group does, without its partitioner (weight 1 in the
        # capabilities); still listed from before an outage is a member as we are
        with contextlib.suppress(tooz().MemberAlreadyExist):
            self._coordinator.join_group_create(self._group, capabilities={"weight": 1})
        self._joined = True

    def _disconnect(self) -> None:
        coordinator, self._coordinator = self._coordinator, None
        self._joined = False
        self._seen = None
        if coordinator is None:
            return
        try:
            coordinator.stop()  # leaves the group, stops the heart, closes the connection
        except Exception as exc:
            _log.warning(
                "leaving the coordination group failed",
                error=self._scrub(f"{type(exc).__name__}: {exc}"),
            )

    def _scrub(self, text: str) -> str:
        return scrubbed(self.settings, text)


def move_jobs(
    daemon: Daemon, change: Change, *, then: Callable[[], None] = lambda: None
) -> StartPlan | None:
    """Drop the jobs of the accounts lost; plan the first runs of the accounts gained.

    A gained share is a start in small, and goes through the start's plan
    (:class:`~rotator.service.scheduling.StartPlan`): each gained account's
    first run reads its state; one not due only schedules its next run; the
    overdue ones (a dead replica's share, or every account when all replicas
    start after an outage) are spread over the plan's window, most urgent first,
    at each host's rate, instead of all calling their vendor at once. ``then``
    runs once every gained account was looked at. A lost account's job is
    removed, and a rotation of it in flight finishes without scheduling another
    (the daemon's ``owns`` gate already says no).
    """
    for name in sorted(change.lost):
        if daemon.scheduler is not None:
            with contextlib.suppress(Exception):  # no job (running, or never added): none to drop
                daemon.scheduler.remove_job(name)
    accounts = daemon.accounts
    gained = {name: accounts[name] for name in sorted(change.gained) if name in accounts}
    if not gained or daemon.stopping.is_set():
        return None
    try:
        return daemon.start_plan.more(gained, then=then)
    except RuntimeError:  # the worker pool is shut down: the daemon is stopping
        return None


def join_replicas(settings: CoordinationSettings, daemon: Daemon, monitor: Monitor) -> Replica:
    """Hook a :class:`Replica` into the daemon's lifecycle, its probes and its metrics."""

    first = [True]

    def apply(change: Change) -> None:
        # Once the first share's accounts were looked at, their objects are kept out of
        # the collector's full passes, as a one-process daemon's after its start.
        then, first[0] = (heap.freeze if first[0] else lambda: None), False
        move_jobs(daemon, change, then=then)

    def accounts() -> Collection[str]:
        return daemon.accounts.keys()  # looked up each time: a reload replaces the mapping

    replica = Replica(settings, accounts=accounts, on_change=apply)
    daemon.owns = replica.owns
    # A replica that lost an account may still be rotating it when the new owner first
    # looks: only a lease in the state tells the new owner to wait, whatever the grant.
    daemon.rotator.lease_every_grant = True
    daemon.hooks_on_start.append(replica.start)
    daemon.hooks_on_stop.append(replica.stop)

    def after_reload() -> None:
        if daemon.config.server.coordination != settings:
            _log.warning(
                "server.coordination changed; it applies at the next start",
                fix="restart the replicas one by one to join with the new settings",
            )

    daemon.hooks_on_reload.append(after_reload)
    monitor.readiness.append(replica.readiness)
    if monitor.metrics is not None:
        from prometheus_client import Gauge

        registry = monitor.metrics.registry
        members = Gauge(
            "rotator_replica_members",
            "Replicas in the coordination group, as this replica last saw it.",
            registry=registry,
        )
        members.set_function(lambda: len(replica.members))
        owned = Gauge(
            "rotator_replica_owned_accounts",
            "Accounts this replica schedules (its share of the ring).",
            registry=registry,
        )
        owned.set_function(lambda: len(replica.owned))
        in_touch = Gauge(
            "rotator_replica_coordination_up",
            "1 while the coordination backend has heard from this replica in time.",
            registry=registry,
        )
        in_touch.set_function(lambda: 1 if replica.in_touch() else 0)
    return replica
