"""HTTP clients: one per worker thread and TLS setting, one TLS context per setting."""

from __future__ import annotations

import threading

import httpx
import pytest

from rotator.http import HttpClients
from tests.fakes.oauth2 import emulator


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
