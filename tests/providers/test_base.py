"""send(): the lean path puts on the wire what httpx's full path would, and carries no cookie.

Vendor calls skip httpx's client layers (rotator.http.PoliteClient.lean_open); these
tests hold that shortcut to the full path byte for byte over hypothesis' requests, with
a recorder that keeps the raw bytes (tests/support/rawhttp), and prove what the
shortcut must not lose: the proxy from the environment, the gate, the typed errors,
and the fallback when httpx has no ``_transport_for_url``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from unittest import mock

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rotator.http
from rotator.errors import PermanentProviderError, TransientProviderError
from rotator.http import ACCEPT_ENCODING, HttpClients, open_answer
from rotator.providers.base import HttpAnswer, send
from tests.support.rawhttp import RawAnswer, RawRecorder, RawRequest

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(scope="module")
def recorder() -> Iterator[RawRecorder]:
    with RawRecorder() as server:
        yield server


@contextmanager
def _fallback() -> Iterator[None]:
    """An httpx without ``Client._transport_for_url``: the lean path must not be taken."""
    with mock.patch.object(rotator.http, "_TRANSPORT_FOR_URL", "_no_such_method"):
        yield


@contextmanager
def _no_proxy_environment() -> Iterator[None]:
    names = [*_PROXY_VARIABLES, *(name.lower() for name in _PROXY_VARIABLES)]
    with mock.patch.dict("os.environ"):  # restored whole on the way out
        for name in names:
            os.environ.pop(name, None)  # an empty lower-case one would hide an upper-case one
        yield


def _full_path_client() -> httpx.Client:
    """What httpx's own path sends: a plain client with the headers rotator's clients carry."""
    return httpx.Client(
        follow_redirects=False,
        headers={"User-Agent": "rotator", "Accept-Encoding": ACCEPT_ENCODING},
    )


def _lean_only(client: httpx.Client) -> None:
    """Make the full path fail on this client, so a passing call took the lean one."""

    def refuse(*args: object, **kwargs: object) -> httpx.Request:
        raise AssertionError("the full path (build_request) was taken")

    client.build_request = refuse  # type: ignore[method-assign]


# -- the class test: same request on the wire, same answer ----------------------------------

_TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1)
_FREE_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
    max_size=20,
)
_HEADER_VALUE = st.from_regex(r"[!-~]([ !-~]{0,30}[!-~])?", fullmatch=True)
_SKIPPED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "cookie"}
_HEADERS = st.dictionaries(
    st.one_of(_TOKEN, st.sampled_from(["User-Agent", "accept", "ACCEPT-ENCODING", "X-Api-Key"])),
    _HEADER_VALUE,
    max_size=4,
).filter(
    lambda headers: (
        len({name.lower() for name in headers}) == len(headers)
        and not _SKIPPED_HEADERS & {name.lower() for name in headers}
    )
)
_PATH = st.lists(st.text("abcXYZ019-._~%!$&'()*+,;=:@ é", min_size=1, max_size=8), max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)
_QUERY = st.one_of(
    st.just(""),
    st.lists(st.tuples(_TOKEN, st.text("ab1=%+ é", max_size=6)), min_size=1, max_size=3).map(
        lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs)
    ),
)
_PARAMS = st.one_of(st.none(), st.dictionaries(_FREE_TEXT, _FREE_TEXT, max_size=3))
_BODY = st.one_of(
    st.just({}),
    st.builds(lambda form: {"data": form}, st.dictionaries(_FREE_TEXT, _FREE_TEXT, max_size=4)),
    st.builds(lambda raw: {"content": raw}, st.binary(max_size=300)),
)
_ANSWER = st.builds(
    RawAnswer,
    status=st.sampled_from([200, 201, 204, 302, 400, 401, 404, 429, 500, 503]),
    body=st.binary(max_size=200),
    headers=st.lists(
        st.tuples(st.sampled_from(["X-Request-Id", "Retry-After", "Date", "Set-Cookie"]), _TOKEN),
        max_size=3,
    ).map(lambda pairs: [("Content-Type", "application/json"), *pairs]),
)


def _exchange(
    recorder: RawRecorder, client: httpx.Client, answer: RawAnswer, **call: object
) -> tuple[HttpAnswer, RawRequest]:
    recorder.reply = lambda request: answer
    recorder.take()
    got = send(client, **call)  # type: ignore[arg-type]
    (request,) = recorder.take()
    return got, request


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    path=_PATH,
    query=_QUERY,
    params=_PARAMS,
    body=_BODY,
    headers=_HEADERS,
    answer=_ANSWER,
    fallback=st.booleans(),
)
def test_send_puts_the_same_request_on_the_wire_as_httpx(
    recorder: RawRecorder,
    *,
    method: str,
    path: str,
    query: str,
    params: dict[str, str] | None,
    body: dict[str, object],
    headers: dict[str, str],
    answer: RawAnswer,
    fallback: bool,
) -> None:
    call = {
        "method": method,
        "url": recorder.url + path + query,
        "params": params,
        "headers": headers or None,
        "timeout": 7.0,
        **body,
    }
    with _no_proxy_environment(), _full_path_client() as full:
        clients = HttpClients()
        try:
            polite = clients.get()
            if fallback:
                with _fallback():
                    lean_answer, lean_request = _exchange(recorder, polite, answer, **call)
            else:
                _lean_only(polite)
                lean_answer, lean_request = _exchange(recorder, polite, answer, **call)
            full_answer, full_request = _exchange(recorder, full, answer, **call)
        finally:
            clients.close()
    assert lean_request.without("cookie") == full_request.without("cookie")
    assert lean_request.header("cookie") == []
    assert lean_answer == full_answer


@pytest.mark.parametrize("fallback", [False, True], ids=["lean", "fallback"])
def test_the_answer_headers_and_a_gzip_body_come_back_as_httpx_reads_them(
    recorder: RawRecorder, fallback: bool
) -> None:
    body = b'{"access_token": "at"}' * 50
    recorder.reply = lambda request: RawAnswer(
        429,
        gzip.compress(body),
        [
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("Retry-After", "7"),
            ("Date", "Sat, 28 Nov 2026 00:00:00 GMT"),
        ],
    )
    clients = HttpClients()
    try:
        with _no_proxy_environment(), _fallback() if fallback else nullcontext():
            got = send(clients.get(), "POST", recorder.url + "/token", data={"a": "b"})
    finally:
        clients.close()
    assert got == HttpAnswer(
        429, body, "application/json", "7", date="Sat, 28 Nov 2026 00:00:00 GMT"
    )
    (gate,) = clients.politeness.stats()
    assert gate.requests == {"4xx": 1}
    assert gate.paused_for > 0  # the 429's Retry-After reached the gate


# -- cookies -------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True], ids=["lean", "fallback"])
def test_a_cookie_one_call_is_given_is_never_sent_on_the_next(
    recorder: RawRecorder, fallback: bool
) -> None:
    recorder.reply = lambda request: RawAnswer(
        200,
        b"{}",
        [("Content-Type", "application/json"), ("Set-Cookie", "session=account-a; Path=/")],
    )
    recorder.take()
    clients = HttpClients()
    try:
        with _no_proxy_environment(), _fallback() if fallback else nullcontext():
            client = clients.get()
            for account in ("a", "b", "c"):
                send(client, "POST", recorder.url + "/token", data={"account": account})
            assert not list(client.cookies.jar)
    finally:
        clients.close()
    requests = recorder.take()
    assert len(requests) == 3
    assert all(request.header("cookie") == [] for request in requests)


def test_the_recorder_would_see_a_cookie_httpx_sends(recorder: RawRecorder) -> None:
    # the control: with httpx's own jar the second call carries the first one's cookie
    recorder.reply = lambda request: RawAnswer(
        200, b"{}", [("Set-Cookie", "session=account-a; Path=/")]
    )
    recorder.take()
    with _no_proxy_environment(), _full_path_client() as client:
        send(client, "POST", recorder.url + "/token")
        send(client, "POST", recorder.url + "/token")
    assert [request.header("cookie") for request in recorder.take()] == [
        [],
        [b"session=account-a"],
    ]


# -- the proxy from the environment --------------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True], ids=["lean", "fallback"])
@pytest.mark.parametrize("variable", ["HTTP_PROXY", "all_proxy"])
def test_a_proxy_from_the_environment_carries_the_call(
    recorder: RawRecorder, fallback: bool, variable: str
) -> None:
    recorder.reply = lambda request: RawAnswer(200, b'{"via": "proxy"}')
    recorder.take()
    with _no_proxy_environment(), mock.patch.dict("os.environ", {variable: recorder.url}):
        clients = HttpClients()  # a client reads the environment when it is made
        try:
            with _fallback() if fallback else nullcontext():
                got = send(
                    clients.get(),
                    "POST",
                    "http://vendor.invalid/oauth/token?tenant=t1",
                    data={"grant_type": "client_credentials"},
                )
        finally:
            clients.close()
    assert got.body == b'{"via": "proxy"}'
    (request,) = recorder.take()
    assert request.request_line == b"POST http://vendor.invalid/oauth/token?tenant=t1 HTTP/1.1"
    assert request.header("host") == [b"vendor.invalid"]
    assert request.body == b"grant_type=client_credentials"


def test_no_proxy_sends_the_call_direct(recorder: RawRecorder) -> None:
    recorder.take()
    proxy = "http://127.0.0.1:9"  # discard: a call through it would fail
    environment = {"HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1"}
    with _no_proxy_environment(), mock.patch.dict("os.environ", environment):
        clients = HttpClients()
        try:
            assert send(clients.get(), "GET", recorder.url + "/direct").status == 200
        finally:
            clients.close()
    (request,) = recorder.take()
    assert request.request_line == b"GET /direct HTTP/1.1"


# -- errors keep their types and never show the query --------------------------------------


@pytest.mark.parametrize("fallback", [False, True], ids=["lean", "fallback"])
def test_a_refused_connection_is_a_connection_error_without_the_query(fallback: bool) -> None:
    clients = HttpClients()
    try:
        with (
            _no_proxy_environment(),
            _fallback() if fallback else nullcontext(),
            pytest.raises(TransientProviderError) as caught,
        ):
            send(clients.get(), "POST", "http://127.0.0.1:9/token?refresh_token=secret-rt")
    finally:
        clients.close()
    assert caught.value.code == "connection_error"
    assert "secret-rt" not in str(caught.value)
    assert clients.politeness.stats()[0].requests == {"error": 1}  # the slot was freed


@pytest.mark.parametrize("url", ["ftp://vendor.example/token?x=1", "vendor.example/token?x=1"])
def test_a_url_that_is_not_http_is_bad_url(url: str) -> None:
    clients = HttpClients()
    try:
        with _no_proxy_environment(), pytest.raises(PermanentProviderError) as caught:
            send(clients.get(), "POST", url)
    finally:
        clients.close()
    assert caught.value.code == "bad_url"
    assert "x=1" not in str(caught.value)


def test_a_silent_vendor_is_a_timeout(recorder: RawRecorder) -> None:
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        clients = HttpClients()
        try:
            with _no_proxy_environment(), pytest.raises(TransientProviderError) as caught:
                send(clients.get(), "GET", f"http://127.0.0.1:{port}/token?code=c", timeout=0.3)
        finally:
            clients.close()
    assert caught.value.code == "timeout"
    assert "code=c" not in str(caught.value)


def test_user_info_in_the_url_takes_the_full_path(recorder: RawRecorder) -> None:
    # httpx turns user info into Basic auth; the lean path leaves that to it
    recorder.reply = lambda request: RawAnswer()
    recorder.take()
    port = recorder.port
    clients = HttpClients()
    try:
        with _no_proxy_environment():
            send(clients.get(), "POST", f"http://user:pw@127.0.0.1:{port}/token")
    finally:
        clients.close()
    (request,) = recorder.take()
    assert request.header("authorization") == [b"Basic dXNlcjpwdw=="]


def test_open_answer_on_a_plain_client_is_httpx_stream(recorder: RawRecorder) -> None:
    recorder.reply = lambda request: RawAnswer(200, b"plain")
    with _no_proxy_environment(), httpx.Client() as client:
        response = open_answer(client, "GET", recorder.url + "/x")
        try:
            assert response.read() == b"plain"
        finally:
            response.close()
