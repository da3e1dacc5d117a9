"""The direct path of the Vault client answers exactly as hvac's path does.

Every call of :class:`HvacClient` is made twice, once through :class:`Direct` and
once through hvac (``_direct = None``), against the same real OpenBao or the same
loopback server, and the two must agree: the same result, or the same exception
type and the same store error once :func:`mapped` has turned it into one. The
class is the whole transport: successes, every status class Vault answers with,
connection failures, timeouts, TLS, redirects, proxies, and what goes on the wire.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.backends.vault.client import HvacClient, mapped
from rotator.backends.vault.direct import Direct
from rotator.config.models import VaultStoreSettings
from rotator.secrets import Secret
from tests.backends.conftest import vault_settings
from tests.support.net import LoopbackHTTPServer, free_port
from tests.support.servers import OpenBao


def _settings(url: str, **extra: Any) -> VaultStoreSettings:
    return vault_settings(url, {"method": "token", "token": "env:UNUSED"}, **extra)


@pytest.fixture
def pair(bao: OpenBao) -> Iterator[tuple[HvacClient, HvacClient, Secret]]:
    """(direct, through hvac, the root token) on the session's OpenBao."""
    direct, plain = HvacClient(_settings(bao.url)), HvacClient(_settings(bao.url))
    plain._direct = None
    assert direct._direct is not None
    try:
        yield direct, plain, Secret(bao.root_token)
    finally:
        direct.close()
        plain.close()


def _outcome(call: Callable[[], Any], settings: VaultStoreSettings) -> tuple[str, str]:
    """What a call came to: its result as JSON, or its exception's type and store error."""
    try:
        return "ok", json.dumps(call(), sort_keys=True, default=str)
    except Exception as exc:
        error = mapped(exc, settings, store="vault", action="write", path="p")
        return type(exc).__name__, f"{type(error).__name__}: {error}"


def _same(
    direct: HvacClient,
    plain: HvacClient,
    settings: VaultStoreSettings,
    call: Callable[[HvacClient], Any],
) -> tuple[str, str]:
    first = _outcome(lambda: call(direct), settings)
    second = _outcome(lambda: call(plain), settings)
    assert first == second
    return first


def _fresh(kind: str = "d") -> str:
    return f"secret/data/rotator/direct/{kind}-{uuid.uuid4().hex[:12]}"


# -- a real OpenBao ----------------------------------------------------------------------


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.dictionaries(_TEXT.filter(bool), _TEXT, min_size=1, max_size=6))
def test_what_one_path_writes_the_other_reads_back_whole(
    pair: tuple[HvacClient, HvacClient, Secret], data: dict[str, str]
) -> None:
    direct, plain, token = pair
    for writer, reader in ((direct, plain), (plain, direct)):
        path = _fresh()
        assert writer.write_data(path, data, 0, token) == 1
        assert reader.read_data(path, token)[0] == data
        assert writer.read_data(path, token) == reader.read_data(path, token)


def test_every_call_answers_alike(
    bao: OpenBao, pair: tuple[HvacClient, HvacClient, Secret]
) -> None:
    direct, plain, token = pair
    settings = _settings(bao.url)
    written = _fresh()
    direct.write_data(written, {"a": "1"}, 0, token)
    deleted = _fresh()
    direct.write_data(deleted, {"a": "1"}, 0, token)
    bao.call("DELETE", "secret/data/" + deleted.removeprefix("secret/data/"))
    calls: dict[str, Callable[[HvacClient], Any]] = {
        "read": lambda c: c.read_data(written, token),
        "read missing": lambda c: c.read_data(_fresh("missing"), token),
        "read soft-deleted": lambda c: c.read_data(deleted, token),
        "cas lost": lambda c: c.write_data(written, {"a": "2"}, 0, token),
        "no such mount": lambda c: c.read_data("nomount/data/x", token),
        "list": lambda c: sorted(c.list_keys("secret/metadata/rotator/direct", token) or []),
        "list empty": lambda c: c.list_keys("secret/metadata/rotator/none-here", token),
        "mount info": lambda c: sorted(c.mount_info("secret", token) or {}),
        "capabilities": lambda c: c.capabilities(["secret/data/rotator/x"], token),
        "lookup": lambda c: sorted(c.lookup_self(token)),
        "wrong token": lambda c: c.read_data(written, Secret("s.not-a-token")),
        "bad body": lambda c: c.write_data(written, {"a": "2"}, -5, token),
    }
    outcomes = {name: _same(direct, plain, settings, call) for name, call in calls.items()}
    assert outcomes["cas lost"][1].startswith("StoreConflict")
    assert outcomes["no such mount"][1].startswith("StoreError: vault: no secrets engine")
    assert outcomes["wrong token"][0] == "Forbidden"
    assert outcomes["read missing"] == ("ok", "[null, null]")


