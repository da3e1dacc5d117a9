"""The suite's one free port and one wait: loopback servers and conditions polled with a deadline.

Every test that starts a server asks :func:`free_port`; every test that waits for
something another process or thread does polls it with :func:`wait_until`, which
fails the same way everywhere (``AssertionError`` naming what it waited for).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["free_port", "wait_until"]

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
