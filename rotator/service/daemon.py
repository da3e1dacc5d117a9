"""The daemon's lifecycle: start, schedule, reload on SIGHUP, stop on SIGTERM.

One APScheduler 3.11 ``BackgroundScheduler`` fires each account's planned run
(one heap of them, service/heap.py) into a bounded thread pool; each run rotates
(or finds nothing to do) and plans the account's next run. At start every
account's first run goes straight to the pool (not 10,000 planned runs all due
at once, each waking the scheduler's thread, before the first one ran): the run reads the
stored state and only refreshes accounts whose token is missing or past its
refresh point; the others keep their stored schedule, so a restart does not
refresh every account. A 30-second tick keeps the scheduler's clock honest after
a suspend or a clock jump (overdue jobs then run once, at once), and bounds its
sleep: a next run due after the tick is added without waking it.

This module is the lifecycle only: :mod:`rotator.service.app` builds the parts
(stores, spool, accounts, rotator, monitor) and hands them in, with the function
that rebuilds them on SIGHUP. A reload that fails for any reason keeps the
running configuration. Long-lived objects skip the collector's full passes (heap.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from rotator.backends.base import SecretStore
from rotator.config import Config
from rotator.errors import RotatorError
from rotator.http import HttpClients
from rotator.rotation.accounts import Account, every_account, owned_by
from rotator.rotation.rotator import Outcome, RotationResult, Rotator
from rotator.service import heap
from rotator.service.heap import scheduler
from rotator.service.scheduling import (
    StartPlan,
    configure_politeness,
    paused_host,
    pool_executor,
)
from rotator.service.signals import refusal_reason, run_in_foreground
from rotator.service.workers import Workers
from rotator.state import AccountState

__all__ = ["Daemon", "ReloadRefused", "Rewire", "Rewired", "refusal_reason"]

_log = structlog.get_logger("rotator.daemon")
_lines = logging.getLogger("rotator.daemon")  # what a line reaches (logs._Emitter asks it too)
_TICK = "__rotator_tick__"
#: the tick's interval: the scheduler looks at its jobs at least this often
_TICK_SECONDS = 30
_FALLBACK_RECHECK = timedelta(seconds=60)
#: when a job was planned (lateness counts from it); None: when it is scheduled for
Planned = datetime | None


class ReloadRefused(RotatorError):
    """A new configuration cannot be used; the message says why, scrubbed and bounded."""


@dataclass(frozen=True, slots=True)
class Rewired:
    """The parts built from a new configuration; ``opened`` are the stores it opened."""

    config: Config
    stores: dict[str, SecretStore]
    accounts: Mapping[str, Account]
    opened: tuple[SecretStore, ...]
    #: accounts whose settings or stores changed (rotated at once, failed ones retried)
    changed: tuple[str, ...]


class Rewire(Protocol):
    """(config path, running config, running stores, running accounts) -> the new parts.

    Raises ReloadRefused. Unchanged accounts come back as the running objects.
    """

    def __call__(
        self,
        config_path: str,
        running: Config,
        running_stores: Mapping[str, SecretStore],
        *,
        running_accounts: Mapping[str, Account] | None = None,
    ) -> Rewired: ...


class Daemon:
    """Runs the scheduler for one configuration file. Testable without signals."""

    def __init__(
        self,
        config_path: str,
        *,
        config: Config,
        stores: dict[str, SecretStore],
        rotator: Rotator,
        http: HttpClients,
        rewire: Rewire,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.ready = threading.Event()
        self.stopping = threading.Event()
        #: a token per run in flight: set.add/discard are atomic, so a run takes no lock
        #: (16 workers contending for one was a thread switch per run); stop() waits below
        self._in_flight: set[object] = set()
        self._in_flight_done = threading.Condition()
        self.stores = stores
        self.http = http
        self.rotator = rotator
        self._rewire = rewire
        self.owns: Callable[[str], bool] = every_account  # a replica's share (coordination)
        self.scheduler: Any = None
        self._workers: Workers | None = None
        self.hooks_on_start: list[Callable[[], None]] = []
        self.hooks_on_reload: list[Callable[[], None]] = []
        self.hooks_on_stop: list[Callable[[], None]] = []
        #: at stop, once the rotations in flight are done and before the stores close
        self.hooks_on_drained: list[Callable[[], None]] = []
        #: around every reload, applied or refused (systemd's RELOADING=1 ... READY=1)
        self.hooks_before_reload: list[Callable[[], None]] = []
        self.hooks_after_reload: list[Callable[[], None]] = []

    # -- what the monitor sees (rotator.service.monitor.Supervised) -------------------------

    @property
    def accounts(self) -> Mapping[str, Account]:
        return self.rotator.accounts

    def read_state(self, account: Account) -> tuple[AccountState, Any]:
        return self.rotator.read_state(account)

    def alive(self) -> bool:
        scheduler = self.scheduler
        thread = getattr(scheduler, "_thread", None)
        return bool(
            scheduler is not None
            and scheduler.running
            and not self.stopping.is_set()
            and (thread is None or thread.is_alive())
        )

    def every(
        self, job_id: str, func: Callable[[], None], period: timedelta, first: datetime
    ) -> bool:
        if self.scheduler is None:
            return False
        self.scheduler.add_job(
            func,
            "interval",
            seconds=period.total_seconds(),
            id=job_id,
            name=job_id,
            next_run_time=first,
            replace_existing=True,
        )
        return True

    # -- scheduling ---------------------------------------------------------------------

    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerThreads

        self._workers = Workers.serving(self.config.server)
        self.scheduler = scheduler(
            fire=self._fire,
            executors={
                "default": pool_executor(self._workers),
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
        configure_politeness(self.http.politeness, self.config, self.rotator.waiter)
        owned = owned_by(lambda: self.rotator.accounts, self.owns)
        heap.freeze()  # the config (and accounts built); the rest after the first runs
        self.start_plan = StartPlan(
            owned, self.http.politeness, self._job, self._schedule, then=heap.freeze
        )
        self.start_plan.start(self._workers)
        self.ready.set()
        for hook in self.hooks_on_start:
            hook()
        _log.info(
            "started",
            accounts=len(self.rotator.accounts),
            stores=sorted(self.stores),
            config=self.config_path,
            workers=self.config.server.workers,
        )
        _warn_insecure(self.config)

    def _schedule(
        self, name: str, when: datetime, *, retry_failed: bool = False, planned: Planned = None
    ) -> None:
        if self.stopping.is_set() or self.scheduler is None or not self.owns(name):
            return
        soon = when - datetime.now(UTC) <= timedelta(seconds=_TICK_SECONDS + 1)  # or: the tick
        self.scheduler.plan(name, when, (name, retry_failed, planned or when), wake=soon)

    def _fire(self, name: str, retry_failed: bool, planned: datetime) -> None:
        """The scheduler's thread: an account's planned run is due, to the pool with it."""
        if self._workers is not None and not self.stopping.is_set():
            self._workers.call(self._planned_run, name, retry_failed, planned)

    def _planned_run(self, name: str, retry_failed: bool, planned: datetime) -> None:
        try:
            self._job(name, retry_failed, planned)
        except Exception as exc:  # a future's exception would go unseen
            _log.exception("job crashed", account=name, error=repr(exc))

    def _job(self, name: str, retry_failed: bool = False, planned: datetime | None = None) -> None:
        if self.stopping.is_set() or name not in self.rotator.accounts or not self.owns(name):
            return
        if (later := paused_host(self.http.politeness, self.rotator.accounts[name])) is not None:
            self._schedule(name, later, retry_failed=retry_failed, planned=planned)
            return
        self._in_flight.add(run := object())
        try:
            result = self.rotator.rotate(name, retry_failed=retry_failed)
        except Exception as exc:  # never let one account kill the worker
            _log.exception("rotation crashed", account=name, error=repr(exc))
            result = RotationResult(name, Outcome.TRANSIENT, None)
        finally:
            self._in_flight.discard(run)
            # discarded before the look: a stop that sets the flag later finds it gone
            if self.stopping.is_set():
                with self._in_flight_done:
                    self._in_flight_done.notify_all()
        if planned is not None and _lines.isEnabledFor(logging.DEBUG):
            # Planned vs done, for the benchmark's lateness figures (not even built below debug).
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
        """Run an account's job now (used by reload, a replica's new share, and tests)."""
        self._schedule(name, datetime.now(UTC))

    # -- reload ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the configuration; keep the running one if the new one fails at all."""
        _call_hooks(self.hooks_before_reload, "before reload")
        try:
            return self._reload()
        finally:
            _call_hooks(self.hooks_after_reload, "after reload")

    def _reload(self) -> bool:
        try:
            new = self._rewire(
                self.config_path, self.config, self.stores, running_accounts=self.rotator.accounts
            )
        except Exception as exc:  # any failure at all: the running configuration stays
            _log.error(
                "reload refused; keeping the running configuration", error=refusal_reason(exc)
            )
            return False
        old_accounts = self.rotator.accounts
        retired = [s for name, s in self.stores.items() if new.stores.get(name) is not s]
        self.config = new.config
        self.stores = new.stores
        self.rotator.accounts = new.accounts
        configure_politeness(self.http.politeness, new.config, self.rotator.waiter)
        if retired:  # rotations in flight may still hold them: closed after the grace period
            _close_later(retired, new.config.server.shutdown_grace.total_seconds())
        now = datetime.now(UTC)
        removed = sorted(set(old_accounts) - set(new.accounts))
        added = sorted(set(new.accounts) - set(old_accounts))
        changed = sorted(new.changed)
        for name in removed if self.scheduler is not None else ():
            with contextlib.suppress(LookupError):  # no get_job() first: a date job may fire
                self.scheduler.remove_job(name)
        for name in filter(self.owns, new.accounts):
            # A reload is the operator's "try again": failed accounts get one attempt.
            if name in added or name in changed:
                self._schedule(name, now, retry_failed=True)
            else:
                self._schedule_failed_retry(name, now)
        _call_hooks(self.hooks_on_reload, "on reload")
        heap.refreeze()  # the old configuration's objects collectable, the new ones frozen
        _log.info(
            "reloaded", added=added, removed=removed, changed=changed, accounts=len(new.accounts)
        )
        _warn_insecure(new.config)
        return True

    def _schedule_failed_retry(self, name: str, now: datetime) -> None:
        try:
            state, _ = self.rotator.read_state(self.rotator.accounts[name])
        except Exception:  # unreadable now: its own job or the next reload looks again
            return
        if state.failed:
            self._schedule(name, now, retry_failed=True)

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
        _call_hooks(self.hooks_on_stop, "on stop")
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
            clean = not self._in_flight
        timer.cancel()
        if not clean:
            _log.warning(
                "rotations still in flight at the end of the grace period",
                in_flight=len(self._in_flight),
                grace_s=grace,
            )
        _call_hooks(self.hooks_on_drained, "drained")
        self.http.close()
        for store in self.stores.values():
            store.close()
        _log.info("stopped", clean=clean)
        return clean

    # -- the foreground loop ------------------------------------------------------------

    def run_forever(self) -> int:
        """Start, then serve signals until SIGTERM/SIGINT (reload on SIGHUP); the exit code."""
        return run_in_foreground(self)


def _close_later(stores: list[SecretStore], grace: float) -> None:
    def close() -> None:
        for store in stores:
            store.close()

    closer = threading.Timer(grace, close)
    closer.daemon = True
    closer.start()


def _warn_insecure(config: Config) -> None:
    for pattern in config.unmatched_includes:
        _log.warning(
            "include pattern matches no file", pattern=pattern, accounts=len(config.accounts)
        )
    for name, account in config.accounts.items():
        if not account.tls_verify:
            _log.warning(
                "TLS verification is off for this account",
                account=name,
                fix="set ca_bundle to the vendor's CA instead of tls_verify: false",
            )


def _call_hooks(hooks: list[Callable[[], None]], stage: str) -> None:
    """Run every hook; one that fails is logged and must not end a reload or a stop."""
    for hook in hooks:
        try:
            hook()
        except Exception as exc:
            _log.error("lifecycle hook failed", stage=stage, error=refusal_reason(exc))
