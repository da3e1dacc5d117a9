"""A loopback HTTP/1.1 server that records every request byte for byte and answers a script.

The vendor emulators parse what they receive (``http.server``): header case and
order, the request line's form and the exact body are gone by the time a test
looks. Proving that two ways of sending put the *same* request on the wire, or
that a proxy got the absolute-form request line, needs the raw bytes; this
server keeps them. It speaks keep-alive (a client's pool reuses its
connection) and answers each request with :attr:`RawRecorder.reply`.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RawAnswer", "RawRecorder", "RawRequest"]

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class RawRequest:
    head: bytes  # the request line and header lines, CRLF-separated, without the blank line
    body: bytes

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def header_lines(self) -> list[bytes]:
        return self.head.split(b"\r\n")[1:]

    def header(self, name: str) -> list[bytes]:
        """The values of every header called ``name`` (any case), in order."""
        wanted = name.lower().encode("ascii")
        return [
            line.split(b":", 1)[1].strip()
            for line in self.header_lines
            if line.split(b":", 1)[0].strip().lower() == wanted
        ]

    def without(self, name: str) -> bytes:
        """The whole request with the ``name`` header lines left out."""
        wanted = name.lower().encode("ascii")
        kept = [
            line for line in self.header_lines if line.split(b":", 1)[0].strip().lower() != wanted
        ]
        return b"\r\n".join([self.request_line, *kept]) + b"\r\n\r\n" + self.body


@dataclass(frozen=True)
class RawAnswer:
    status: int = 200
    body: bytes = b"{}"
    headers: list[tuple[str, str]] = field(
        default_factory=lambda: [("Content-Type", "application/json")]
    )

    def encoded(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} Scripted".encode("ascii")]
        lines += [f"{name}: {value}".encode("latin-1") for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.body)}".encode("ascii"))
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            head = bytearray()
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline(_MAX_HEAD)
                if not line or len(head) > _MAX_HEAD:
                    return
                if head or line not in (b"\r\n", b"\n"):
                    head += line
            request_head = bytes(head[:-4])
            length = 0
            for line in request_head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            request = RawRequest(request_head, self.rfile.read(length) if length else b"")
            recorder = self.server.recorder
            with recorder.lock:
                recorder.requests.append(request)
            self.wfile.write(recorder.reply(request).encoded())
            self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    recorder: RawRecorder


class RawRecorder:
    """Serves on 127.0.0.1 at a free port from ``with`` (or :meth:`start`) until :meth:`stop`."""

    def __init__(self, reply: Callable[[RawRequest], RawAnswer] | None = None) -> None:
        self.lock = threading.Lock()
        self.requests: list[RawRequest] = []
        self.reply: Callable[[RawRequest], RawAnswer] = reply or (lambda request: RawAnswer())
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.recorder = self
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name=f"raw-{self.port}", daemon=True
        )

    def take(self) -> list[RawRequest]:
        """The requests recorded since the last take, oldest first."""
        with self.lock:
            taken, self.requests = self.requests, []
        return taken

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> RawRecorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
