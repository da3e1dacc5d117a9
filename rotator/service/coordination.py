"""Partitioned replicas: several ``rotator run`` processes divide the accounts through tooz.

With ``server.coordination`` set, each replica joins one tooz group
(``coordinator.join_partitioned_group``) on the backend the user runs (Redis,
etcd, ...) and owns the accounts that tooz's consistent-hash ring gives it. A
replica heartbeats on tooz's own thread (``start(start_heart=True)``); a thread
of ours looks at the membership every ``watch_interval``. When it changes (a
replica joins, leaves, or stops heartbeating for ``membership_timeout``), every
replica computes its share again: it schedules the accounts it gained and drops
the jobs of those it lost (a rotation in flight finishes; the per-account
compare-and-set lease in the state store stays the final guard against two
writers). A consistent hash moves only the accounts of the member that came or
went, so a change costs about a replica's share, not a reshuffle.

A replica that loses the backend keeps its last share. The others remove it
from the group after ``membership_timeout`` and take its accounts over, so for
the length of the outage those accounts have two schedulers: the lease makes
that safe (at most one spends a refresh token; the other re-reads the state and
finds the token fresh), and it costs state reads, not vendor calls. Dropping
the share instead would stop every rotation while the backend is down, and an
outage of the shared backend is the likelier case. Such a replica is not ready
(``/readyz``) until it is back in the group; when it is, tooz has removed it,
so it joins again and the ring settles.

tooz is imported only here, and this module only when ``server.coordination``
is set: ``rotator --help`` and a one-process daemon never load it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import structlog

from rotator.config.models import CoordinationSettings
from rotator.errors import scrub_values
from rotator.secrets import SecretRef, resolve
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.service.daemon import Daemon
    from rotator.service.monitor import Monitor

__all__ = [
    "Change",
    "Replica",
    "backend_url",
    "connect",
    "join_replicas",
    "member_id",
    "repartition",
    "share_of",
]

_log = structlog.get_logger("rotator.coordination")
T = TypeVar("T")
#: how long a stopping replica waits for its loop and for its goodbye to the group
_STOP_WAIT = 3.0
#: ``check --online`` gives the backend at most this long (or the membership timeout)
_CHECK_WAIT = 10.0


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


def member_id() -> bytes:
    """Who this replica is in the group: host (a pod's name), PID and a random tail."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()


def backend_url(settings: CoordinationSettings) -> str:
    """The tooz URL, resolved when it is a reference (it may hold a password)."""
    if isinstance(settings.url, SecretRef):
        return resolve(settings.url).reveal().strip()
    return settings.url


def within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` on a thread of its own; ``TimeoutError`` when it has not answered in time.

    tooz's Redis driver retries a refused connection fifteen times, each with the
    client's own backoff: about a minute before it says no. A late call is left
    to finish on its (daemon) thread.
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="rotator-coordination-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise TimeoutError(f"no answer within {seconds:g}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return cast(T, value)


def _tooz() -> Any:
    return importlib.import_module("tooz.coordination")


def connect(settings: CoordinationSettings, member: bytes, *, heart: bool = True) -> Any:
    """A started tooz coordinator (heartbeating on its own thread when ``heart``)."""
    coordinator = _tooz().get_coordinator(
        backend_url(settings),
        member,
        membership_timeout=settings.membership_timeout.total_seconds(),
    )
    coordinator.start(start_heart=heart)
    return coordinator


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
        self._partitioner: Any = None
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
        if self._partitioner is None:
            self._join()
        self._coordinator.run_watchers()
        ring = self._partitioner.ring
        if self.member not in ring.nodes:
            # removed by the others after an outage: tooz does not rejoin by itself
            _log.warning("dropped from the coordination group; joining again")
            self._leave()
            self._join()
            self._coordinator.run_watchers()
            ring = self._partitioner.ring
        self._last_contact = self._monotonic()
        members = frozenset(ring.nodes)
        accounts = frozenset(self._accounts())
        if self._seen == (members, accounts):
            return Change(frozenset(), frozenset())
        owned = share_of(accounts, self._partitioner.belongs_to_self)
        change = repartition(self._owned, owned)
        self._members, self._owned, self._seen = members, owned, (members, accounts)
        _log.info(
            "share of the accounts",
            member=self.member.decode(),
            members=len(members),
            owned=len(owned),
            gained=len(change.gained),
            lost=len(change.lost),
        )
        if change:
            self._on_change(change)
        return change

    def _join(self) -> None:
        tooz = _tooz()
        try:
            self._partitioner = self._coordinator.join_partitioned_group(self._group)
        except tooz.MemberAlreadyExist:
            # still listed from before an outage: a partitioner over the group as it is
            self._partitioner = importlib.import_module("tooz.partitioner").Partitioner(
                self._coordinator, self._group
            )

    def _leave(self) -> None:
        partitioner, self._partitioner = self._partitioner, None
        if partitioner is None or self._coordinator is None:
            return
        with contextlib.suppress(Exception):  # not a member any more is what we wanted
            self._coordinator.leave_partitioned_group(partitioner)

    def _disconnect(self) -> None:
        coordinator, self._coordinator = self._coordinator, None
        self._partitioner = None
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


def scrubbed(settings: CoordinationSettings, text: str) -> str:
    """``text`` cut short, without the backend URL or its password (a reference may hold both)."""
    secrets = []
    if isinstance(settings.url, SecretRef):
        try:
            url = backend_url(settings)
            secrets += [url, urlsplit(url).password or ""]
        except Exception:  # noqa: S110 - an unreadable reference holds nothing to scrub
            pass
    return scrub_values(text[:500], [s for s in secrets if s])


def move_jobs(daemon: Daemon, change: Change) -> None:
    """Drop the jobs of the accounts lost, run the accounts gained now.

    A gained account's run reads its state and rotates only when it is due (as a
    first run at start does), then schedules its next run; a lost one's job is
    removed, and a rotation of it in flight finishes without scheduling another
    (the daemon's ``owns`` gate already says no).
    """
    for name in sorted(change.lost):
        daemon.drop(name)
    for name in sorted(change.gained):
        daemon.trigger(name)


def check_backend(settings: CoordinationSettings) -> tuple[bool, str]:
    """``check --online``: connect, read the group's members, join nothing; (ok, what)."""
    tooz = _tooz()
    scheme = urlsplit(settings.url).scheme if isinstance(settings.url, str) else "the reference"

    def members() -> set[bytes]:
        coordinator = connect(settings, member_id(), heart=False)
        try:
            found: set[bytes] = coordinator.get_members(settings.group.encode()).get()
        except tooz.GroupNotCreated:
            found = set()
        finally:
            with contextlib.suppress(Exception):
                coordinator.stop()
        return found

    try:
        found = within(min(_CHECK_WAIT, settings.membership_timeout.total_seconds()), members)
    except Exception as exc:
        said = scrubbed(settings, f"{type(exc).__name__}: {exc}")
        return False, f"{scheme} backend unreachable: {said}"
    return True, f"{scheme} backend answers; group {settings.group!r} has {len(found)} members"


def join_replicas(settings: CoordinationSettings, daemon: Daemon, monitor: Monitor) -> Replica:
    """Hook a :class:`Replica` into the daemon's lifecycle, its probes and its metrics."""

    def apply(change: Change) -> None:
        move_jobs(daemon, change)

    def accounts() -> Collection[str]:
        return daemon.accounts.keys()  # looked up each time: a reload replaces the mapping

    replica = Replica(settings, accounts=accounts, on_change=apply)
    daemon.owns = replica.owns
    daemon.hooks_on_start.append(replica.start)
    daemon.hooks_on_stop.append(replica.stop)
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
