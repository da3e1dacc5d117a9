"""Time in FaxMAX passwordless logins: fresh readings, measured skew, transient refusals.

The emulator judges ``exp`` by its own clock and stamps its ``Date`` header with
it, so an emulator clock set apart from the provider's ``now`` is a skewed vendor.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.errors import InvalidGrant, TransientProviderError
from rotator.providers.faxmax.cipher import decrypt
from rotator.providers.faxmax.clock import RunClock, Timing, refuses_exp
from rotator.providers.faxmax.provider import JsonRpcRefused, LoginTokenTimeRefused
from rotator.providers.faxmax.rpc import EXP_REFUSED
from rotator.schedule import Outcome
from rotator.state import AccountState
from tests.fakes.faxmax import FaxmaxEmulator
from tests.fakes.vendorhttp import Reply, running
from tests.providers.faxmax.test_provider import NOW, passwordless, rpc

OFFSET = re.compile(r"local clock is (\d+\.\d) s (ahead of|behind) the vendor's")


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaxmaxEmulator]:
    with running(FaxmaxEmulator(clock=NOW.timestamp)) as server:
        monkeypatch.setenv("FAXMAX_API_CODE", server.api_code)
        monkeypatch.setenv("FAXMAX_API_PASSWORD", server.api_password)
        yield server


def exp_error(message: str = "Token expired") -> Reply:
    return Reply(200, {"jsonrpc": "2.0", "error": {"code": 1003, "message": message}, "id": 0})


@pytest.mark.parametrize(
    ("skew", "vendor_says", "way"),
    [
        (timedelta(seconds=-5), "Token expired", "behind"),
        (timedelta(seconds=7.2), "more than 3 seconds ahead", "ahead of"),
        (timedelta(minutes=-20), "Token expired", "behind"),
    ],
)
def test_a_skewed_clock_is_transient_and_the_offset_is_measured(  # noqa: PLR0917
    vendor: FaxmaxEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    skew: timedelta,
    vendor_says: str,
    way: str,
) -> None:
    # our clock is off by `skew` from the vendor's: exp lands outside its window
    with pytest.raises(LoginTokenTimeRefused) as raised:
        passwordless(settings_for, vendor).refresh(AccountState("acct"), client, NOW + skew)
    error = raised.value
    assert error.transient and not isinstance(error, InvalidGrant)
    assert error.code == EXP_REFUSED and error.status == 200
    assert vendor_says in str(error)
    found = OFFSET.search(str(error))
    assert found is not None, str(error)
    assert found.group(2) == way
    assert abs(float(found.group(1)) - abs(skew.total_seconds())) <= 1.0


def test_refused_again_with_a_measured_skew_stays_transient(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    # the clock is at fault, not the grant: retried with backoff until someone sets it
    again = replace(AccountState("acct"), last_error_code=EXP_REFUSED, consecutive_failures=5)
    with pytest.raises(LoginTokenTimeRefused, match="ahead of the vendor's"):
        passwordless(settings_for, vendor).refresh(again, client, NOW + timedelta(seconds=9))


def test_refused_again_unexplained_is_the_refusal_it_says(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    faxmax = passwordless(settings_for, vendor)
    vendor.fail_next(exp_error(), times=2)
    # the first time: transient, though the clocks agree and the call was quick
    with pytest.raises(LoginTokenTimeRefused, match="agrees with the vendor's within 1 s"):
        faxmax.refresh(AccountState("acct"), client, NOW)
    # again, and nothing measured explains it: the refusal stands (the account stops)
    again = replace(AccountState("acct"), last_error_code=EXP_REFUSED, consecutive_failures=1)
    with pytest.raises(JsonRpcRefused, match="twice in a row") as raised:
        faxmax.refresh(again, client, NOW)
    assert isinstance(raised.value, InvalidGrant) and not raised.value.transient


@pytest.mark.parametrize(
    "message",
    [
        "Token cannot be decrypted",
        "Wrong API code",
        "Unknown user",
        "Invalid params: token_",
        "Token must hold username, exp, remote_ip",
    ],
)
def test_other_refusals_of_a_login_token_are_not_about_time(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client, message: str
) -> None:
    assert not refuses_exp(message)
    vendor.fail_next(exp_error(message))
    with pytest.raises(JsonRpcRefused, match=message) as raised:
        passwordless(settings_for, vendor).refresh(AccountState("acct"), client, NOW)
    assert not raised.value.transient


@pytest.mark.parametrize(
    "message",
    [
        "Token expired",
        "Token exp is more than 3 seconds ahead",
        "login token has expired",
        "exp is in the past",
        "exp out of range",
        "token from the future",
        "check your clock",
    ],
)
def test_refusals_about_time_are_recognised(message: str) -> None:
    assert refuses_exp(message)


def test_a_keep_alive_refused_after_4_s_is_followed_by_a_successful_login(
    settings_for: Callable[..., Any], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug: one clock reading for the keep-alive and the login after it (real time)."""
    emulator = FaxmaxEmulator(delays={"Core.token_login": 4.0})
    with running(emulator) as vendor:
        monkeypatch.setenv("FAXMAX_API_CODE", vendor.api_code)
        monkeypatch.setenv("FAXMAX_API_PASSWORD", vendor.api_password)
        faxmax = passwordless(settings_for, vendor)
        first = faxmax.refresh(AccountState("acct"), client, datetime.now(UTC))
        vendor.end_sessions()
        started = datetime.now(UTC)
        second = faxmax.refresh(AccountState("acct").with_tokens(first), client, started)
        assert [rpc(r)["method"] for r in vendor.requests] == [
            "Core.login_token",
            "Core.token_login",
            "Core.login_token",
        ]
        assert second.extra["session_via"] == "api_code"
        assert second.access_token.reveal() in vendor.sessions
        # the login token was built after the slow keep-alive, not from `started`
        token_ = rpc(vendor.requests[-1])["params"]["token_"]
        exp = json.loads(decrypt("aes-256-cbc", token_, vendor.api_password))["exp"]
        assert exp >= int(started.timestamp()) + 4 + 3


