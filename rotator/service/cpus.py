"""One CPU for the daemon at a time: the least busy one the process may use.

CPython runs one thread's Python at a time (the interpreter lock). Every system
call a worker makes (an ``open``, an ``fsync``, a socket read) releases that lock,
and another runnable worker takes it. When the workers are spread over several
CPUs, each release wakes a thread on another CPU, which often finds the lock taken
back and sleeps again; in a burst (every account due at once, a fast store and a
fast vendor) that switching was over a third of the daemon's CPU. On one CPU a
woken worker waits its turn instead: the same 10,000-account burst took 40% less
CPU and a third less time (bench/results.md, eleventh round). Python gains
nothing from a second CPU for these threads; the kernel's own work for their
calls (the disk's, the network's) still runs wherever the kernel puts it.

So the daemon's threads share one CPU: of the CPUs the process may use
(``sched_getaffinity``, so a cpuset, ``taskset`` or systemd's ``CPUAffinity=`` is
respected), the one whose other work (``/proc/stat``, less the daemon's own CPU
time while it ran there) was least over the last interval. It is looked at again
when a worker takes an item and the last look is about 5 s old (a fifth more or
less, at random, so replicas on one host do not look at the same moment), so a
busy neighbour holds the daemon on its CPU for 6 s of work at most; an idle
daemon looks at nothing. Every thread is put there, not only the workers: they all take the same
interpreter lock, and a thread started later inherits its parent's CPU. At the
stop every thread goes back to every allowed CPU.

``server.single_cpu: false`` turns it off. It is off by itself where it can do
nothing: one allowed CPU, no ``sched_setaffinity`` (not Linux), no readable
``/proc/stat``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable

import structlog

__all__ = ["INTERVAL", "JITTER", "MARGIN", "OneCpu", "allowed_cpus", "read_busy"]

_log = structlog.get_logger("rotator.daemon")

#: seconds between two looks at the CPUs' load
INTERVAL = 5.0
#: each interval is this share longer or shorter, at random, and ties go to a CPU that
#: depends on the process id: rotators sharing a host (replicas) neither look at the
#: same moment nor all pick the same idle CPU
JITTER = 0.2
#: another CPU is chosen only if its other work was less by this share of the interval
#: (two CPUs about equally busy do not trade the workers back and forth)
MARGIN = 0.2


def allowed_cpus() -> frozenset[int]:
    """The CPUs this process may run on (its main thread's set; empty: not knowable)."""
    if not hasattr(os, "sched_getaffinity"):
        return frozenset()
    try:
        return frozenset(os.sched_getaffinity(os.getpid()))
    except OSError:
        return frozenset()


def read_busy(path: str = "/proc/stat") -> dict[int, float]:
    """Each CPU's busy seconds since boot: all but idle and I/O wait (steal counts as
    busy: the hypervisor gave that time to someone else)."""
    tick = os.sysconf("SC_CLK_TCK")
    busy: dict[int, float] = {}
    with open(path, "rb") as stat:
        for line in stat:
            if not line.startswith(b"cpu"):
                if busy:
                    break  # the per-CPU lines come first, together
                continue
            fields = line.split()
            if fields[0] == b"cpu":
                continue  # the total over all CPUs
            values = [int(value) for value in fields[1:9]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            busy[int(fields[0][3:])] = (sum(values) - idle) / tick
    return busy


def _nowhere(task: int, cpus: Iterable[int]) -> None:
    """Where threads cannot be placed (not Linux): never called, as OneCpu is off."""


def _tasks() -> list[int]:
    """This process's threads (their kernel task ids)."""
    return [int(task) for task in os.listdir("/proc/self/task")]


class OneCpu:
    """Which CPU the daemon runs on now, and every thread of it put there.

    ``busy``, ``own``, ``clock``, ``tasks`` and ``place`` are the CPUs' busy seconds,
    the process's CPU seconds, a monotonic clock, the process's threads and
    ``sched_setaffinity``; tests give their own.
    """

    def __init__(
        self,
        allowed: Iterable[int] | None = None,
        *,
        busy: Callable[[], dict[int, float]] = read_busy,
        own: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        tasks: Callable[[], list[int]] = _tasks,
        place: Callable[[int, Iterable[int]], None] | None = None,
        interval: float = INTERVAL,
        jitter: float = JITTER,
        first: int | None = None,
    ) -> None:
        self._allowed = sorted(allowed_cpus() if allowed is None else allowed)
        self._busy = busy
        self._own = own
        self._clock = clock
        self._tasks = tasks
        known = place if place is not None else getattr(os, "sched_setaffinity", None)
        self._place: Callable[[int, Iterable[int]], None] = known or _nowhere
        self._interval = interval
        self._jitter = jitter
        self._random = random.Random()  # noqa: S311 (timing, not secrets; not the global one)
        #: ties go to the first CPU from this position on (the process id by default)
        self._first = os.getpid() if first is None else first
        self._lock = threading.Lock()  # one thread chooses; the others go on
        self._due = 0.0
        #: the CPU the daemon runs on (None: wherever the kernel puts it)
        self.cpu: int | None = None
        self.enabled = len(self._allowed) > 1 and known is not None
        self._sample: tuple[float, dict[int, float], float] = (0.0, {}, 0.0)
        if self.enabled:
            try:
                self._sample = (clock(), busy(), own())
            except (OSError, ValueError):
                self.enabled = False

    @property
    def allowed(self) -> list[int]:
        """The CPUs the process may use, as they were before it chose one."""
        return list(self._allowed)

    def tick(self) -> None:
        """Called as a worker takes an item: once the interval is over, the CPUs are
        looked at again and every thread is put on the chosen one (threads started
        since were put there by their parent, or are put there now)."""
        if self.enabled and self._clock() >= self._due and self._lock.acquire(blocking=False):
            try:
                self._choose()
                self._put_all(self.cpu)
            finally:
                self._lock.release()

    def release(self) -> None:
        """Every thread back on every allowed CPU, and no more choices (the daemon's stop)."""
        with self._lock:
            if self.cpu is not None:
                self.cpu = None
                self._put_all(None)
            self.enabled = False

    def _put_all(self, cpu: int | None) -> None:
        where = (cpu,) if cpu is not None else self._allowed
        try:
            tasks = self._tasks()
        except OSError:
            tasks = [0]  # no /proc: this thread at least
        for task in tasks:
            try:
                self._place(task, where)
            except ProcessLookupError:
                continue  # a thread that ended meanwhile
            except OSError:
                # the CPU left the process's set (a cpuset changed under it): every
                # thread goes back to what the kernel allows now, and it is chosen again
                self._widen(tasks)
                return

    def _widen(self, tasks: list[int]) -> None:
        everything = range(os.cpu_count() or 1)  # the kernel narrows it to the cpuset
        for task in tasks:
            try:
                self._place(task, everything)
            except OSError:
                continue
        self._allowed = sorted(allowed_cpus())
        self.enabled = len(self._allowed) > 1
        self.cpu = None
        self._due = 0.0

    def _choose(self) -> None:
        now = self._clock()
        self._due = now + self._interval * self._random.uniform(1 - self._jitter, 1 + self._jitter)
        try:
            busy, own = self._busy(), self._own()
        except (OSError, ValueError):
            # /proc/stat went away (a changed mount namespace): the daemon goes back to
            # every allowed CPU, and stays there
            self.enabled = False
            self.cpu = None
            return
        then, before, own_before = self._sample
        self._sample = (now, busy, own)
        others: dict[int, float] = {}
        for cpu in self._allowed:
            if cpu in busy and cpu in before:
                others[cpu] = busy[cpu] - before[cpu]
        if not others:
            return
        if self.cpu in others:
            # the daemon's own time was spent on its CPU: it is not a neighbour's
            others[self.cpu] = max(0.0, others[self.cpu] - (own - own_before))
        ring = len(self._allowed)
        order = {cpu: (i - self._first) % ring for i, cpu in enumerate(self._allowed)}
        best = min(others, key=lambda cpu: (others[cpu], order[cpu]))
        margin = MARGIN * max(now - then, 0.0)
        if self.cpu not in others or others[best] < others[self.cpu] - margin:
            if best != self.cpu:
                _log.debug("moved to another cpu", cpu=best, allowed=len(self._allowed))
            self.cpu = best
