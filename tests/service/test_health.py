"""The health server under idle, slow and hostile clients: probes answered, threads bounded.

A thread per connection once let 400 idle connections hold 406 threads, and 34
of them under a task limit made ``/healthz`` fail (a liveness restart). These
tests open more idle and trickling connections than the server's cap and prove
the probe still answers and the server's threads stay at one reader plus its
workers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.service.health import HealthServer, Probe
from rotator.service.metrics import Metrics, exposition_handler
from tests.support.proc import wait_for

CAP = 8
WORKERS = 2


def http_threads() -> int:
    return sum(t.name.startswith("rotator-http") for t in threading.enumerate())


@contextlib.contextmanager
def serving(header_timeout: float = 5.0) -> Iterator[tuple[HealthServer, str]]:
    handler = exposition_handler(Metrics(), {"/healthz": lambda: Probe(True, "alive")})
    server = HealthServer(
        "127.0.0.1:0",
        handler,
        max_connections=CAP,
        workers=WORKERS,
        header_timeout=header_timeout,
    )
    server.start()
    try:
        yield server, "{}:{}".format(*server.address)
    finally:
        server.stop()


def healthz(address: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{address}/healthz", timeout=5) as response:
        return response.status, response.read()


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server closed the connection (without answering anything)."""
    sock.settimeout(0.05)
    try:
        data = sock.recv(1024)
    except TimeoutError:
        return False
    except OSError:
        return True
    assert not data.startswith(b"HTTP/"), "an incomplete request was answered"
    return data == b""


# what a client does after connecting
KINDS = {
    "idle": b"",
    "partial": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    "garbage": b"\x00\xff\x16\x03\x01 not http at all",
    "unread": b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",  # asks, never reads the answer
}


def open_clients(address: str, kinds: list[str]) -> list[socket.socket]:
    clients = []
    for kind in kinds:
        sock = connect(address)
        if KINDS[kind]:
            sock.sendall(KINDS[kind])
        clients.append(sock)
    return clients


def test_probes_answer_with_many_more_idle_connections_than_the_cap() -> None:
    before = http_threads()
    with serving() as (server, address):
        clients = open_clients(address, ["idle", "partial"] * (5 * CAP))  # 80 > 8
        try:
            for _ in range(5):
                assert healthz(address) == (200, b"ok: alive\n")
            assert server.open_connections <= CAP
            assert http_threads() - before <= 1 + WORKERS
        finally:
            for sock in clients:
                sock.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.sampled_from(sorted(KINDS)), min_size=0, max_size=4 * CAP))
def test_no_mix_of_hostile_clients_locks_the_prober_out(kinds: list[str]) -> None:
    before = http_threads()
    with serving() as (server, address):
        clients = open_clients(address, kinds)
        try:
            assert healthz(address) == (200, b"ok: alive\n")
            assert server.open_connections <= CAP
            assert http_threads() - before <= 1 + WORKERS
        finally:
            for sock in clients:
                sock.close()


def test_a_slowloris_is_cut_off_after_the_header_timeout() -> None:
    """A client sending its head byte by byte is closed once the head is overdue."""
    with serving(header_timeout=0.3) as (_server, address):
        sock = connect(address)
        head = b"GET /healthz HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 10_000
        sent = 0

        def trickled_until_closed() -> bool:
            nonlocal sent
            try:
                sock.sendall(head[sent : sent + 1])
            except OSError:
                return True
            sent += 1
            return closed_by_peer(sock)

        try:
            wait_for(trickled_until_closed, timeout=20, interval=0, what="the server to hang up")
            assert sent < len(head)  # cut off mid-head, never answered
            assert healthz(address)[0] == 200
        finally:
            sock.close()


def test_an_oversized_request_head_is_closed_without_an_answer() -> None:
    with serving() as (_server, address):
        sock = connect(address)
        try:
            with contextlib.suppress(OSError):  # the server may hang up mid-send
                sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 64 * 1024)
            wait_for(lambda: closed_by_peer(sock), timeout=10, what="the server to hang up")
        finally:
            sock.close()


def test_stop_ends_the_threads_and_closes_the_port() -> None:
    before = http_threads()
    with serving() as (_server, address):
        clients = open_clients(address, ["idle"] * 3)
        assert healthz(address)[0] == 200
    for sock in clients:
        sock.close()
    wait_for(lambda: http_threads() <= before, timeout=10, what="the server's threads to end")
    with pytest.raises(OSError):
        connect(address).close()
