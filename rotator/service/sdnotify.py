"""systemd's sd_notify datagram protocol, in a few lines.

``$NOTIFY_SOCKET`` names a Unix datagram socket (a path, or ``@name`` for the
abstract namespace); each message is newline-separated ``KEY=VALUE`` lines.
Outside systemd the variable is unset and every call is a no-op. A failing
send is logged once and never stops the daemon.

With ``WatchdogSec=`` set, systemd exports ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``); :class:`Watchdog` pings ``WATCHDOG=1`` at half that
interval while the daemon's liveness check holds.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import structlog

__all__ = ["Notifier", "Watchdog"]

_log = structlog.get_logger("rotator.sdnotify")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._lock = threading.Lock()
        self._warned = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_interval: float | None = (
            int(usec) / 1_000_000 if usec.isdigit() and int(usec) > 0 and mine else None
        )

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, **fields: str) -> bool:
        """Send ``KEY=VALUE`` lines; True when a datagram left."""
        if not self._address:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with self._lock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                _log.warning("cannot notify systemd", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(READY="1", **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING="1", MONOTONIC_USEC=str(usec))

    def stopping(self) -> bool:
        return self.send(STOPPING="1")

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")


class Watchdog:
    """Ping ``WATCHDOG=1`` every half interval while ``alive()`` holds.

    When ``alive()`` turns false the pings stop and systemd restarts the service
    after ``WatchdogSec``: a wedged scheduler is not hidden by a healthy thread.
    """

    def __init__(
        self,
        notifier: Notifier,
        alive: Callable[[], bool],
        *,
        pause: Callable[[threading.Event, float], bool] | None = None,
    ) -> None:
        self._notifier = notifier
        self._alive = alive
        self._stop = threading.Event()
        #: waits between pings; True when stopped (tests pass one that counts)
        self._pause = pause or threading.Event.wait
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        interval = self._notifier.watchdog_interval
        if interval is None or not self._notifier.enabled:
            return False
        self._thread = threading.Thread(
            target=self._run, args=(interval / 2,), name="rotator-watchdog", daemon=True
        )
        self._thread.start()
        return True

    def _run(self, period: float) -> None:
        was_alive = True
        while True:
            try:
                alive = self._alive()
            except Exception:
                alive = False
            if alive:
                self._notifier.watchdog()
            elif was_alive:
                _log.error("not pinging the systemd watchdog: the daemon is not healthy")
            was_alive = alive
            if self._pause(self._stop, period):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
