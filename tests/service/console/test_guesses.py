"""Wrong viewer tokens are rate limited (rotator/service/console/guesses.py), through the
page's real answers: no client gets more than its share of guesses checked per window,
all clients together no more than the overall cap, and signed-in viewers are never held."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.service.console.guesses import OVERALL, PER_PEER, WINDOW, Guesses
from tests.service.console.test_page import VIEWER_TOKEN, call, page, signed_in


def test_the_sixth_wrong_token_waits_the_window_even_when_right_and_others_are_not_held() -> None:
    clock = [1_800_000_000.0]
    target = page(token=VIEWER_TOKEN, clock=clock)
    cookie = signed_in(target)  # a viewer signed in before the guessing
    for guess in range(PER_PEER):
        clock[0] += 1
        assert call(target, "POST", form={"token": f"guess-{guess}"}, peer="10.0.0.9")[0] == 401
    status, head, text = call(target, "POST", form={"token": VIEWER_TOKEN}, peer="10.0.0.9")
    assert status == 429 and int(head["Retry-After"]) == WINDOW - PER_PEER + 1
    assert "Set-Cookie" not in head and "server.console.viewer_token" in text
    bearer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    assert call(target, headers=bearer, peer="10.0.0.9")[0] == 429
    # the signed-in viewer and another client are not held back
    assert call(target, headers={"Cookie": cookie}, peer="10.0.0.9")[0] == 200
    assert call(target, headers=bearer, peer="10.0.0.10")[0] == 200
    # once the oldest wrong guess has left the window, one more try is checked
    clock[0] += WINDOW - PER_PEER + 1
    assert call(target, "POST", form={"token": VIEWER_TOKEN}, peer="10.0.0.9")[0] == 303


def test_wrong_bearer_tokens_count_as_guesses() -> None:
    target = page(token=VIEWER_TOKEN, clock=[1_800_000_000.0])
    for _ in range(PER_PEER):
        assert call(target, headers={"Authorization": "Bearer nope"}, peer="10.0.0.1")[0] == 401
    assert call(target, headers={"Authorization": "Bearer nope"}, peer="10.0.0.1")[0] == 429


def test_without_a_viewer_token_nothing_is_counted() -> None:
    target = page(clock=[1_800_000_000.0])
    for _ in range(PER_PEER * 3):
        assert call(target, headers={"Authorization": "Bearer x"}, peer="10.0.0.1")[0] == 403
    assert call(target, peer="127.0.0.1")[0] == 200


@settings(max_examples=60)
@given(
    attempts=st.lists(
        st.tuples(st.integers(0, 80), st.floats(0, 40, allow_nan=False)), min_size=1, max_size=300
    )
)
def test_no_client_and_no_crowd_gets_more_guesses_checked_than_allowed(
    attempts: list[tuple[int, float]],
) -> None:
    clock = [1_800_000_000.0]
    target = page(token=VIEWER_TOKEN, clock=clock)
    checked: list[tuple[float, int]] = []
    for peer, pause in attempts:
        clock[0] += pause
        status, _, _ = call(target, "POST", form={"token": "wrong"}, peer=f"10.0.{peer}.1")
        assert status in (401, 429)
        if status == 401:
            checked.append((clock[0], peer))
    for moment, _ in checked:
        recent = [p for t, p in checked if moment - WINDOW < t <= moment]
        assert len(recent) <= OVERALL
        assert all(recent.count(p) <= PER_PEER for p in set(recent))


def test_the_memory_of_clients_is_bounded() -> None:
    guesses = Guesses(lambda: 0.0, peers=10)
    for peer in range(1000):
        guesses.wrong(f"p{peer}")
    assert len(guesses._by_peer) == 10  # the least recently wrong are forgotten


@pytest.mark.parametrize("peers", [1, 3])
def test_a_crowd_is_capped_overall(peers: int) -> None:
    guesses = Guesses(lambda: 0.0, per_peer=1000, overall=7)
    for n in range(7):
        assert guesses.wait(f"p{n % peers}") == 0
        guesses.wrong(f"p{n % peers}")
    assert guesses.wait("someone-new") == WINDOW
