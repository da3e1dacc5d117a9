"""What the daemon tells the outside world: alerts, metrics, health, systemd.

A :class:`Monitor` is attached to one :class:`~rotator.service.daemon.Daemon`:

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

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from rotator.alerts.channels import build_channels
from rotator.alerts.dispatch import Dispatcher, StoreAlertMemory
from rotator.errors import RotatorError
from rotator.service.sdnotify import Notifier, Watchdog

if TYPE_CHECKING:
    from rotator.backends.base import SecretStore
    from rotator.rotation.rotator import RotationResult
    from rotator.service.daemon import Daemon
    from rotator.service.metrics import HealthServer, Metrics, Probe
    from rotator.state import AccountState

__all__ = ["SWEEP_JOB", "Monitor"]

_log = structlog.get_logger("rotator.monitor")
SWEEP_JOB = "__rotator_alert_sweep__"
#: at stop, how long an alert being sent may take to finish (its claim is already saved)
_ALERT_STOP_WAIT = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Monitor:
    def __init__(
        self,
        daemon: Daemon,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.daemon = daemon
        self.clock = clock
        self.notifier = Notifier(environ)
        self.watchdog = Watchdog(self.notifier, self.alive)
        self.metrics: Metrics | None = None
        self.server: HealthServer | None = None
        self._failing: set[str] = set()
        self._accounts = set(daemon.rotator.accounts)
        self._status = ""
        self._status_lock = threading.Lock()
        self._checks = _LatestFirst(self._check, name="rotator-alerts")
        self.dispatcher = self._dispatcher()
        self._listen = daemon.config.server.listen
        if self._listen:
            # Bound now, so a taken port fails the start before anything runs.
            from rotator.service.metrics import CachedProbe, HealthServer, Metrics

            self.metrics = Metrics()
            self.server = HealthServer(
                self._listen,
                self.metrics,
                healthz=CachedProbe(self._healthz, ttl=2),
                readyz=CachedProbe(self._readyz, ttl=10),
            )

    def _dispatcher(self) -> Dispatcher:
        config = self.daemon.config
        return Dispatcher(
            alerts=config.alerts,
            channels=build_channels(config.alerts.channels),
            memory=StoreAlertMemory(self._state_store),
            clock=self._now,
            # pauses between attempts of a failing channel end when the daemon stops
            sleep=self.daemon.stopping.wait,
            on_sent=self._alert_sent,
        )

    def _now(self) -> datetime:
        return self.clock()  # looked up on each call: tests move the monitor's clock

    def _state_store(self, account: str) -> SecretStore:
        return self.daemon.rotator.accounts[account].state_store

    def _alert_sent(self, channel: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_sent(channel, kind)

    # -- liveness and readiness ----------------------------------------------------------

    def alive(self) -> bool:
        scheduler = self.daemon.scheduler
        thread = getattr(scheduler, "_thread", None)
        return bool(
            scheduler is not None
            and scheduler.running
            and not self.daemon.stopping.is_set()
            and (thread is None or thread.is_alive())
        )

    def _healthz(self) -> Probe:
        from rotator.service.metrics import Probe

        if self.alive():
            return Probe(True, "scheduler running")
        return Probe(False, "stopping" if self.daemon.stopping.is_set() else "scheduler stopped")

    def _readyz(self) -> Probe:
        from rotator.backends.base import ValidationStatus
        from rotator.service.metrics import Probe

        if not self.daemon.ready.is_set():
            return Probe(False, "starting")
        problems = []
        for name, store in sorted(self.daemon.stores.items()):
            validation = store.validate()
            if validation.status is ValidationStatus.ERROR:
                problems.append(f"store {name}: {validation.reason}")
        if problems:
            return Probe(False, "; ".join(problems))
        return Probe(True, f"{len(self.daemon.rotator.accounts)} accounts, stores validated")

    # -- lifecycle hooks (Daemon.hooks_on_*) -------------------------------------------------

    def on_start(self, daemon: Daemon) -> None:
        if self.server is not None:
            self.server.start()
        self._schedule_sweep(daemon, first=self.clock() + daemon.config.alerts.sweep)
        self.notifier.ready(self.status_line())
        self.watchdog.start()

    def before_reload(self, daemon: Daemon) -> None:
        self.notifier.reloading()

    def after_reload(self, daemon: Daemon) -> None:
        """After every reload, applied or refused: systemd waits for READY=1."""
        self.dispatcher = self._dispatcher()
        if daemon.config.server.listen != self._listen:
            _log.warning(
                "server.listen changed; it takes effect at the next restart",
                listening=self._listen,
                configured=daemon.config.server.listen,
            )
        accounts = set(daemon.rotator.accounts)
        for name in self._accounts - accounts:
            self._failing.discard(name)
            if self.metrics is not None:
                self.metrics.forget(name)
        self._accounts = accounts
        self._schedule_sweep(daemon)
        self.notifier.ready(self.status_line())

    def on_stop(self, daemon: Daemon) -> None:
        self.notifier.stopping()
        self.watchdog.stop()
        self._checks.close(timeout=_ALERT_STOP_WAIT)
        if self.server is not None:
            self.server.stop()

    def _schedule_sweep(self, daemon: Daemon, first: datetime | None = None) -> None:
        if daemon.scheduler is None:
            return
        daemon.scheduler.add_job(
            self.sweep,
            "interval",
            seconds=daemon.config.alerts.sweep.total_seconds(),
            id=SWEEP_JOB,
            name="alert sweep",
            next_run_time=first or self.clock(),
            replace_existing=True,
        )

    # -- the observer ------------------------------------------------------------------------

    def after_rotation(self, result: RotationResult) -> None:
        if self.metrics is not None:
            self.metrics.observe_rotation(result.account, result.result, result.duration)
        self._set_failing(result.account, result.result.failing)
        state = result.state
        account = self.daemon.rotator.accounts.get(result.account)
        if state is None or account is None:
            return
        if self.metrics is not None:
            self.metrics.observe_state(state, self.clock())
        if self.dispatcher.settled(state, account.settings):
            return  # nothing sent, nothing to send: no store read, no hand-off
        self._checks.put(state.account, state)

    def sweep(self) -> None:
        """Every account: read the state, refresh the gauges, check alerts."""
        for name, account in list(self.daemon.rotator.accounts.items()):
            if self.daemon.stopping.is_set():
                return
            try:
                state, _ = self.daemon.rotator.read_state(account)
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
        account = self.daemon.rotator.accounts.get(state.account)
        if account is not None:
            self.dispatcher.check(state, account.settings)

    # -- systemd status ------------------------------------------------------------------------

    def status_line(self) -> str:
        total = len(self.daemon.rotator.accounts)
        return f"{total} account{'' if total == 1 else 's'}, {len(self._failing)} failing"

    def _set_failing(self, account: str, failing: bool) -> None:
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

    What a thread pool's ``submit`` costs per item (a future, a semaphore, a
    wake-up) is paid here only by an item that finds a thread idle: in a burst of
    10,000 rotations the checkers stay busy and take the next item without being
    woken. A key waits once, with its newest item (an account's older state is not
    worth checking once a newer one is known), in the order the keys arrived.
    """

    def __init__(self, work: Callable[[Any], None], *, name: str, threads: int = 2) -> None:
        self._work = work
        self._name = name
        self._max_threads = threads
        self._threads: list[threading.Thread] = []
        self._pending: dict[str, Any] = {}
        self._cond = threading.Condition(threading.Lock())
        self._idle = 0
        self._closed = False

    def put(self, key: str, item: Any) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending[key] = item  # a key already waiting keeps its place
            if self._idle:
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
                    try:
                        self._cond.wait()
                    finally:
                        self._idle -= 1
                if self._closed:
                    return
                key = next(iter(self._pending))
                item = self._pending.pop(key)
            try:
                self._work(item)
            except Exception as exc:  # a check must never end its thread
                _log.error("alert check failed", account=key, error=repr(exc))

    def close(self, timeout: float) -> None:
        """Drop what waits; give the items being worked on ``timeout`` s to finish."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def attach(daemon: Daemon, **kwargs: Any) -> Monitor:
    """Create a monitor and hook it into the daemon's rotation and lifecycle."""
    monitor = Monitor(daemon, **kwargs)
    daemon.rotator.observers.append(monitor)
    daemon.hooks_on_start.append(monitor.on_start)
    daemon.hooks_before_reload.append(monitor.before_reload)
    daemon.hooks_after_reload.append(monitor.after_reload)
    daemon.hooks_on_stop.append(monitor.on_stop)
    return monitor
