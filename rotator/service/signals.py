"""The daemon in the foreground: signals in, a start, reloads, a stop, an exit code.

The kernel may deliver a signal to any thread. CPython then only flags it for
the main thread, which must wake to run the handler: a main thread blocked on a
lock would sleep through it (a SIGTERM ignored until the next rotation never
came). The wakeup fd is written from C in whichever thread caught the signal and
wakes the main thread's read. The handlers only set flags: taking a lock in a
handler can deadlock against the interrupted code.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Protocol

import structlog

from rotator.errors import RotatorError

__all__ = ["Foreground", "refusal_reason", "run_in_foreground"]

_log = structlog.get_logger("rotator.daemon")
#: the longest reason a refused reload or a failed hook logs
_REASON_MAX = 300


class Foreground(Protocol):
    """What the foreground loop drives (the daemon)."""

    def start(self) -> None: ...

    def reload(self) -> bool: ...

    def stop(self, reason: str = "requested") -> bool: ...


class _Flags:
    """What the signal handlers saw (set in a handler, read by the main loop)."""

    def __init__(self) -> None:
        self.stop_reason = ""
        self.reload_pending = False

    def on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_reason = signal.Signals(signum).name

    def on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_pending = True


def run_in_foreground(daemon: Foreground) -> int:
    """Install signal handlers, start, wait for SIGTERM/SIGINT; reload on SIGHUP."""
    flags = _Flags()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, flags.on_stop)
    signal.signal(signal.SIGINT, flags.on_stop)
    signal.signal(signal.SIGHUP, flags.on_hup)
    try:
        daemon.start()
        while not flags.stop_reason:
            if flags.reload_pending:
                flags.reload_pending = False
                try:
                    daemon.reload()
                except Exception as exc:  # a SIGHUP must never end the daemon
                    _log.error("reload failed", error=refusal_reason(exc))
                continue
            os.read(wake_r, 512)  # returns once any signal arrived; handlers ran
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(wake_r)
        os.close(wake_w)
    clean = daemon.stop(flags.stop_reason)
    if not clean:
        # Worker threads would hold the interpreter open; the state is safe.
        os._exit(0)
    return 0


def refusal_reason(exc: BaseException) -> str:
    """Why a reload was refused, one bounded line.

    Rotator's own errors carry a message written for the operator (and scrubbed
    where they are raised); anything else (an ``OverflowError`` from
    ``timeout: .inf``, a ``RecursionError`` from deep nesting) is named by its
    type and its first line, since its text was never reviewed for secrets
    beyond that.
    """
    if isinstance(exc, RotatorError):
        text = str(exc)
    else:
        first = str(exc).splitlines()[0] if str(exc) else ""
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    text = " ".join(text.split())
    if len(text) > _REASON_MAX:
        text = text[: _REASON_MAX - 1] + "\u2026"
    return text
