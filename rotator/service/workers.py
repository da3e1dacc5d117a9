"""The daemon's worker threads: a pool fed by one queue, with no Python lock per item.

:class:`concurrent.futures.ThreadPoolExecutor` hands each item over under two
process-wide locks and counts its idle threads with a semaphore (a Python lock and
condition) that every finished item releases. In the start's burst the 16 workers
each queue the next account as they finish one, so those locks are contended on
every rotation, and each contention is a futex call and a thread switch (the ninth
round's profile: 37% of the daemon's CPU went to switching threads). Here an item
is one put on a :class:`queue.SimpleQueue` (its lock is in C and held for no Python
code), a thread takes the next one with one get, and threads are started as items
come until the pool is full.

The contract is ThreadPoolExecutor's, as far as rotator uses it: :meth:`Workers.submit`
returns a :class:`~concurrent.futures.Future` (APScheduler's executor adds its
callbacks to it) and is refused with RuntimeError after :meth:`Workers.shutdown`;
``cancel_futures`` cancels what waits; a thread runs what it took to its end, and the
interpreter waits for the threads at exit, as for ThreadPoolExecutor's, so a rotation
in flight is never cut off between the vendor's answer and its spool write.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import structlog

from rotator.service.cpus import OneCpu

if TYPE_CHECKING:
    from rotator.config.models import ServerSettings

__all__ = ["Workers"]

_log = structlog.get_logger("rotator.daemon")

#: (its future, or None for :meth:`Workers.call`; the call; its arguments)
_Item = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any]]

#: every live worker thread's queue: at the interpreter's exit each gets its end marker
_QUEUES: weakref.WeakKeyDictionary[threading.Thread, queue.SimpleQueue[_Item | None]] = (
    weakref.WeakKeyDictionary()
)


class Workers:
    """At most ``max_workers`` threads running submitted calls in submission order."""

    def __init__(
        self,
        max_workers: int,
        *,
        thread_name_prefix: str = "rotator-worker",
        single_cpu: bool = False,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be 1 or more, not {max_workers}")
        self._max = max_workers
        #: the process's one CPU (rotator/service/cpus.py), looked at as items are taken,
        #: given back at the shutdown; None: off, or nothing to choose from
        self.cpu = OneCpu() if single_cpu else None
        if self.cpu is not None and not self.cpu.enabled:
            self.cpu = None
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # starting a thread and shutting down: not per item
        self._shutdown = False

    @classmethod
    def serving(cls, server: ServerSettings) -> Workers:
        """The daemon's pool, as the configuration's ``server`` says."""
        return cls(server.workers, single_cpu=server.single_cpu)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: Future[Any] = Future()
        self._queue.put((future, fn, args, kwargs))
        if len(self._threads) < self._max:
            self._start_thread()
        return future

    def call(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """:meth:`submit` without a future, for a caller that wants no answer (the
        daemon's runs catch their own failures; one that escapes is logged)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self._queue.put((None, fn, args, {}))
        if len(self._threads) < self._max:
            self._start_thread()

    def _start_thread(self) -> None:
        with self._lock:
            if self._shutdown or len(self._threads) >= self._max:
                return
            thread = threading.Thread(
                target=_work,
                args=(self._queue, self.cpu),
                name=f"{self._prefix}_{len(self._threads)}",
            )
            thread.start()
            self._threads.append(thread)
            _QUEUES[thread] = self._queue

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; cancel the waiting ones with ``cancel_futures``; each thread
        ends once the queue ahead of its end marker is done (``wait``: join them)."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None and item[0] is not None:
                        item[0].cancel()
            for _ in self._threads:
                self._queue.put(None)
            if self.cpu is not None:
                self.cpu.release()  # every thread back on every allowed CPU
        if wait:
            for thread in self._threads:
                thread.join()


def _work(work: queue.SimpleQueue[_Item | None], cpu: OneCpu | None) -> None:
    """One thread: the next item, to its end, until the end marker (no pool reference
    is held, so a pool nobody shuts down is still collected, and its threads end at exit).
    With ``cpu``, each item first gives it a chance to choose again."""
    while (item := work.get()) is not None:
        if cpu is not None:
            cpu.tick()
        future, fn, args, kwargs = item
        del item
        if future is None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # a thread must outlive any call
                _log.error("worker call failed", call=repr(fn), error=repr(exc))
        elif future.set_running_or_notify_cancel():
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # as ThreadPoolExecutor: the caller's future holds it
                future.set_exception(exc)
            else:
                future.set_result(result)
        del future, fn, args, kwargs


def _at_exit() -> None:
    """Before the interpreter joins its threads: every idle worker thread ends, a busy
    one after its item (which is never cut off: the threads are not daemons)."""
    for thread, work in list(_QUEUES.items()):
        if thread.is_alive():
            work.put(None)


# Called just before the interpreter joins the non-daemon threads (an atexit handler
# would run after that join, and wait for ever), as ThreadPoolExecutor registers its own.
threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
