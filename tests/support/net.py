"""The suite's one free port and one wait: loopback servers and conditions polled with a deadline.

Every test that starts a server asks :func:`free_port`; every test that waits for
something another process or thread does polls it with :func:`wait_until`, which
fails the same way everywhere (``AssertionError`` naming what it waited for).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

__all__ = ["LoopbackHTTPServer", "free_port", "wait_until"]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 30.0,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` (from 10 ms apart, backing off to 200 ms) until it returns a true
    value, and return that value; ``AssertionError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-request (a test refusing a compression bomb, a
    timeout) is expected here: no traceback on the test's output for it."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class LoopbackHTTPServer:
    """An HTTP server of the suite's own: ``handler`` on 127.0.0.1 at a free port, served by a
    daemon thread from :meth:`start` (or ``with``) until :meth:`stop`, which joins the thread.

    The vendor emulators, the Kubernetes token reviewer, the alert receivers and the fault
    proxies are each one of these with their own handler.
    """

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, name: str = "loopback", poll: float = 0.5
    ) -> None:
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        # ``poll``: how soon :meth:`stop` is answered (serve_forever looks that often)
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(poll,), name=f"{name}-{self.port}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> LoopbackHTTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
