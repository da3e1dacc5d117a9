"""The authorize listener and pasted codes (rotator/commands/callback.py), over real HTTP.

The listener's promise: only the redirect that carries the printed ``state`` on
the redirect path ends the wait. Whatever else reaches it (a guessed state, no
state, an error with a wrong state, another path, another method) is answered
400 and ignored, however many arrive, and the real redirect still gets its answer.
"""

from __future__ import annotations

import io
import secrets
import threading
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.commands.callback import (
    AuthorizeError,
    Callback,
    CallbackListener,
    is_loopback,
    listen_address,
    parse_pasted_code,
    read_code,
    same_state,
    warn_if_exposed,
)
from rotator.commands.common import UsageError

pytestmark = pytest.mark.timeout(120)

PATH = "/callback"


class Waiting:
    """A listener whose ``wait`` runs in a thread, as ``rotator authorize`` waits."""

    def __init__(self, state: str, timeout: float = 60) -> None:
        self.listener = CallbackListener("127.0.0.1", 0, PATH, state)
        self.url = f"http://127.0.0.1:{self.listener.port}"
        self.result: Callback | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._wait, args=(timeout,), daemon=True)

    def _wait(self, timeout: float) -> None:
        try:
            self.result = self.listener.wait(timeout)
        except AuthorizeError as exc:
            self.error = exc

    def __enter__(self) -> Waiting:
        self.listener.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.__exit__()

    @property
    def waiting(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as http:
        yield http


def wrong_requests(state: str) -> list[tuple[str, str]]:
    """(method, target) pairs that must all be refused by a listener expecting ``state``."""
    near = state[:-1] + ("A" if state[-1] != "A" else "B")
    return [
        ("GET", f"{PATH}?code=stolen&state=guess"),
        ("GET", f"{PATH}?code=stolen&state={near}"),  # one character off
        ("GET", f"{PATH}?code=stolen&state={state[:-1]}"),  # a prefix
        ("GET", f"{PATH}?code=stolen&state={state}x"),  # longer
        ("GET", f"{PATH}?code=stolen"),  # no state
        ("GET", f"{PATH}?code=stolen&state="),  # an empty state
        ("GET", f"{PATH}?error=access_denied&state=guess"),  # an error with a wrong state
        ("GET", f"{PATH}?error=access_denied"),  # an error without a state
        ("GET", f"/other?code=stolen&state={state}"),  # the right state on another path
        ("GET", f"{PATH}/?code=stolen&state={state}"),
        ("GET", f"/?code=stolen&state={state}"),
        ("GET", f"{PATH}?state={state}"),  # the right state but neither code nor error
        ("GET", f"{PATH}?code=stolen&state=%C3%A9t%C3%A9"),  # not ASCII: must not crash
        ("GET", f"{PATH}?code=stolen&state=%FF%FE"),  # not even UTF-8
        ("GET", "/favicon.ico"),
        ("POST", f"{PATH}?code=stolen&state={state}"),
    ]


def test_wrong_requests_are_refused_and_the_right_one_still_answered(
    client: httpx.Client,
) -> None:
    state = secrets.token_urlsafe(24)
    with Waiting(state) as waiting:
        wrong = wrong_requests(state) * 5
        for method, target in wrong:
            reply = client.request(method, waiting.url + target)
            assert reply.status_code == 400, (method, target)
            assert "rotator received" not in reply.text
            assert waiting.waiting, f"{method} {target} ended the wait"
        assert waiting.listener.refused == len(wrong) - 5  # POST is turned away before it
        right = client.get(waiting.url + PATH, params={"code": "the-code", "state": state})
        waiting.join()
    assert right.status_code == 200 and "You can close this" in right.text
    assert waiting.result == Callback(code="the-code", state=state, error=None)


def test_wrong_requests_in_parallel_do_not_race_the_right_one() -> None:
    state = secrets.token_urlsafe(24)
    with Waiting(state) as waiting:

        def flood() -> None:
            with httpx.Client(timeout=10) as http:
                for _, target in wrong_requests(state)[:-1] * 3:
                    assert http.get(waiting.url + target).status_code == 400

        floods = [threading.Thread(target=flood) for _ in range(4)]
        for thread in floods:
            thread.start()
        with httpx.Client(timeout=10) as http:
            right = http.get(waiting.url + PATH, params={"code": "c", "state": state})
        for thread in floods:
            thread.join(30)
        waiting.join()
    assert right.status_code == 200
    assert waiting.result is not None and waiting.result.code == "c"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    guesses=st.lists(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40), min_size=1, max_size=8
    )
)
def test_no_guessed_state_ends_the_wait(guesses: list[str]) -> None:
    state = secrets.token_urlsafe(24)
    with Waiting(state) as waiting, httpx.Client(timeout=10) as http:
        for guess in guesses:
            if guess == state:
                continue
            query = urlencode({"code": "stolen", "state": guess})
            assert http.get(f"{waiting.url}{PATH}?{query}").status_code == 400
            assert waiting.waiting
        assert http.get(waiting.url + PATH, params={"code": "c", "state": state}).status_code == 200
        waiting.join()
    assert waiting.result is not None and waiting.result.code == "c"