def test_a_policy_refusal_names_the_same_path(
    bao: OpenBao, pair: tuple[HvacClient, HvacClient, Secret]
) -> None:
    direct, plain, _ = pair
    bao.write_policy("direct-none", 'path "secret/data/elsewhere/*" { capabilities = ["read"] }')
    weak = Secret(bao.create_token(["direct-none"]))
    path = _fresh()
    kind, error = _same(
        direct, plain, _settings(bao.url), lambda c: c.write_data(path, {"a": "1"}, 0, weak)
    )
    assert (kind, error.split(":")[0]) == ("Forbidden", "StorePermissionError")
    assert "secret/data/rotator/direct/" in error


def test_a_sealed_server_answers_alike() -> None:
    with OpenBao() as server:
        settings = _settings(server.url)
        direct, plain = HvacClient(settings), HvacClient(settings)
        plain._direct = None
        token = Secret(server.root_token)
        try:
            server.call("PUT", "sys/seal")
            kind, error = _same(
                direct, plain, settings, lambda c: c.read_data("secret/data/x", token)
            )
            assert kind == "VaultDown" and "sealed" in error
        finally:
            direct.close()
            plain.close()


# -- transport failures ------------------------------------------------------------------


def _both(url: str, **extra: Any) -> tuple[HvacClient, HvacClient, VaultStoreSettings]:
    settings = _settings(url, **extra)
    direct, plain = HvacClient(settings), HvacClient(settings)
    plain._direct = None
    return direct, plain, settings


def test_a_closed_port_is_the_same_connection_failure() -> None:
    direct, plain, settings = _both(f"http://127.0.0.1:{free_port()}")
    kind, error = _same(
        direct, plain, settings, lambda c: c.read_data("secret/data/x", Secret("t"))
    )
    assert (kind, error) == (
        "ConnectionError",
        f"StoreUnavailable: vault: cannot reach {settings.url} (write p): connection failed",
    )


def test_a_server_that_never_answers_is_the_same_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        direct, plain, settings = _both(url, timeout="1s")
        kind, error = _same(
            direct, plain, settings, lambda c: c.read_data("secret/data/x", Secret("t"))
        )
        assert kind == "ReadTimeout" and "did not answer in time" in error
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_tls_to_a_plain_port_is_the_same_tls_failure(bao: OpenBao) -> None:
    direct, plain, settings = _both(bao.url.replace("http://", "https://"))
    kind, error = _same(
        direct, plain, settings, lambda c: c.read_data("secret/data/x", Secret("t"))
    )
    assert kind == "SSLError" and "TLS verification" in error


class _Scripted(BaseHTTPRequestHandler):
    """Answers every request with the class's (status, content type, body), and
    records what it was sent."""

    answer: ClassVar[tuple[int, str, bytes]] = (200, "application/json", b"{}")
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers.items()), body))
        status, content_type, payload = self.answer
        self.send_response(status)
        if status in (301, 302, 307, 308):
            self.send_header("Location", type(self).location)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _any
    location: ClassVar[str] = ""

    def log_message(self, *args: object) -> None:
        return None


_ANSWERS = [
    (200, "application/json", b'{"data": {"data": {"a": "1"}, "metadata": {"version": 3}}}'),
    (200, "text/plain", b"not json"),
    (204, "application/json", b""),
    (400, "application/json", b'{"errors": ["check-and-set parameter did not match"]}'),
    (403, "application/json", b'{"errors": ["1 error occurred:\\n\\t* permission denied\\n\\n"]}'),
    (404, "application/json", b'{"errors": []}'),
    (404, "application/json", b'{"errors": ["no handler for route \\"nomount/data/x\\""]}'),
    (412, "application/json", b'{"errors": ["required index state not present"]}'),
    (429, "application/json", b'{"errors": ["request path \\"x\\": rate limit quota exceeded"]}'),
    (500, "text/plain", b"internal error"),
    (500, "application/json; charset=utf-8", b'{"errors": ["boom"]}'),
    (502, "application/json", b'{"errors": ["bad gateway"]}'),
    (503, "application/json", b'{"errors": ["Vault is sealed"]}'),
    (599, "text/html", b"<html>\xff\xfe</html>"),
]


