"""A tiny base for the vendor emulators: a real HTTP server on 127.0.0.1.

Each emulator subclasses :class:`VendorServer` and implements ``route(request)``.
Every request is recorded (``requests``) so tests can prove we sent exactly
what the vendor documents; failures can be queued (``fail_next``).
"""

from __future__ import annotations

import email.utils
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from tests.support import leakcheck
from tests.support.net import LoopbackHTTPServer

__all__ = [
    "Reply",
    "Request",
    "ScriptedVendor",
    "VendorServer",
    "quiet_http_libraries",
    "running",
]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def query_dict(self) -> dict[str, str]:
        return dict(self.query)

    @property
    def form(self) -> list[tuple[str, str]]:
        if not self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return []
        return parse_qsl(self.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)

    @property
    def form_dict(self) -> dict[str, str]:
        return dict(self.form)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode("utf-8") if self.body is not None else b""


class VendorServer:
    """Subclasses implement :meth:`route`. Thread-safe via ``self.lock``."""

    name = "vendor"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self.queued: list[Reply] = []
        self._server: LoopbackHTTPServer | None = None

    # -- helpers for subclasses ---------------------------------------------------------

    def issue(self, kind: str) -> str:
        """A fresh random token, registered with the leak check."""
        return leakcheck.register(f"{kind}-{secrets.token_urlsafe(24)}", f"{self.name} {kind}")

    def fail_next(self, reply: Reply, times: int = 1) -> None:
        with self.lock:
            self.queued.extend([reply] * times)

    def route(self, request: Request) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    def http_date(self) -> str:
        """The ``Date`` header of every answer; an emulator with its own clock overrides it."""
        return email.utils.formatdate(time.time(), usegmt=True)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> str:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without TCP_NODELAY the body
            # waits for the client's delayed ACK (40 ms a request)
            disable_nagle_algorithm = True

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=split.path,
                    query=parse_qsl(split.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with emulator.lock:
                    emulator.requests.append(request)
                    queued = emulator.queued.pop(0) if emulator.queued else None
                reply = queued or emulator.route(request)
                payload = reply.encoded()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def date_time_string(self, timestamp: float | None = None) -> str:
                return emulator.http_date()

        self._server = LoopbackHTTPServer(Handler, name=f"{self.name}-emulator", poll=0.05)
        self._server.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("start() first")
        return self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class ScriptedVendor(VendorServer):
    """A hostile vendor: answers whatever ``script(request)`` builds, over real HTTP.

    For property tests that feed every provider's parser arbitrary answers (and
    echoes of what the request carried) through the same send path as production.
    """

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.script: Callable[[Request], Reply] = lambda request: Reply(500, b"no script")

    def route(self, request: Request) -> Reply:
        return self.script(request)


ServerT = TypeVar("ServerT", bound=VendorServer)


@contextmanager
def running(server: ServerT) -> Iterator[ServerT]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def quiet_http_libraries() -> Iterator[None]:
    """As in production (rotator.service.logs): httpx logs URLs, which may carry tokens."""
    import logging

    saved = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    for name in saved:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
