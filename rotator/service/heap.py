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
APScheduler's own thread fires them (service/scheduling.py), so pause, resume,
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
from typing import Any

__all__ = ["AccountTimers", "freeze", "refreeze"]


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