@pytest.mark.parametrize("answer", _ANSWERS, ids=[f"{a[0]}-{a[1]}" for a in _ANSWERS])
def test_every_status_vault_can_answer_comes_to_the_same(answer: tuple[int, str, bytes]) -> None:
    handler = type("Answers", (_Scripted,), {"answer": answer, "seen": []})
    with LoopbackHTTPServer(handler) as server:
        direct, plain, settings = _both(server.url)
        for call in (
            lambda c: c.read_data("secret/data/rotator/x", Secret("t")),
            lambda c: c.write_data("secret/data/rotator/x", {"a": "1"}, 2, Secret("t")),
            lambda c: c.list_keys("secret/metadata/rotator/", Secret("t")),
        ):
            _same(direct, plain, settings, call)


def test_an_error_body_that_is_not_an_object_is_still_the_status_error() -> None:
    """hvac's own path fails on it (``AttributeError``: it calls ``.get`` on a list);
    the direct path reads such a body as no errors, so a 503 stays "not serving"."""
    handler = type(
        "Odd", (_Scripted,), {"answer": (503, "application/json", b"[1, 2]"), "seen": []}
    )
    with LoopbackHTTPServer(handler) as server:
        direct, _, settings = _both(server.url)
        kind, error = _outcome(lambda: direct.read_data("secret/data/x", Secret("t")), settings)
    assert kind == "VaultDown" and error.startswith("StoreUnavailable: vault:")


def test_the_same_request_goes_on_the_wire() -> None:
    handler = type("Records", (_Scripted,), {"seen": []})
    with LoopbackHTTPServer(handler) as server:
        direct, plain, _ = _both(server.url + "/behind/a/prefix/", namespace="team-a")
        for client in (direct, plain):
            # the loopback answers {} (no version): what is compared is what was sent
            with pytest.raises(KeyError):
                client.write_data("secret/data/rotator//x", {"a": "é"}, 4, Secret("tok-1"))
            client.list_keys("secret/metadata/rotator/", Secret("tok-1"))
    ours, theirs = handler.seen[:2], handler.seen[2:]
    for (m1, p1, h1, b1), (m2, p2, h2, b2) in zip(ours, theirs, strict=True):
        assert (m1, p1) == (m2, p2)
        assert p1.startswith("/behind/a/prefix/v1/secret/")
        assert "//" not in p1
        assert json.loads(b1 or b"null") == json.loads(b2 or b"null")
        for name in ("X-Vault-Token", "X-Vault-Request", "X-Vault-Namespace", "Content-Type"):
            assert h1.get(name) == h2.get(name), name
        assert h1["X-Vault-Namespace"] == "team-a"


def test_a_redirect_is_followed_through_hvac(bao: OpenBao) -> None:
    """An HA standby answers 307 to the active node: nothing was done, hvac follows."""
    handler = type("Standby", (_Scripted,), {"answer": (307, "text/plain", b""), "seen": []})
    handler.location = bao.url + "/v1/secret/data/rotator/direct/redirected"
    with LoopbackHTTPServer(handler) as server:
        client = HvacClient(_settings(server.url))
        token = Secret(bao.root_token)
        assert client.read_data("secret/data/rotator/direct/redirected", token) == (None, None)
        # the direct try, then hvac's: the standby saw the request twice, the server once
        assert len(handler.seen) == 2


# -- when the direct path steps aside ----------------------------------------------------


def test_a_proxy_for_the_vault_url_leaves_the_call_to_hvac(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("NO_PROXY", "")
    assert HvacClient(_settings("https://vault.example:8200"))._direct is None
    monkeypatch.setenv("NO_PROXY", "vault.example")
    assert HvacClient(_settings("https://vault.example:8200"))._direct is not None
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("NO_PROXY")
    assert HvacClient(_settings("https://vault.example:8200"))._direct is not None


def test_an_adapter_without_the_pool_hand_out_is_not_used() -> None:
    import requests

    session = requests.Session()
    session.mount("http://", requests.adapters.BaseAdapter())
    assert not Direct.usable(session, "http://127.0.0.1:8200")
