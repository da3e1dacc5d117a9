"""The daemon's lifecycle: start, schedule, reload on SIGHUP, stop on SIGTERM.

One APScheduler 3.11 ``BackgroundScheduler`` over a bounded thread pool runs one
date job per account; each job rotates (or finds nothing to do) and schedules
the account's next run. At start every account's first run goes straight to the
pool (10,000 date jobs all due at once would first be added to the scheduler
one by one, each waking its thread, before the first one ran): the run reads the
stored state and only refreshes accounts whose token is missing or past its
refresh point; the others keep their stored schedule, so a restart does not
refresh every account. A 30-second tick keeps the scheduler's clock honest after
a suspend or a clock jump (overdue jobs then run once, at once), and bounds its
sleep: a next run due after the tick is added without waking it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import structlog

from rotator.backends.base import SecretStore, open_store
from rotator.config.models import Config, load_config
from rotator.errors import ConfigError, RotatorError
from rotator.http import HttpClients
from rotator.rotation.accounts import build_accounts
from rotator.rotation.rotator import Observer, Outcome, RotationResult, Rotator
from rotator.service.app import open_spool, open_stores, store_settings_of
from rotator.service.monitor import attach as attach_monitor

__all__ = ["Daemon"]

_log = structlog.get_logger("rotator.daemon")
_TICK = "__rotator_tick__"
#: the tick's interval: the scheduler looks at its jobs at least this often
_TICK_SECONDS = 30
_FALLBACK_RECHECK = timedelta(seconds=60)


def _pool_executor(pool: ThreadPoolExecutor) -> Any:
    """An APScheduler executor over ``pool``, which the daemon also submits first runs to."""
    from apscheduler.executors.pool import BasePoolExecutor

    class PoolExecutor(BasePoolExecutor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(pool)

    return PoolExecutor()


def _scheduler(**options: Any) -> Any:
    """A ``BackgroundScheduler`` that :meth:`add_job` can leave asleep.

    Every ``add_job`` wakes the scheduler's thread to look at its jobs again. A
    job due after the next tick does not need that: the thread looks at its jobs
    at least once per tick, and from then on waits for the new job too. Adding a
    rotation's next run (usually minutes away) then costs no thread hand-off, in
    a burst of 10,000 rotations as much as in the steady state.
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    class Scheduler(BackgroundScheduler):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            self._asleep = threading.local()
            super().__init__(**kwargs)

        def add_job_after_tick(self, *args: Any, **kwargs: Any) -> Any:
            """``add_job`` for a job due more than a tick from now: no wake-up."""
            self._asleep.on = True
            try:
                return self.add_job(*args, **kwargs)
            finally:
                self._asleep.on = False

        def wakeup(self) -> None:
            if not getattr(self._asleep, "on", False):
                super().wakeup()

    return Scheduler(**options)