def test_an_error_with_the_right_state_ends_the_wait_and_is_reported(
    client: httpx.Client,
) -> None:
    state = secrets.token_urlsafe(24)
    with Waiting(state) as waiting:
        reply = client.get(waiting.url + PATH, params={"error": "access_denied", "state": state})
        waiting.join()
        # the browser reloading the page: the first answer stands
        again = client.get(waiting.url + PATH, params={"code": "late", "state": state})
    assert reply.status_code == 400 and "not granted" in reply.text
    assert again.status_code == 400
    assert waiting.result == Callback(code=None, state=state, error="access_denied")


def test_only_wrong_requests_then_the_timeout_names_them(client: httpx.Client) -> None:
    state = secrets.token_urlsafe(24)
    with Waiting(state, timeout=1.0) as waiting:
        for _ in range(3):
            client.get(waiting.url + PATH, params={"code": "x", "state": "guess"})
        waiting.join()
    assert waiting.result is None
    assert isinstance(waiting.error, AuthorizeError)
    message = str(waiting.error)
    assert "no redirect arrived within 1s (3 other requests were ignored)" in message
    assert "--code" in message


def test_a_busy_port_is_refused_saying_what_to_do() -> None:
    busy = r"cannot listen on 127\.0\.0\.1:\d+.*--listen"
    with (
        CallbackListener("127.0.0.1", 0, PATH, "s") as first,
        pytest.raises(AuthorizeError, match=busy),
    ):
        CallbackListener("127.0.0.1", first.port, PATH, "s")


# --- the state comparison --------------------------------------------------------------------


@given(st.text(), st.one_of(st.none(), st.text()))
def test_same_state_is_equality_and_never_raises(expected: str, given_state: str | None) -> None:
    assert same_state(expected, given_state) is (expected == given_state)


@given(st.text(min_size=1))
def test_same_state_accepts_the_state_itself(state: str) -> None:
    assert same_state(state, state)


# --- where to listen, and the warning -------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"]
)
def test_loopback_listen_addresses_do_not_warn(host: str) -> None:
    err = io.StringIO()
    assert is_loopback(host)
    assert not warn_if_exposed(host, 8765, err)
    assert err.getvalue() == ""


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "[::]", "192.168.1.20", "[2001:db8::1]", "rotator.example.com"]
)
def test_other_listen_addresses_warn_naming_the_risk_and_the_loopback_way(host: str) -> None:
    err = io.StringIO()
    assert not is_loopback(host)
    assert warn_if_exposed(host, 8765, err)
    text = err.getvalue()
    assert text.startswith(f"warning: --listen {host}:8765 is not a loopback address")
    assert "anyone who can reach this machine" in text
    assert "--listen 127.0.0.1:8765" in text


@pytest.mark.parametrize(
    ("listen", "redirect", "expected"),
    [
        (None, "http://127.0.0.1:8765/callback", ("127.0.0.1", 8765)),
        (None, "http://localhost/cb", ("localhost", 80)),
        (None, "http://[::1]:9000/cb", ("::1", 9000)),
        (None, "https://app.example.com/cb", None),
        (None, "https://127.0.0.1:8765/cb", None),  # we cannot answer TLS
        ("0.0.0.0:8765", "https://app.example.com/cb", ("0.0.0.0", 8765)),
        ("[::]:8765", "https://app.example.com/cb", ("[::]", 8765)),
    ],
)
def test_listen_address(
    listen: str | None, redirect: str, expected: tuple[str, int] | None
) -> None:
    assert listen_address(listen, redirect) == expected


@pytest.mark.parametrize("listen", ["8765", "host:", ":8765", "host:0", "host:70000", "h:p"])
def test_a_bad_listen_address_is_a_usage_error_with_an_example(listen: str) -> None:
    with pytest.raises(UsageError, match=r"is not HOST:PORT \(e\.g\. 127\.0\.0\.1:8765\)"):
        listen_address(listen, "http://127.0.0.1:1/cb")


# --- pasted codes and --code - ---------------------------------------------------------------


def test_parse_pasted_code() -> None:
    assert parse_pasted_code("  abc \n") == Callback(code="abc", state=None)
    pasted = parse_pasted_code("https://app/cb?code=c1&state=s1")
    assert (pasted.code, pasted.state) == ("c1", "s1")
    assert parse_pasted_code("?error=access_denied&state=s").error == "access_denied"
    assert parse_pasted_code("code=c2&state=s2") == Callback(code="c2", state="s2")


def test_read_code_takes_the_first_non_empty_line_of_stdin() -> None:
    assert read_code("-", io.StringIO("\n  https://app/cb?code=c&state=s  \nmore\n")) == (
        "https://app/cb?code=c&state=s"
    )
    assert read_code("a-code", io.StringIO("ignored")) == "a-code"
    with pytest.raises(UsageError, match="read nothing from standard input"):
        read_code("-", io.StringIO(" \n\n"))
