"""The corked socket stream: a request goes out in one write, the timeout is set when it changes.

Real sockets (a socketpair, a loopback HTTPS emulator): what is counted is what
the kernel sees.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest

from rotator.http import HttpClients
from rotator.netstream import _HOLD, cork, corked_backend
from rotator.providers.base import send
from tests.support.tls import TLSEmulator, make_ca


class _CountingSocket(socket.socket):
    """A socket that counts its ``settimeout`` calls (each one an ``ioctl``)."""

    settimeouts = 0

    def settimeout(self, value: float | None) -> None:
        type(self).settimeouts += 1
        super().settimeout(value)


@pytest.fixture
def pair() -> Iterator[tuple[httpcore.NetworkStream, socket.socket]]:
    ours, theirs = socket.socketpair()
    counting = _CountingSocket(ours.family, ours.type, fileno=ours.detach())
    _CountingSocket.settimeouts = 0
    corked_backend()  # builds the stream class
    from httpcore._backends.sync import SyncStream

    stream = cork(SyncStream(counting))
    assert type(stream).__name__ == "_CorkedStream"
    theirs.settimeout(2)
    yield stream, theirs
    stream.close()
    theirs.close()


def _pending(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(2)


def test_a_request_goes_out_in_one_write_when_its_answer_is_read(
    pair: tuple[httpcore.NetworkStream, socket.socket],
) -> None:
    stream, peer = pair
    stream.write(b"POST /token HTTP/1.1\r\nContent-Length: 3\r\n\r\n", timeout=5)
    stream.write(b"a=b", timeout=5)
    stream.write(b"", timeout=5)
    assert _pending(peer) == b""  # held
    peer.sendall(b"answer")
    assert stream.read(100, timeout=5) == b"answer"
    assert peer.recv(1000) == b"POST /token HTTP/1.1\r\nContent-Length: 3\r\n\r\na=b"


def test_the_timeout_is_set_once_while_it_does_not_change(
    pair: tuple[httpcore.NetworkStream, socket.socket],
) -> None:
    stream, peer = pair
    for _ in range(5):
        stream.write(b"request", timeout=5)
        peer.sendall(b"answer")
        assert stream.read(100, timeout=5) == b"answer"
        assert peer.recv(100) == b"request"
    assert _CountingSocket.settimeouts == 1
    stream.write(b"request", timeout=5)
    peer.sendall(b"answer")
    stream.read(100, timeout=7)
    assert _CountingSocket.settimeouts == 2  # a new timeout is set


def test_a_large_request_is_not_held(pair: tuple[httpcore.NetworkStream, socket.socket]) -> None:
    stream, peer = pair
    big = b"x" * (_HOLD + 1)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    received = bytearray()

    reader = threading.Thread(target=lambda: received.extend(_drain(peer, len(big))))
    reader.start()
    stream.write(big, timeout=5)
    reader.join(5)
    assert bytes(received) == big


def _drain(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_a_silent_peer_is_a_read_timeout(
    pair: tuple[httpcore.NetworkStream, socket.socket],
) -> None:
    stream, _peer = pair
    stream.write(b"request", timeout=5)
    with pytest.raises(httpcore.ReadTimeout):
        stream.read(100, timeout=0.05)


def test_a_request_the_peer_refused_is_read_as_httpcore_would(
    pair: tuple[httpcore.NetworkStream, socket.socket],
) -> None:
    # httpcore ignores a failed request write and reads whatever answer came
    stream, peer = pair
    peer.sendall(b"HTTP/1.1 413 Too Large\r\n\r\n")
    peer.shutdown(socket.SHUT_RDWR)
    peer.close()
    stream.write(b"request", timeout=5)
    try:
        answer = stream.read(100, timeout=5)
    except httpcore.ReadError:
        return  # the reset came first: a read error, never a raw OSError
    assert answer in (b"HTTP/1.1 413 Too Large\r\n\r\n", b"")


def test_only_httpcores_socket_streams_are_corked() -> None:
    corked_backend()
    mock = httpcore.MockStream([b"x"])
    assert cork(mock) is mock


def test_https_calls_go_through_corked_streams(tmp_path: Path) -> None:
    ca, certificate, key = make_ca(tmp_path)
    server = TLSEmulator(certificate, key)
    server.start()
    clients = HttpClients()
    try:
        client = clients.get(ca_bundle=ca)
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert type(pool._network_backend).__name__ == "_CorkedBackend"
        for _ in range(3):
            answer = send(client, "POST", server.token_url, data={"grant_type": "nothing"})
            assert answer.status == 401
            assert b"invalid_client" in answer.body  # the emulator's answer, read whole
        (connection,) = pool.connections
        stream = connection._connection._network_stream
        assert type(stream).__name__ == "_CorkedStream"
        assert stream.get_extra_info("ssl_object") is not None  # TLS under the cork
        assert server.connections == 1
    finally:
        clients.close()
        server.stop()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _connect_proxy(listener: socket.socket, tunnels: list[bytes]) -> None:
    """A CONNECT proxy: records each request line, then pipes bytes both ways."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        line = head.split(b"\r\n", 1)[0]
        tunnels.append(line)
        host, port = line.split()[1].decode().rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for ends in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=ends, daemon=True).start()


def test_https_through_a_connect_proxy_goes_through_corked_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, certificate, key = make_ca(tmp_path)
    server = TLSEmulator(certificate, key)
    server.start()
    port = server.token_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    listener = socket.create_server(("127.0.0.1", 0))
    tunnels: list[bytes] = []
    threading.Thread(target=_connect_proxy, args=(listener, tunnels), daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
    clients = HttpClients()
    try:
        client = clients.get(ca_bundle=ca)
        for _ in range(2):
            answer = send(client, "POST", server.token_url, data={"grant_type": "nothing"})
            assert answer.status == 401
            assert b"invalid_client" in answer.body
        mounts = client._mounts.items()  # type: ignore[attr-defined]
        (proxy,) = [transport for pattern, transport in mounts if pattern.scheme == "https"]
        (tunnel,) = proxy._pool.connections
        stream = tunnel._connection._network_stream  # TLS started on the corked stream
        assert type(stream).__name__ == "_CorkedStream"
        assert stream.get_extra_info("ssl_object") is not None
    finally:
        clients.close()
        server.stop()
        listener.close()
    assert tunnels == [f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode()]  # one tunnel, kept
