"""The benchmark's token endpoint: a :class:`rotator.demo.sandbox.Sandbox` in its own process.

``python -m bench.emulator --ttl 60`` serves the sandbox on a free loopback
port and prints one JSON line ``{"url": ..., "stats": ...}`` on stdout when it
is ready. It runs until SIGTERM.

Every client id that starts with ``bench-`` is accepted with the one shared
secret from ``$BENCH_CLIENT_SECRET``, so a run can use 10,000 accounts (one
client id each) without configuring 10,000 clients. The accounts use the
``client_credentials`` grant: it needs no seeding, and the daemon's rotation
path is the same as for ``refresh_token`` (lease, vendor call, spool, state
first, sinks). Calls are counted per client id (= per account) and served at
``GET /stats``, which is how the harness tells a duplicate refresh apart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rotator.demo.sandbox import Sandbox

__all__ = ["BenchSandbox", "main"]

PREFIX = "bench-"


class _AnyBenchClient(dict[str, str]):
    """Every ``bench-*`` client id has the shared secret."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self.secret if key.startswith(PREFIX) else default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith(PREFIX)

    def __getitem__(self, key: str) -> str:
        if key.startswith(PREFIX):
            return self.secret
        raise KeyError(key)


class BenchSandbox(Sandbox):
    """Counts calls per client; keeps no per-token bookkeeping (10,000s of tokens)."""

    def __init__(self, secret: str, ttl: float) -> None:
        super().__init__(access_ttl=ttl)
        self.clients = _AnyBenchClient(secret)
        self.per_client: Counter[str] = Counter()

    def _issue(
        self,
        handler: BaseHTTPRequestHandler,
        client_id: str,
        refresh: str | None,
        scope: str | None,
    ) -> None:
        with self.lock:
            self.per_client[client_id] += 1
            self.requests.clear()  # the base class keeps every request; we only count
        body: dict[str, Any] = {
            "access_token": self._new("access"),
            "token_type": "bearer",
            "expires_in": self.access_ttl,
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        self._reply(handler, 200, json.dumps(body).encode())

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/stats":
            with self.lock:
                stats = {"calls": self.token_calls, "per_client": dict(self.per_client)}
            self._reply(handler, 200, json.dumps(stats).encode())
        else:
            super()._handle_get(handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator")
    parser.add_argument("--ttl", type=float, default=3600.0, help="access token lifetime (s)")
    args = parser.parse_args(argv)
    secret = os.environ.get("BENCH_CLIENT_SECRET", "")
    if not secret:
        print("bench.emulator: set BENCH_CLIENT_SECRET", file=sys.stderr)
        return 2
    # http.server listens with a backlog of 5: 16 workers connecting at once would see
    # SYN retries (1 s stalls) and resets that a real vendor's endpoint never causes.
    ThreadingHTTPServer.request_queue_size = 1024
    # http.server writes the headers and the body of an answer separately: without
    # TCP_NODELAY, Nagle holds the body until the client's delayed ACK (40 ms).
    accept = ThreadingHTTPServer.get_request

    def get_request(server: ThreadingHTTPServer) -> tuple[socket.socket, Any]:
        conn, address = accept(server)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address

    ThreadingHTTPServer.get_request = get_request  # type: ignore[method-assign]
    sandbox = BenchSandbox(secret, args.ttl)
    url = sandbox.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"url": url, "stats": sandbox.base_url + "/stats"}), flush=True)
    stop.wait()
    sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
