"""The health endpoints' probes and the small HTTP server behind ``server.listen``.

``/healthz`` answers whether the process and its scheduler are alive,
``/readyz`` whether the configuration is loaded and the stores validated. Both
call a function the daemon supplies and cache the answer for a few seconds
(:class:`CachedProbe`), so an aggressive prober does not hammer Vault.

The server must keep answering the liveness probe whatever its other clients
do: a failed ``/healthz`` is a restart. A thread per connection (the standard
library's ``ThreadingHTTPServer``) let 400 idle connections hold 406 threads,
and under a task limit 34 of them made ``/healthz`` fail. So one thread reads
every connection's request head with a selector (an idle or trickling client
costs a file descriptor, not a thread) and hands only complete requests to a
few handler threads. The open connections are capped: a new one takes the
place of the oldest still sending its head, so a flood of idle or slow clients
cannot lock a prober out, and a head not complete within ``header_timeout``
(a slowloris sending it byte by byte) is cut off.
"""

from __future__ import annotations

import contextlib
import io
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

import structlog

from rotator.errors import RotatorError

__all__ = ["CachedProbe", "HealthServer", "Probe", "probe_answer"]

_log = structlog.get_logger("rotator.metrics")
#: a request head larger than this is not a probe or a scrape
_MAX_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    reason: str = ""


def probe_answer(probe: Probe) -> tuple[int, bytes]:
    """The HTTP status and plain-text body of a probe's answer."""
    text = ("ok" if probe.ok else "not ok") + (f": {probe.reason}" if probe.reason else "")
    return (200 if probe.ok else 503), (text + "\n").encode()


class CachedProbe:
    """Call ``check`` at most once per ``ttl`` seconds; a raising check is a failed probe.

    While one caller runs a slow check (a store that takes its timeout to
    answer), the others get the previous answer instead of queueing behind it:
    a few handler threads stuck on ``/readyz`` must not starve ``/healthz``.
    """

    def __init__(
        self,
        check: Callable[[], Probe],
        *,
        ttl: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._answer: Probe | None = None
        self._at = 0.0
        self._checking = False

    def __call__(self) -> Probe:
        with self._lock:
            now = self._monotonic()
            answer = self._answer
            if answer is not None and (now - self._at < self._ttl or self._checking):
                return answer
            self._checking = True
        try:
            answer = self._check()
        except Exception as exc:
            answer = Probe(False, f"probe failed: {type(exc).__name__}")
        with self._lock:
            self._answer, self._at, self._checking = answer, now, False
        return answer


class _SocketWriter(io.BufferedIOBase):
    """``wfile`` for a handler: every write is a ``sendall`` bounded by the socket's timeout."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._sock.sendall(data)
        return len(data)


@dataclass(slots=True)
class _Pending:
    """A connection whose request head is still arriving."""

    address: tuple[str, int]
    deadline: float
    head: bytearray


class HealthServer:
    """Serves ``handler`` (a ``BaseHTTPRequestHandler`` class) on ``listen``, bounded.

    ``max_connections`` caps the connections open at once, ``workers`` the
    threads that answer complete requests, ``header_timeout`` how long a client
    may take to send its request head, ``write_timeout`` how long an answer may
    take to leave. Threads: one reader plus at most ``workers``.
    """

    def __init__(
        self,
        listen: str,
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int = 32,
        workers: int = 4,
        header_timeout: float = 5.0,
        write_timeout: float = 10.0,
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, int(port)), family=family, backlog=64)
        except OSError as exc:
            raise RotatorError(
                f"server.listen: cannot listen on {listen}: {exc.strerror or exc} "
                "(another process on that port? choose another port)"
            ) from None
        self._listener.setblocking(False)
        self._handler = _preread(handler)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.write_timeout = write_timeout
        self._pending: dict[socket.socket, _Pending] = {}  # oldest first
        self._answering = 0
        self._answering_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rotator-http")
        self._thread = threading.Thread(target=self._serve, name="rotator-http-io", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def open_connections(self) -> int:
        with self._answering_lock:
            return len(self._pending) + self._answering

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()
        _log.info("serving metrics and health", listen="{}:{}".format(*self.address))

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for sock in list(self._pending):
            self._drop(sock)
        with contextlib.suppress(Exception):
            self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # -- the reader thread ----------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            timeout = 1.0
            if self._pending:
                oldest = next(iter(self._pending.values()))
                timeout = max(0.0, min(timeout, oldest.deadline - time.monotonic()))
            for key, _ in self._selector.select(timeout):
                if key.data == "listen":
                    self._accept()
                elif key.data == "pending":
                    self._read(key.fileobj)  # type: ignore[arg-type]
            self._expire()

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next round
                _log.warning("health server cannot accept", error=str(exc))
                return
            if self.open_connections >= self.max_connections:
                if not self._pending:
                    sock.close()  # every slot is answering: refused at once
                    continue
                self._drop(next(iter(self._pending)))  # the oldest head still arriving
            sock.setblocking(False)
            with self._answering_lock:
                self._pending[sock] = _Pending(
                    address, time.monotonic() + self.header_timeout, bytearray()
                )
            self._selector.register(sock, selectors.EVENT_READ, "pending")

    def _read(self, sock: socket.socket) -> None:
        pending = self._pending.get(sock)
        if pending is None:
            return
        try:
            chunk = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(sock)
            return
        pending.head += chunk
        if b"\r\n\r\n" not in pending.head and b"\n\n" not in pending.head:
            if len(pending.head) > _MAX_HEAD:
                self._drop(sock)
            return
        self._selector.unregister(sock)
        with self._answering_lock:
            del self._pending[sock]
            self._answering += 1
        sock.setblocking(True)
        sock.settimeout(self.write_timeout)
        try:
            self._pool.submit(self._answer, sock, pending.address, bytes(pending.head))
        except RuntimeError:  # the pool is shut down: stopping
            self._answered(sock)

    def _expire(self) -> None:
        now = time.monotonic()
        for sock, pending in list(self._pending.items()):
            if pending.deadline > now:
                break  # oldest first: the rest have later deadlines
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._answering_lock:
            self._pending.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()

    # -- the handler threads ---------------------------------------------------------------

    def _answer(self, sock: socket.socket, address: tuple[str, int], head: bytes) -> None:
        try:
            self._handler((sock, head), address, self)  # type: ignore[arg-type]
        except Exception as exc:  # a client gone mid-answer, a write timeout
            _log.debug("health request failed", error=type(exc).__name__)
        finally:
            self._answered(sock)

    def _answered(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        with self._answering_lock:
            self._answering -= 1


def _preread(handler: type[BaseHTTPRequestHandler]) -> type[BaseHTTPRequestHandler]:
    """``handler``, reading its request from the head the reader thread already received."""

    class Preread(handler):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            sock, head = self.request
            self.connection = sock
            self.rfile = io.BytesIO(head)
            self.wfile = _SocketWriter(sock)

    Preread.__name__ = handler.__name__
    return Preread
