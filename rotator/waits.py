"""The one seam every wait of rotator goes through.

A rotation that retries a state write, an alert channel that backs off, a
command that waits for another worker's lease: each waits with a
:class:`Waiter`, never with ``time.sleep``. A waiter's stop event ends every
wait on it at once (the daemon sets it on SIGTERM, so a retry never holds up
the shutdown), and :func:`set_testing` makes every wait return immediately, as
stamina's ``set_testing()`` does for its backoff, so tests never sleep.

::

    waiter = Waiter()            # or Waiter(daemon_stop_event)
    if not waiter.sleep(2.0):    # False: stopped, give up the retry loop
        return
"""

from __future__ import annotations

import threading

__all__ = ["Waiter", "is_testing", "set_testing"]

_testing = False


def set_testing(testing: bool = True) -> None:
    """Make every :meth:`Waiter.sleep` return at once (tests); ``False`` restores waiting."""
    global _testing  # noqa: PLW0603 - the switch is process-wide on purpose, as stamina's
    _testing = testing


def is_testing() -> bool:
    return _testing


class Waiter:
    """Waits that a stop event interrupts. Thread-safe; share one per process part."""

    __slots__ = ("stop_event",)

    def __init__(self, stop_event: threading.Event | None = None) -> None:
        self.stop_event = stop_event if stop_event is not None else threading.Event()

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; True when the time passed, False when stopped (at once)."""
        if self.stop_event.is_set():
            return False
        if _testing or seconds <= 0:
            return True
        return not self.stop_event.wait(seconds)

    def stop(self) -> None:
        """End every wait on this waiter now and refuse the later ones."""
        self.stop_event.set()

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()
