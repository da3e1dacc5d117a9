"""The webhook notification against a real receiver that verifies with ``standardwebhooks``."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from rotator.notify import NotifyError, post_webhook, sign, signing_key
from rotator.waits import Waiter
from tests.notify.kit import HOOK_SECRET, TOKEN, Receiver, event, webhook_entry

ENTRY = webhook_entry("HOOK_URL", "HOOK_SECRET")


def test_a_delivery_verifies_with_standardwebhooks_and_carries_no_token(
    receiver: Receiver,
) -> None:
    attempts = post_webhook(ENTRY, event(), replica="host/1:ab", waiter=Waiter())
    assert attempts == 1
    [got] = receiver.got
    assert got.verified
    assert got.headers["webhook-id"] == event().id
    assert got.body == {
        "type": "token.rotated",
        "timestamp": "2026-11-01T10:00:00Z",
        "data": {
            "event": "rotated",
            "account": "acme",
            "expires_at": "2026-11-01T11:00:00Z",
            "sinks": ["files:acme.json", "vault:apps/acme"],
            "replica": "host/1:ab",
        },
    }
    assert TOKEN not in str(got.headers) + str(got.body)


def test_a_forged_or_wrongly_keyed_delivery_does_not_verify(receiver: Receiver) -> None:
    receiver.secret = "whsec_" + base64.b64encode(b"another-key-of-enough-length").decode()
    post_webhook(ENTRY, event(), replica="r", waiter=Waiter())
    assert receiver.got[0].verified is False


def test_failures_are_retried_with_the_same_id_and_a_fresh_signature(receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 429, 408]
    attempts = post_webhook(ENTRY, event(), replica="r", waiter=Waiter())
    assert attempts == 5
    assert {d.headers["webhook-id"] for d in receiver.got} == {event().id}
    assert all(d.verified for d in receiver.got)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_a_4xx_refusal_is_not_retried(receiver: Receiver, status: int) -> None:
    receiver.statuses = [status]
    with pytest.raises(NotifyError, match=f"HTTP {status}") as caught:
        post_webhook(ENTRY, event(), replica="r", waiter=Waiter())
    assert len(receiver.got) == 1
    assert "env:HOOK_URL" in str(caught.value) and receiver.url not in str(caught.value)


def test_retries_are_bounded_by_attempts(receiver: Receiver) -> None:
    receiver.statuses = [502] * 10
    entry = webhook_entry("HOOK_URL", "HOOK_SECRET", attempts=3)
    with pytest.raises(NotifyError, match="attempt 3 of 3"):
        post_webhook(entry, event(), replica="r", waiter=Waiter())
    assert len(receiver.got) == 3


def test_a_stopped_waiter_ends_the_retries(receiver: Receiver) -> None:
    receiver.statuses = [502] * 10
    waiter = Waiter()
    waiter.stop()
    with pytest.raises(NotifyError, match="stopped after attempt 1"):
        post_webhook(ENTRY, event(), replica="r", waiter=waiter)
    assert len(receiver.got) == 1


def test_a_receiver_that_does_not_answer_is_a_failure_naming_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.net import free_port

    monkeypatch.setenv("HOOK_URL", f"http://127.0.0.1:{free_port()}/x")
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    with pytest.raises(NotifyError, match="webhook env:HOOK_URL did not answer"):
        post_webhook(
            webhook_entry("HOOK_URL", "HOOK_SECRET", attempts=2),
            event(),
            replica="r",
            waiter=Waiter(),
        )


@pytest.mark.parametrize(
    "bad", ["not base64 at all!", "whsec_c2hvcnQ=", "whsec_", "hunter2hunter2hunter2"]
)
def test_a_secret_that_is_not_whsec_base64_is_refused_and_not_shown(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("HOOK_SECRET", bad)
    with pytest.raises(NotifyError, match="not a Standard Webhooks secret") as caught:
        post_webhook(ENTRY, event(), replica="r", waiter=Waiter())
    assert bad.removeprefix("whsec_") not in str(caught.value) or bad == "whsec_"
    assert not caught.value.retry
    assert receiver.got == []


def test_a_missing_secret_reference_is_a_failure_naming_it(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOOK_SECRET")
    with pytest.raises(NotifyError, match="HOOK_SECRET is not set"):
        post_webhook(ENTRY, event(), replica="r", waiter=Waiter())


@given(key=st.binary(min_size=16, max_size=64), prefixed=st.booleans(), body=st.binary())
def test_signing_matches_the_reference_implementation(
    key: bytes, prefixed: bool, body: bytes
) -> None:
    """Class test: any key (whsec_ or bare base64), any body, signs as standardwebhooks does."""
    from datetime import UTC, datetime

    secret = ("whsec_" if prefixed else "") + base64.b64encode(key).decode()
    assert signing_key(secret, "s") == key
    text = body.decode("latin-1")
    expected = Webhook(secret).sign("msg_1", datetime.fromtimestamp(1_800_000_000, UTC), text)
    assert sign(key, "msg_1", 1_800_000_000, text.encode()) == expected


def test_a_reference_that_holds_no_http_url_is_final(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", "ftp://127.0.0.1/x")
    with pytest.raises(NotifyError, match="does not hold an http") as caught:
        post_webhook(ENTRY, event(), replica="r", waiter=Waiter())
    assert "attempt 1 of 5" in str(caught.value)


class RecordingWaiter(Waiter):
    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return True  # the pause is recorded, not waited


@pytest.mark.parametrize(("asked", "pause"), [("7", 7.0), ("0", 1.0), ("100000", 300.0)])
def test_a_receivers_retry_after_is_honoured_between_attempts(
    receiver: Receiver, asked: str, pause: float
) -> None:
    receiver.statuses, receiver.retry_after = [429], asked
    waiter = RecordingWaiter()
    assert post_webhook(ENTRY, event(), replica="r", waiter=waiter) == 2
    assert waiter.pauses == [pause]  # the backoff (1 s) is a floor, 5 minutes the ceiling
