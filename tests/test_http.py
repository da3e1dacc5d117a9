"""HTTP clients (one per worker thread and TLS setting) and bounded decompression."""

from __future__ import annotations

import gzip
import json
import threading
import tracemalloc
import zlib
from collections.abc import Iterator

import httpx
import pytest

from rotator.errors import BadResponse, TransientProviderError
from rotator.http import ACCEPT_ENCODING, HttpClients, iter_decoded
from rotator.providers.base import send
from tests.fakes.oauth2 import emulator
from tests.fakes.vendorhttp import Reply, ScriptedVendor, running


def _in_thread(clients: HttpClients) -> httpx.Client:
    got: list[httpx.Client] = []
    thread = threading.Thread(target=lambda: got.append(clients.get()))
    thread.start()
    thread.join()
    return got[0]


def test_each_thread_has_its_own_client_and_keeps_it() -> None:
    clients = HttpClients()
    mine = clients.get()
    assert clients.get() is mine
    assert clients.get(verify=False) is not mine
    other = _in_thread(clients)
    assert other is not mine
    clients.close()
    assert mine.is_closed and other.is_closed


def test_threads_share_one_tls_context_per_setting() -> None:
    import ssl

    if not hasattr(httpx, "create_ssl_context"):
        pytest.skip("httpx < 0.28 builds the default context in each client")
    clients = HttpClients()
    clients.get()
    _in_thread(clients)
    contexts = set(map(id, clients._tls.values()))
    assert len(contexts) == 1
    assert all(isinstance(tls, ssl.SSLContext) for tls in clients._tls.values())
    clients.close()


def test_a_thread_reuses_its_connection() -> None:
    # The point of a client per thread: one kept-alive connection, no other thread's
    # idle connections to check on every request.
    with emulator() as server:
        clients = HttpClients()
        client = clients.get()
        for _ in range(5):
            assert client.get(server.base_url + "/userinfo").status_code == 401
        assert server.connections == 1
        clients.close()


# -- bounded decompression (iter_decoded, through send) -----------------------------------


@pytest.fixture
def vendor() -> Iterator[ScriptedVendor]:
    with running(ScriptedVendor()) as server:
        yield server


def _answer(vendor: ScriptedVendor, body: bytes, encoding: str) -> None:
    vendor.script = lambda request: Reply(
        200, body, "application/json", headers={"Content-Encoding": encoding}
    )


_MIB = 1 << 20


def _bomb(megabytes: int, encoding: str) -> bytes:
    """``megabytes`` MiB of zeros, compressed as ``encoding`` (~1000:1).

    Built from one compressed MiB repeated, not by compressing the whole: after a full
    flush the compressor starts from an empty window, so every further MiB of zeros
    compresses to the same bytes. Compressing 500 MiB took 1.5 s of CPU and allocated
    500 MiB per test; the stream is the same valid one (checked by
    test_the_bomb_is_a_valid_stream).
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = packer.compress(b"\0" * _MIB) + packer.flush(zlib.Z_FULL_FLUSH)
    last = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # an empty final block
    raw = block * megabytes + last
    if encoding == "raw-deflate":
        return raw
    zeros = b"\0" * _MIB
    if encoding == "deflate":
        adler = 1
        for _ in range(megabytes):
            adler = zlib.adler32(zeros, adler)
        return b"\x78\xda" + raw + adler.to_bytes(4, "big")
    assert encoding == "gzip"
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(zeros, crc)
    size = (megabytes * _MIB) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + raw + crc.to_bytes(4, "little") + size.to_bytes(4, "little")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_the_bomb_is_a_valid_stream(encoding: str) -> None:
    bomb = _bomb(3, encoding)
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -zlib.MAX_WBITS}[encoding]
    inflater = zlib.decompressobj(wbits)
    assert inflater.decompress(bomb) + inflater.flush() == b"\0" * (3 * _MIB)
    assert inflater.eof and not inflater.unused_data
    if encoding == "gzip":
        assert gzip.decompress(bomb) == b"\0" * (3 * _MIB)  # checks the CRC and size too


def _compress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "deflate":
        return zlib.compress(data)
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # "deflate" as some servers send it
    return raw.compress(data) + raw.flush()


@pytest.mark.parametrize("bomb_mb", [50, 500])
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_a_compression_bomb_is_refused_with_bounded_memory(
    vendor: ScriptedVendor, encoding: str, bomb_mb: int
) -> None:
    bomb = _bomb(bomb_mb, encoding)
    assert len(bomb) < bomb_mb * 1100  # ~1000:1, as an attacker would send it
    _answer(vendor, bomb, "deflate" if encoding == "raw-deflate" else encoding)
    clients = HttpClients()
    tracemalloc.start()
    try:
        with pytest.raises(BadResponse) as caught:
            send(clients.get(), "POST", vendor.base_url + "/token?refresh_token=x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        clients.close()
    assert peak < 4 << 20, f"peak {peak} bytes while refusing a {bomb_mb} MB bomb"
    assert caught.value.code == "bad_response" and caught.value.transient
    assert "refresh_token=x" not in str(caught.value)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_answers_are_decoded(vendor: ScriptedVendor, encoding: str) -> None:
    body = json.dumps({"access_token": "at", "pad": "x" * 200_000}).encode()
    _answer(vendor, _compress(body, encoding), "deflate" if encoding == "raw-deflate" else encoding)
    with httpx.Client() as client:
        assert send(client, "POST", vendor.base_url + "/token").body == body


def test_iter_decoded_stops_at_its_limit(vendor: ScriptedVendor) -> None:
    _answer(vendor, gzip.compress(b"a" * 5000), "gzip")
    with (
        httpx.Client() as client,
        client.stream("GET", vendor.base_url) as response,
        pytest.raises(BadResponse, match="inflates past 4096 bytes"),
    ):
        b"".join(iter_decoded(response, limit=4096))


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip", "compress"])
def test_an_encoding_rotator_did_not_ask_for_is_refused(
    vendor: ScriptedVendor, encoding: str
) -> None:
    _answer(vendor, b"\x1f\x8b whatever", encoding)
    with httpx.Client() as client, pytest.raises(BadResponse, match="Content-Encoding"):
        send(client, "POST", vendor.base_url + "/token")


def test_a_body_that_is_not_what_its_encoding_says_is_bad_encoding(
    vendor: ScriptedVendor,
) -> None:
    _answer(vendor, b"not gzip at all", "gzip")
    with httpx.Client() as client, pytest.raises(TransientProviderError) as caught:
        send(client, "POST", vendor.base_url + "/token")
    assert caught.value.code == "bad_encoding"


def test_clients_ask_only_for_what_they_decode() -> None:
    clients = HttpClients()
    assert clients.get().headers["accept-encoding"] == ACCEPT_ENCODING == "gzip, deflate"
    clients.close()


def test_no_client_keeps_a_cookie_whatever_asks() -> None:
    # probe and the full path (client.post, client.stream) share the clients send() uses
    from tests.support.rawhttp import RawAnswer, RawRecorder

    with RawRecorder(lambda request: RawAnswer(200, b"{}", [("Set-Cookie", "sid=a")])) as server:
        clients = HttpClients()
        client = clients.get()
        try:
            for _ in range(2):
                client.post(server.url + "/token", data={"a": "b"})
                with client.stream("GET", server.url + "/x") as response:
                    response.read()
            assert not list(client.cookies.jar)
        finally:
            clients.close()
        assert all(request.header("cookie") == [] for request in server.take())
