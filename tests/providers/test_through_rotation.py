"""Hostile answers through a real rotation over a file store: refused before the state write.

On main, an access token holding a lone surrogate made the file store's UTF-8
write raise and stopped the daemon, a newline in a token forged a line in
``env`` sinks, and ``expires_in: 0`` refreshed every second publishing expired
tokens. Here each is a transient ``bad_response``: the state keeps the last
good grant, the sinks keep the last good token, the retry backs off, and the
recorded error names the field without its value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from rotator.rotation.rotator import Outcome
from rotator.state import AccountState
from tests.fakes.vendorhttp import Reply, ScriptedVendor, running
from tests.support import leakcheck

SECRET = leakcheck.register("cs-through+rotation/7Yq2", "client secret")
GOOD = leakcheck.register("at-good-through-rotation-41", "access token")


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedVendor]:
    monkeypatch.setenv("HOSTILE_ROTATION_SECRET", SECRET)
    with running(ScriptedVendor()) as server:
        yield server


def _answer(vendor: ScriptedVendor, body: dict[str, Any], status: int = 200) -> None:
    raw = json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as "\ud800"
    vendor.script = lambda request: Reply(status, raw, "application/json")


def _account(rotator_for: Callable[..., Any], vendor: ScriptedVendor) -> tuple[Any, Any]:
    return rotator_for(
        provider="oauth2",
        token_url=vendor.base_url + "/token",
        grant="client_credentials",
        client_id="app",
        client_secret="env:HOSTILE_ROTATION_SECRET",
        retry_initial="5s",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"access_token": "AT-\ud800x"}, "access_token"),
        ({"access_token": "AT\nLD_PRELOAD=/tmp/x.so"}, "access_token"),
        ({"access_token": "AT\r\nLD_PRELOAD=/tmp/x.so"}, "access_token"),
        ({"access_token": "AT\x00\x1b[2J"}, "access_token"),
        ({"token_type": "Bearer\nLD_PRELOAD=/tmp/x.so"}, "token_type"),
        ({"scope": "read\nLD_PRELOAD=/tmp/x.so"}, "scope"),
        ({"user_id": "u\ud800"}, "user_id"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 1e-300}, "expires_in"),
        ({"expires_in": -5}, "expires_in"),
        ({"expires_in": 59}, "expires_in"),
        ({"expires_in": "NaN"}, "expires_in"),
    ],
)
def test_a_hostile_answer_is_refused_before_anything_is_written(
    vendor: ScriptedVendor,
    rotator_for: Callable[..., Any],
    body: dict[str, Any],
    field: str,
) -> None:
    rotator, store = _account(rotator_for, vendor)
    _answer(vendor, {"access_token": GOOD, "token_type": "Bearer", "expires_in": 3600})
    assert rotator.rotate("acct", force=True).ok
    good_sink = store.read("acct.json").data

    _answer(vendor, {"access_token": GOOD, "token_type": "Bearer", "expires_in": 3600} | body)
    before = datetime.now(UTC)
    result = rotator.rotate("acct", force=True)

    assert result.result == Outcome.TRANSIENT  # backs off; alerts if it persists
    assert result.error is not None and result.error.code == "bad_response"
    assert result.next_run is not None and result.next_run >= before + timedelta(seconds=2)
    state = AccountState.from_record("acct", store.read("state/acct").data)
    assert state.access_token is not None and state.access_token.reveal() == GOOD
    assert state.last_error_code == "bad_response" and field in state.last_error
    assert state.last_error.isascii() and state.last_error.isprintable()
    assert "LD_PRELOAD" not in state.last_error
    assert store.read("acct.json").data == good_sink  # nothing published


@pytest.mark.parametrize(
    "description",
    [
        f"with secret {SECRET}",
        f"client {SECRET}\x1b[2J is blocked",
        f"The client secret {quote(SECRET, safe='')} is wrong",
    ],
)
def test_an_error_echoing_the_client_secret_is_recorded_without_it(
    vendor: ScriptedVendor, rotator_for: Callable[..., Any], description: str
) -> None:
    rotator, store = _account(rotator_for, vendor)
    _answer(vendor, {"error": "invalid_client", "error_description": description}, status=401)
    result = rotator.rotate("acct", force=True)
    assert not result.ok
    state = AccountState.from_record("acct", store.read("state/acct").data)
    assert state.last_error_code == "invalid_client"
    assert SECRET not in state.last_error and "\x1b" not in state.last_error
    assert quote(SECRET, safe="") not in state.last_error
    assert SECRET not in str(result.error)