def test_each_login_in_a_refresh_reads_the_clock_again() -> None:
    ticks = iter([100.0, 100.0, 103.5, 104.0])
    clock = RunClock(NOW, monotonic=lambda: next(ticks))
    assert clock.now() == NOW
    assert clock.now() == NOW + timedelta(seconds=3.5)
    assert clock.now() == NOW + timedelta(seconds=4)


def test_skew_through_rotations_retries_and_never_marks_the_account_failed(
    rotator_for: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = FaxmaxEmulator(clock=lambda: time.time() - 7.2)  # the vendor's clock is behind
    with running(emulator) as vendor:
        monkeypatch.setenv("FAXMAX_API_CODE", vendor.api_code)
        monkeypatch.setenv("FAXMAX_API_PASSWORD", vendor.api_password)
        rotator, _ = rotator_for(
            provider="faxmax",
            domain="fax.example.com",
            endpoint=vendor.endpoint,
            username=vendor.username,
            api_code="env:FAXMAX_API_CODE",
            api_password="env:FAXMAX_API_PASSWORD",
            remote_ip="10.1.2.3",
        )
        for attempt in (1, 2, 3):
            result = rotator.rotate("acct", force=True)
            assert result.result is Outcome.TRANSIENT
            assert result.state is not None and not result.state.failed
            assert result.state.consecutive_failures == attempt
            assert result.state.last_error_code == EXP_REFUSED
            found = OFFSET.search(result.state.last_error)
            assert found is not None and found.group(2) == "ahead of"
            assert 6.0 <= float(found.group(1)) <= 8.4
        vendor.clock = time.time  # the clocks agree again: the next rotation succeeds
        assert rotator.rotate("acct", force=True).ok


def test_an_unexplained_refusal_that_persists_stops_the_account(
    rotator_for: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clocks agree and the calls are quick, yet exp is refused twice in a row."""
    with running(FaxmaxEmulator()) as vendor:
        monkeypatch.setenv("FAXMAX_API_CODE", vendor.api_code)
        monkeypatch.setenv("FAXMAX_API_PASSWORD", vendor.api_password)
        rotator, _ = rotator_for(
            provider="faxmax",
            domain="fax.example.com",
            endpoint=vendor.endpoint,
            username=vendor.username,
            api_code="env:FAXMAX_API_CODE",
            api_password="env:FAXMAX_API_PASSWORD",
            remote_ip="10.1.2.3",
        )
        vendor.fail_next(exp_error(), times=2)
        first = rotator.rotate("acct", force=True)
        assert first.result is Outcome.TRANSIENT
        assert first.state is not None and not first.state.failed
        second = rotator.rotate("acct", force=True)
        assert second.result is Outcome.PERMANENT
        assert second.state is not None and second.state.failed
        assert "twice in a row" in second.state.last_error


# --- Timing: the offset estimate is as good as the Date header allows ------------------------


@given(
    skew=st.floats(-3600, 3600, allow_nan=False),
    elapsed=st.floats(0, 5, allow_nan=False),
    stamped=st.floats(0, 1, allow_nan=False),
)
def test_the_measured_offset_is_within_the_date_header_resolution(
    skew: float, elapsed: float, stamped: float
) -> None:
    sent = NOW + timedelta(seconds=0.25)
    vendor_time = sent.timestamp() - skew + stamped * elapsed  # stamped during the call
    timing = Timing(sent, sent + timedelta(seconds=elapsed), formatdate(vendor_time, usegmt=True))
    offset = timing.offset()
    assert offset is not None
    assert abs(offset - skew) <= 0.5 + elapsed / 2 + 1e-6
    text = timing.describe()
    assert f"the call took {elapsed:.1f} s" in text
    if abs(offset) >= 1:
        assert timing.explains_exp_refusal()
        assert ("ahead of" if offset > 0 else "behind") in text


@pytest.mark.parametrize("date", [None, "", "yesterday", "Tue, 24 Nov 2026 12:00:00 -0000"])
def test_no_usable_date_header_says_the_offset_is_unknown(date: str | None) -> None:
    timing = Timing(NOW, NOW + timedelta(seconds=0.2), date)
    assert timing.offset() is None
    assert "offset is unknown" in timing.describe()
    assert not timing.explains_exp_refusal()
    assert Timing(NOW, NOW + timedelta(seconds=2), date).explains_exp_refusal()  # slow


def test_exp_refusal_is_a_transient_provider_error() -> None:
    assert issubclass(LoginTokenTimeRefused, TransientProviderError)
    assert not issubclass(LoginTokenTimeRefused, InvalidGrant)
