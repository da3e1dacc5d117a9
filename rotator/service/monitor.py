"""What the daemon tells the outside world: alerts, metrics, health, systemd.

A :class:`Monitor` watches one running service through the narrow
:class:`Supervised` view (its configuration, accounts and stores, its ready and
stopping flags, a way to schedule a periodic job); the daemon satisfies it
without either module importing the other, and :mod:`rotator.service.app` wires
the two together:

- as a rotation :class:`~rotator.rotation.rotator.Observer` it updates the metrics and
  hands the new state to the alert dispatcher, on two threads of its own (so a
  slow webhook never holds up a rotation) when a check could do anything: a
  healthy account with nothing sent is settled in the rotation's own thread;
- a periodic *sweep* (``alerts.sweep``, default 15 minutes) reads every
  account's state, so an account that is never refreshed (a personal access
  token, a dead grant) still alerts and its gauges stay current. At start every
  account's first job reads its state and hands it here, so the first sweep
  waits one period (after a reload it runs at once: unchanged accounts get no
  job, and the alert settings may have changed);
- with ``server.listen`` set it serves ``/metrics``, ``/healthz`` and ``/readyz``;
- under systemd it sends ``READY=1``, ``STATUS=``, ``RELOADING=1``,
  ``STOPPING=1`` and watchdog pings.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from rotator.alerts.channels import build_channels
from rotator.alerts.dispatch import Dispatcher, StoreAlertMemory
from rotator.errors import RotatorError
from rotator.service.health import CachedProbe, HealthServer, Probe
from rotator.service.sdnotify import Notifier, Watchdog
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.backends.base import SecretStore
    from rotator.config.models import Config
    from rotator.rotation.accounts import Account
    from rotator.rotation.rotator import RotationResult
    from rotator.service.metrics import Metrics, Pages
    from rotator.state import AccountState

__all__ = ["SWEEP_JOB", "Monitor", "Supervised"]

_log = structlog.get_logger("rotator.monitor")
SWEEP_JOB = "__rotator_alert_sweep__"
#: at stop, how long an alert being sent may take to finish (its claim is already saved)
_ALERT_STOP_WAIT = 5.0
#: how long a woken alert checker lets a burst's hand-offs collect before it works
_GATHER = 0.2
#: how many waiting items a checker thread takes under one lock
_TAKEN = 32


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Supervised(Protocol):
    """What the monitor needs of the service it watches (the daemon is one)."""

    @property
    def config(self) -> Config: ...
    @property
    def accounts(self) -> Mapping[str, Account]: ...
    @property
    def stores(self) -> Mapping[str, SecretStore]: ...
    @property
    def ready(self) -> threading.Event: ...
    @property
    def stopping(self) -> threading.Event: ...

    def alive(self) -> bool:
        """True while the scheduler runs and no stop was asked."""
        ...

    def read_state(self, account: Account) -> tuple[AccountState, Any]: ...

    def every(
        self, job_id: str, func: Callable[[], None], period: timedelta, first: datetime
    ) -> bool:
        """Run ``func`` every ``period`` from ``first``, replacing ``job_id``.

        False when the scheduler does not run (before the start).
        """
        ...


class Monitor:
    def __init__(
        self,
        daemon: Supervised,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        pages: Pages | None = None,
        links: Callable[[str], str | None] | None = None,
    ) -> None:
        """``pages``: the console's routes on ``server.listen``; ``links``: a fresh
        re-authorization link per alert (both None when the console is off)."""
        self.daemon = daemon
        self._links = links
        self.clock = clock
        self.notifier = Notifier(environ)
        self.watchdog = Watchdog(self.notifier, self.alive)
        self.metrics: Metrics | None = None
        self.server: HealthServer | None = None
        self._failing: set[str] = set()
        #: more words for /readyz: (ready, reason), e.g. a replica's place in its group
        self.readiness: list[Callable[[], tuple[bool, str]]] = []
        self._accounts = set(daemon.accounts)
        self._status = ""
        self._status_lock = threading.Lock()
        self._checks = _LatestFirst(self._check, name="rotator-alerts")
        self.dispatcher = self._dispatcher()
        self._listen = daemon.config.server.listen
        if self._listen:
            # Bound now, so a taken port fails the start before anything runs.
            from rotator.service.metrics import Metrics, exposition_handler

            self.metrics = Metrics()
            probes = {
                "/healthz": CachedProbe(self._healthz, ttl=2),
                "/readyz": CachedProbe(self._readyz, ttl=10),
            }
            handler = exposition_handler(self.metrics, probes, pages)
            self.server = HealthServer(self._listen, handler)

    def _dispatcher(self) -> Dispatcher:
        config = self.daemon.config
        return Dispatcher(
            alerts=config.alerts,
            channels=build_channels(config.alerts.channels),
            memory=StoreAlertMemory(self._state_store),
            clock=self._now,
            # pauses between attempts of a failing channel end when the daemon stops
            waiter=Waiter(self.daemon.stopping),
            on_sent=self._alert_sent,
            link_for=self._links,
        )

    def _now(self) -> datetime:
        return self.clock()  # looked up on each call: tests move the monitor's clock

    def _state_store(self, account: str) -> SecretStore:
        return self.daemon.accounts[account].state_store

    def _alert_sent(self, channel: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_sent(channel, kind)

    # -- liveness and readiness ----------------------------------------------------------

    def alive(self) -> bool:
        return self.daemon.alive()

    def _healthz(self) -> Probe:
        if self.alive():
            return Probe(True, "scheduler running")
        return Probe(False, "stopping" if self.daemon.stopping.is_set() else "scheduler stopped")

    def _readyz(self) -> Probe:
        from rotator.backends.base import ValidationStatus

        if not self.daemon.ready.is_set():
            return Probe(False, "starting")
        problems = []
        for name, store in sorted(self.daemon.stores.items()):
            validation = store.validate()
            if validation.status is ValidationStatus.ERROR:
                problems.append(f"store {name}: {validation.reason}")
        notes: list[str] = []
        for check in self.readiness:
            ok, reason = check()
            (notes if ok else problems).append(reason)
        if problems:
            return Probe(False, "; ".join(problems))
        return Probe(
            True, "; ".join([f"{len(self.daemon.accounts)} accounts, stores validated", *notes])
        )

    # -- lifecycle hooks (Daemon.hooks_on_*) -------------------------------------------------

    def on_start(self) -> None:
        if self.server is not None:
            self.server.start()
        self._schedule_sweep(first=self.clock() + self.daemon.config.alerts.sweep)
        with self._status_lock:
            self._status = self.status_line()
        self.notifier.ready(self._status)
        self.watchdog.start()

    def before_reload(self) -> None:
        self.notifier.reloading()

    def after_reload(self) -> None:
        """After every reload, applied or refused: systemd waits for READY=1."""
        daemon = self.daemon
        try:
            self.dispatcher = self._dispatcher()
        except Exception as exc:  # READY=1 must still follow RELOADING=1
            _log.error(
                "alert channels not rebuilt; keeping the previous ones", error=type(exc).__name__
            )
        if daemon.config.server.listen != self._listen:
            _log.warning(
                "server.listen changed; it takes effect at the next restart",
                listening=self._listen,
                configured=daemon.config.server.listen,
            )
        accounts = set(daemon.accounts)
        for name in self._accounts - accounts:
            self._failing.discard(name)
            if self.metrics is not None:
                self.metrics.forget(name)
        self._accounts = accounts
        self._schedule_sweep()
        with self._status_lock:
            self._status = self.status_line()  # the total may have changed: sent here
        self.notifier.ready(self._status)

    def on_stop(self) -> None:
        self.notifier.stopping()
        self.watchdog.stop()
        self._checks.close(timeout=_ALERT_STOP_WAIT)
        if self.server is not None:
            self.server.stop()

    def _schedule_sweep(self, first: datetime | None = None) -> None:
        self.daemon.every(
            SWEEP_JOB,
            self.sweep,
            self.daemon.config.alerts.sweep,
            first or self.clock(),
        )

    # -- the observer ------------------------------------------------------------------------

    def after_rotation(self, result: RotationResult) -> None:
        if self.metrics is not None:
            self.metrics.observe_rotation(result.account, result.result, result.duration)
        self._set_failing(result.account, result.result.failing)
        state = result.state
        account = self.daemon.accounts.get(result.account)
        if state is None or account is None:
            return
        if self.metrics is not None:
            self.metrics.observe_state(state, self.clock())
        if self.dispatcher.settled(state, account.settings):
            return  # nothing sent, nothing to send: no store read, no hand-off
        self._checks.put(state.account, state)

    def sweep(self) -> None:
        """Every account: read the state, refresh the gauges, check alerts."""
        for name, account in list(self.daemon.accounts.items()):
            if self.daemon.stopping.is_set():
                return
            try:
                state, _ = self.daemon.read_state(account)
            except RotatorError as exc:
                _log.warning("alert sweep cannot read the state", account=name, error=str(exc))
                continue
            if state.failed or state.consecutive_failures > 0:
                self._set_failing(name, True)
            self._observe(state)

    def _observe(self, state: AccountState) -> None:
        if self.metrics is not None:
            self.metrics.observe_state(state, self.clock())
        self._check(state)

    def _check(self, state: AccountState) -> None:
        account = self.daemon.accounts.get(state.account)
        if account is not None:
            self.dispatcher.check(state, account.settings)

    # -- systemd status ------------------------------------------------------------------------

    def status_line(self) -> str:
        total = len(self.daemon.accounts)
        return f"{total} account{'' if total == 1 else 's'}, {len(self._failing)} failing"

    def _set_failing(self, account: str, failing: bool) -> None:
        if (account in self._failing) is failing and self._status:
            # Nothing changes (a burst's healthy rotations): no lock to contend for.
            # A membership test is one atomic step; a change still takes the lock.
            return
        with self._status_lock:
            if failing:
                self._failing.add(account)
            else:
                self._failing.discard(account)
            line = self.status_line()
            if line == self._status:
                return
            self._status = line
        self.notifier.status(line)


class _LatestFirst:
    """Work per key on a few threads of its own; only the newest item of a key waits.

    A key waits once, with its newest item (an account's older state is not worth
    checking once a newer one is known), in the order the keys arrived.

    A hand-off costs the producer (a rotation's worker) one short lock and, only
    when a thread sleeps idle and no wake-up is on its way to one, one wake-up
    (a futex call and a thread switch). A thread that woke gathers for ``gather``
    seconds before it works, so the items of a burst (10,000 rotations) collect
    while it pauses or works and wake nobody: a few wake-ups a second at most,
    not one per rotation. An alert is checked at most ``gather`` seconds later.
    """

    def __init__(
        self,
        work: Callable[[Any], None],
        *,
        name: str,
        threads: int = 2,
        gather: float = _GATHER,
    ) -> None:
        self._work = work
        self._name = name
        self._max_threads = threads
        self._gather = gather
        self._threads: list[threading.Thread] = []
        self._pending: dict[str, Any] = {}
        self._cond = threading.Condition(threading.Lock())
        #: threads asleep on the condition and not notified yet: a put wakes one only then
        self._idle = 0
        #: the gathering pause; close() ends it
        self._waiter = Waiter()
        self._closed = False

    def put(self, key: str, item: Any) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending[key] = item  # a key already waiting keeps its place
            if self._idle:
                # counted down here, not by the woken thread: the puts that follow
                # before it runs see no idle thread and wake nobody
                self._idle -= 1
                self._cond.notify()
            elif len(self._threads) < self._max_threads:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._idle += 1
                    self._cond.wait()  # a put or close counted it out of _idle
                if self._closed:
                    return
            if not self._waiter.sleep(self._gather):
                return  # closed while gathering: what waits is dropped
            while taken := self._take():
                for key, item in taken:
                    if self._closed:
                        return  # what was taken and not begun is dropped, as what waits
                    try:
                        self._work(item)
                    except Exception as exc:  # a check must never end its thread
                        _log.error("alert check failed", account=key, error=repr(exc))

    def _take(self) -> list[tuple[str, Any]]:
        """The oldest waiting keys with their items, a few at a time (one lock for them,
        and the other thread takes the next few); empty when nothing waits or closed."""
        with self._cond:
            if self._closed:
                return []
            keys = list(itertools.islice(self._pending, _TAKEN))
            return [(key, self._pending.pop(key)) for key in keys]

    def close(self, timeout: float) -> None:
        """Drop what waits; give the items being worked on ``timeout`` s to finish."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._idle = 0
            self._cond.notify_all()
        self._waiter.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