class Daemon:
    """Runs the scheduler for one configuration file. Testable without signals."""

    def __init__(
        self,
        config_path: str,
        *,
        config: Config | None = None,
        observers: list[Observer] | None = None,
        rotator_factory: Callable[..., Rotator] = Rotator,
    ) -> None:
        self.config_path = config_path
        self.config = config or load_config(config_path)
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self._stop_reason = ""
        self._reload_pending = False
        self._in_flight = 0
        self._in_flight_done = threading.Condition()
        self.stores = open_stores(self.config)
        self.http = HttpClients()
        self.rotator = rotator_factory(
            accounts=build_accounts(self.config, self.stores),
            http=self.http,
            observers=list(observers or []),
            spool=open_spool(self.config),
        )
        self.scheduler: Any = None
        self._workers: ThreadPoolExecutor | None = None
        self.hooks_on_start: list[Callable[[Daemon], None]] = []
        self.hooks_on_reload: list[Callable[[Daemon], None]] = []
        self.hooks_on_stop: list[Callable[[Daemon], None]] = []
        #: around every reload, applied or refused (systemd's RELOADING=1 ... READY=1)
        self.hooks_before_reload: list[Callable[[Daemon], None]] = []
        self.hooks_after_reload: list[Callable[[Daemon], None]] = []
        # alerts, metrics and health, sd_notify: observes rotations, hooks the lifecycle
        self.monitor = attach_monitor(self)

    # -- scheduling ---------------------------------------------------------------------

    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerThreads

        self._workers = ThreadPoolExecutor(
            max_workers=self.config.server.workers, thread_name_prefix="rotator-worker"
        )
        self.scheduler = _scheduler(
            executors={
                "default": _pool_executor(self._workers),
                # The tick only wakes the scheduler; behind 10,000 queued rotations in
                # the default pool it would be skipped, with a warning, every 30 s.
                _TICK: SchedulerThreads(max_workers=1),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        replayed = self.rotator.replay_spool()
        if replayed:
            _log.info("replayed spooled grants", count=replayed)
        self.scheduler.start()
        self.scheduler.add_job(
            lambda: None, "interval", seconds=_TICK_SECONDS, id=_TICK, executor=_TICK
        )
        now = datetime.now(UTC)
        for name in self.rotator.accounts:
            self._workers.submit(self._first_run, name, now)
        self.ready.set()
        for hook in self.hooks_on_start:
            hook(self)
        _log.info(
            "started",
            accounts=len(self.rotator.accounts),
            stores=sorted(self.stores),
            config=self.config_path,
            workers=self.config.server.workers,
        )
        self._warn_insecure(self.config)

    def _schedule(self, name: str, when: datetime, *, retry_failed: bool = False) -> None:
        if self.stopping.is_set() or self.scheduler is None:
            return
        add = self.scheduler.add_job
        if when - datetime.now(UTC) > timedelta(seconds=_TICK_SECONDS + 1):
            add = self.scheduler.add_job_after_tick  # the tick wakes the scheduler in time
        add(
            self._job,
            "date",
            run_date=when,
            args=[name, retry_failed, when],
            id=name,
            name=name,
            replace_existing=True,
        )

    def _first_run(self, name: str, planned: datetime) -> None:
        try:
            self._job(name, planned=planned)
        except Exception as exc:  # a future's exception would go unseen
            _log.exception("first run crashed", account=name, error=repr(exc))

    def _job(self, name: str, retry_failed: bool = False, planned: datetime | None = None) -> None:
        if self.stopping.is_set() or name not in self.rotator.accounts:
            return
        with self._in_flight_done:
            self._in_flight += 1
        try:
            result = self.rotator.rotate(name, retry_failed=retry_failed)
        except Exception as exc:  # never let one account kill the worker
            _log.exception("rotation crashed", account=name, error=repr(exc))
            result = RotationResult(name, Outcome.TRANSIENT, None)
        finally:
            with self._in_flight_done:
                self._in_flight -= 1
                self._in_flight_done.notify_all()
        if planned is not None:
            # Planned vs done, for the benchmark's lateness figures (filtered out below debug).
            _log.debug(
                "job done",
                account=name,
                result=result.result,
                planned_at=planned.timestamp(),
                late_ms=round((datetime.now(UTC) - planned).total_seconds() * 1000),
                duration_ms=round(result.duration * 1000),
                sinks_written=result.sinks_written,
                sinks_unchanged=result.sinks_unchanged,
            )
        if name in self.rotator.accounts:
            self._schedule(name, result.next_run or datetime.now(UTC) + _FALLBACK_RECHECK)

    def trigger(self, name: str) -> None:
        """Run an account's job now (used by reload and tests)."""
        self._schedule(name, datetime.now(UTC))

    # -- reload ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the configuration; keep the running one if the new one is bad."""
        for hook in self.hooks_before_reload:
            hook(self)
        try:
            return self._reload()
        finally:
            for hook in self.hooks_after_reload:
                hook(self)

    def _reload(self) -> bool:
        opened: dict[str, SecretStore] = {}
        try:
            new_config = load_config(self.config_path)
            # Unchanged stores are kept (their login, pool and keep-alive carry on);
            # only new or changed ones are opened.
            new_stores: dict[str, SecretStore] = {}
            for name, settings in new_config.stores.items():
                if name in self.stores and self.config.stores.get(name) == settings:
                    new_stores[name] = self.stores[name]
                else:
                    opened[name] = new_stores[name] = open_store(name, settings)
            new_accounts = build_accounts(new_config, new_stores)
        except (ConfigError, RotatorError) as exc:
            for store in opened.values():
                store.close()
            _log.error("reload refused; keeping the running configuration", error=str(exc))
            return False
        old = self.config
        old_accounts = self.rotator.accounts
        retired = [s for name, s in self.stores.items() if new_stores.get(name) is not s]
        self.config = new_config
        self.stores = new_stores
        self.rotator.accounts = new_accounts
        if retired:
            # Rotations in flight may still hold them: close after the grace period.
            def close_retired() -> None:
                for store in retired:
                    store.close()

            grace = new_config.server.shutdown_grace.total_seconds()
            closer = threading.Timer(grace, close_retired)
            closer.daemon = True
            closer.start()
        now = datetime.now(UTC)
        removed = sorted(set(old_accounts) - set(new_accounts))
        added = sorted(set(new_accounts) - set(old_accounts))
        changed = sorted(
            n
            for n in set(new_accounts) & set(old_accounts)
            if new_config.accounts[n] != old.accounts[n]
            or store_settings_of(new_config, n) != store_settings_of(old, n)
        )
        for name in removed:
            if self.scheduler is not None and self.scheduler.get_job(name):
                self.scheduler.remove_job(name)
        for name in new_accounts:
            # A reload is the operator's "try again": failed accounts get one attempt.
            if name in added or name in changed:
                self._schedule(name, now, retry_failed=True)
            else:
                self._schedule_failed_retry(name, now)
        for hook in self.hooks_on_reload:
            hook(self)
        _log.info(
            "reloaded", added=added, removed=removed, changed=changed, accounts=len(new_accounts)
        )
        self._warn_insecure(new_config)
        return True

    def _schedule_failed_retry(self, name: str, now: datetime) -> None:
        try:
            state, _ = self.rotator.read_state(self.rotator.accounts[name])
        except RotatorError:
            return
        if state.failed:
            self._schedule(name, now, retry_failed=True)

    @staticmethod
    def _warn_insecure(config: Config) -> None:
        for name, account in config.accounts.items():
            if not account.tls_verify:
                _log.warning(
                    "TLS verification is off for this account",
                    account=name,
                    fix="set ca_bundle to the vendor's CA instead of tls_verify: false",
                )

    # -- stop -----------------------------------------------------------------------------

    def stop(self, reason: str = "requested") -> bool:
        """Stop scheduling; let rotations in flight finish within the grace period.

        Returns True when every rotation in flight finished in time.
        """
        if self.stopping.is_set():
            return True
        self.stopping.set()
        self.rotator.waiter.stop()  # a state write retry gives up its wait now (grant kept)
        _log.info("stopping", reason=reason)
        for hook in self.hooks_on_stop:
            hook(self)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        if self._workers is not None:
            # first runs not started yet (a stop during the start's burst) are dropped
            self._workers.shutdown(wait=False, cancel_futures=True)
        grace = self.config.server.shutdown_grace.total_seconds()
        deadline = threading.Event()
        timer = threading.Timer(grace, deadline.set)
        timer.daemon = True
        timer.start()
        with self._in_flight_done:
            while self._in_flight and not deadline.is_set():
                self._in_flight_done.wait(timeout=0.2)
            clean = self._in_flight == 0
        timer.cancel()
        if not clean:
            _log.warning(
                "rotations still in flight at the end of the grace period",
                in_flight=self._in_flight,
                grace_s=grace,
            )
        self.http.close()
        for store in self.stores.values():
            store.close()
        _log.info("stopped", clean=clean)
        return clean

    # -- the foreground loop ------------------------------------------------------------

    def run_forever(self) -> int:
        """Install signal handlers, start, wait for SIGTERM/SIGINT; reload on SIGHUP."""
        # The kernel may deliver a signal to any thread. CPython then only flags it for
        # the main thread, which must wake to run the handler: a main thread blocked on
        # a lock would sleep through it (a SIGTERM ignored until the next rotation
        # never came). The wakeup fd is written from C in whichever thread caught the
        # signal and wakes the main thread's read. The handlers only set attributes:
        # taking a lock in a handler can deadlock against the interrupted code.
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self._stop_reason = signal.Signals(signum).name

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self._reload_pending = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        try:
            self.start()
            while not self._stop_reason:
                if self._reload_pending:
                    self._reload_pending = False
                    self.reload()
                    continue
                os.read(wake_r, 512)  # returns once any signal arrived; handlers ran
        finally:
            signal.set_wakeup_fd(previous_fd)
            os.close(wake_r)
            os.close(wake_w)
        clean = self.stop(self._stop_reason)
        if not clean:
            # Worker threads would hold the interpreter open; the state is safe.
            os._exit(0)
        return 0
