"""The daemon's long-lived objects: each account's next run in one heap, and all of
them kept out of the garbage collector's full passes.

**Account timers.** Each account has one planned run at a time. As an
APScheduler date job that was a ``Job``, a ``DateTrigger``, its args and an
index entry (571 bytes an account) and ``add_job`` checked the callable's
signature with ``inspect`` each time (about 100 microseconds: 10 s of CPU for
the first runs of 100,000 accounts, competing with those runs for the GIL).
:class:`AccountTimers` is a heap of (time, sequence, name) with the planned
run's arguments in a dict by name: setting a run replaces the account's earlier
one (the stale heap entry is skipped when it comes up), removing one drops it.
APScheduler's own thread fires them (:func:`scheduler` below), so pause, resume,
the tick and shutdown are APScheduler's.

**The collector.**
The configuration, the accounts and their scheduled jobs live as long as the
process (or until a reload), and at 100,000 accounts they are about two million
objects: every full pass of the cyclic garbage collector walked them all, a
pause of one to several seconds with every thread stopped, which was the steady
state's worst lateness. They are moved out of the collector's sight
(``gc.freeze``) once built and again once every account had its first run;
a reload gives them back (``gc.unfreeze``), collects, and freezes the new set.
Memory is still freed by reference counting; only cycles among frozen objects
wait for the next reload.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

__all__ = ["AccountTimers", "PlannedRun", "freeze", "refreeze", "scheduler"]

_log = structlog.get_logger("rotator.daemon")


def freeze() -> None:
    """Move every object alive now out of the collector's sight (``gc.freeze``)."""
    gc.freeze()


def refreeze() -> None:
    """Give every frozen object back to the collector, collect, and freeze what lives."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class AccountTimers:
    """One planned run per account: (when, its arguments), the earliest first.

    ``when`` is a POSIX timestamp; thread-safe (workers set the next runs while the
    scheduler's thread takes the due ones).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (when, sequence, name); an entry whose sequence is not the account's is stale
        self._heap: list[tuple[float, int, str]] = []
        #: name -> (when, sequence, arguments)
        self._planned: dict[str, tuple[float, int, tuple[Any, ...]]] = {}
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._planned)

    def set(self, name: str, when: float, args: tuple[Any, ...]) -> None:
        """Plan ``name``'s run at ``when`` with ``args``, in place of any earlier plan."""
        with self._lock:
            sequence = next(self._sequence)
            self._planned[name] = (when, sequence, args)
            heapq.heappush(self._heap, (when, sequence, name))
            if len(self._heap) > 2 * len(self._planned) + 1024:
                self._compact()

    def get(self, name: str) -> tuple[float, tuple[Any, ...]] | None:
        """``name``'s planned (when, arguments), or None."""
        planned = self._planned.get(name)
        return None if planned is None else (planned[0], planned[2])

    def remove(self, name: str) -> bool:
        """Drop ``name``'s planned run; False when it had none."""
        with self._lock:
            return self._planned.pop(name, None) is not None

    def next_at(self) -> float | None:
        """When the earliest planned run is due (None: nothing planned)."""
        with self._lock:
            self._drop_stale()
            return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[Any, ...]]:
        """The arguments of every run due at ``now``, earliest first; they are no longer planned."""
        due: list[tuple[Any, ...]] = []
        with self._lock:
            heap, planned = self._heap, self._planned
            while heap and heap[0][0] <= now:
                _, sequence, name = heapq.heappop(heap)
                current = planned.get(name)
                if current is not None and current[1] == sequence:
                    del planned[name]
                    due.append(current[2])
        return due

    def clear(self) -> None:
        with self._lock:
            self._heap.clear()
            self._planned.clear()

    def _drop_stale(self) -> None:
        heap, planned = self._heap, self._planned
        while heap:
            _, sequence, name = heap[0]
            current = planned.get(name)
            if current is not None and current[1] == sequence:
                return
            heapq.heappop(heap)

    def _compact(self) -> None:
        # replaced and removed plans leave stale entries: rebuild once they outnumber the live
        self._heap = [(when, seq, name) for name, (when, seq, _) in self._planned.items()]
        heapq.heapify(self._heap)


def scheduler(*, fire: Callable[..., None] = lambda *args: None, **options: Any) -> Any:
    """A ``BackgroundScheduler`` that :meth:`add_job` can leave asleep, and that runs
    each account's planned run (:class:`~rotator.service.heap.AccountTimers`) by
    calling ``fire(*args)`` from its thread.

    Every ``add_job`` wakes the scheduler's thread to look at its jobs again. A
    job due after the next tick does not need that: the thread looks at its jobs
    at least once per tick, and from then on waits for the new job too. Adding a
    rotation's next run (usually minutes away) then costs no thread hand-off, in
    a burst of 10,000 rotations as much as in the steady state. The accounts'
    runs are not APScheduler jobs (the module says why), but ``get_job`` and
    ``remove_job`` answer for them by the account's name as they did.
    """
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

    class Scheduler(BackgroundScheduler):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            self._asleep = threading.local()
            self.timers = AccountTimers()
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

        def plan(self, name: str, when: datetime, args: tuple[Any, ...], *, wake: bool) -> None:
            """Run ``fire(*args)`` at ``when`` in place of ``name``'s planned run;
            ``wake``: the run is due before the next tick (the thread must look now)."""
            self.timers.set(name, when.timestamp(), args)
            if wake and self.state == STATE_RUNNING:
                super().wakeup()

        def get_job(self, job_id: str, jobstore: str | None = None) -> Any:
            planned = self.timers.get(job_id)
            if planned is None:
                return super().get_job(job_id, jobstore)
            return PlannedRun(job_id, datetime.fromtimestamp(planned[0], UTC), planned[1])

        def remove_job(self, job_id: str, jobstore: str | None = None) -> None:
            if not self.timers.remove(job_id):
                super().remove_job(job_id, jobstore)

        def _process_jobs(self) -> float | None:
            wait: float | None = super()._process_jobs()
            if self.state == STATE_PAUSED:
                return wait  # resume() wakes the thread: overdue runs then run once, at once
            for args in self.timers.pop_due(datetime.now(UTC).timestamp()):
                try:
                    fire(*args)
                except Exception as exc:  # one run that cannot start must not stop the rest
                    _log.error("a planned run could not start", error=repr(exc))
            next_at = self.timers.next_at()
            if next_at is not None:
                until = max(0.0, next_at - datetime.now(UTC).timestamp())
                wait = until if wait is None else min(wait, until)
            return wait

    return Scheduler(**options)


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """An account's planned run as ``Scheduler.get_job`` shows it (as a job's fields)."""

    id: str
    next_run_time: datetime
    args: tuple[Any, ...]
