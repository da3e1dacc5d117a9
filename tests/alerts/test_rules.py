from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from rotator.alerts.rules import Kind, Severity, evaluate, human_duration
from rotator.providers.faxplus import FaxPlusSettings
from rotator.secrets import Secret
from tests.support.alertkit import ALERTS, T0, settings, state


def faxplus_settings(**kw: object) -> FaxPlusSettings:
    base: dict[str, object] = {
        "provider": "faxplus",
        "sinks": [{"store": "files", "path": "x.json"}],
        "client_id": "APIK-1",
        "client_secret": "env:FAXPLUS_SECRET",
        "enhanced_security": True,
        "redirect_uri": "https://rotator.example.com/oauth/callback",
    }
    return FaxPlusSettings.model_validate({**base, **kw})


def test_no_condition_for_a_healthy_account() -> None:
    assert evaluate(state(refresh_expires_at=T0 + timedelta(days=20)), settings(), ALERTS, T0) == []
    assert evaluate(state(), settings(), ALERTS, T0) == []  # refresh token never expires


@pytest.mark.parametrize(
    ("left", "level", "severity", "told"),
    [
        (timedelta(days=7), 1, Severity.WARNING, "expires in 7 days"),
        (timedelta(days=3), 2, Severity.WARNING, "expires in 3 days"),
        (timedelta(hours=30), 2, Severity.WARNING, "expires in 30 hours"),
        (timedelta(hours=23), 3, Severity.CRITICAL, "expires in 23 hours"),
        (timedelta(hours=-2), 4, Severity.CRITICAL, "expired 2 hours ago"),
    ],
)
def test_refresh_token_thresholds(
    left: timedelta, level: int, severity: Severity, told: str
) -> None:
    end = T0 + left
    [cond] = evaluate(state(refresh_expires_at=end), faxplus_settings(), ALERTS, T0)
    assert (cond.kind, cond.level, cond.severity) == (Kind.REFRESH_TOKEN_EXPIRY, level, severity)
    stamp = end.strftime("%Y-%m-%d %H:%M UTC")
    assert cond.summary == (
        f"refresh token of acme-fax {told} ({stamp}); re-authorize with: rotator authorize acme-fax"
    )
    assert cond.action == "rotator authorize acme-fax"
    assert cond.reauthorize


def test_refresh_token_expiry_of_an_account_without_a_code_flow_says_import() -> None:
    end = T0 + timedelta(days=3)
    [cond] = evaluate(state(refresh_expires_at=end), settings(), ALERTS, T0)
    assert cond.action.startswith("rotator import acme-fax")
    assert not cond.reauthorize
    # with the console on, a Fax.Plus account needs no redirect_uri of its own
    bare = faxplus_settings(redirect_uri=None)
    [cond] = evaluate(state(refresh_expires_at=end), bare, ALERTS, T0)
    assert cond.action.startswith("rotator import acme-fax")
    [cond] = evaluate(state(refresh_expires_at=end), bare, ALERTS, T0, console=True)
    assert cond.action == "rotator authorize acme-fax"


def test_account_overrides_thresholds() -> None:
    own = settings(refresh_token_warn=[timedelta(days=14)])
    [cond] = evaluate(state(refresh_expires_at=T0 + timedelta(days=10)), own, ALERTS, T0)
    assert (cond.level, cond.severity) == (1, Severity.CRITICAL)  # the only threshold is the last


def test_personal_access_token_expiry_says_replace_it() -> None:
    # as faxplus-pat records it: the published copy lives max_lifetime, the grant to its date
    pat = state(
        provider="faxplus-pat",
        refresh_token=None,
        expires_at=T0 + timedelta(hours=1),
        refresh_expires_at=T0 + timedelta(days=2),
    )
    [cond] = evaluate(pat, settings("faxplus-pat"), ALERTS, T0)
    assert cond.kind is Kind.TOKEN_EXPIRY
    assert cond.summary == (
        "personal access token of acme-fax expires in 2 days (2026-11-03 10:00 UTC); "
        "replace the token: create a new personal access token, put it where "
        "accounts.acme-fax.token points, set accounts.acme-fax.expires_at and reload rotator"
    )
    # an hour-long published copy is no reason to alert
    assert (
        evaluate(
            replace(pat, refresh_expires_at=T0 + timedelta(days=90)),
            settings("faxplus-pat"),
            ALERTS,
            T0,
        )
        == []
    )


def test_failures_reach_the_threshold() -> None:
    assert evaluate(state(consecutive_failures=2), settings(), ALERTS, T0) == []
    [cond] = evaluate(
        state(consecutive_failures=3, last_error="vendor answered HTTP 503"), settings(), ALERTS, T0
    )
    assert (cond.kind, cond.severity) == (Kind.FAILURES, Severity.WARNING)
    assert "3 rotations of acme-fax failed in a row (last error: vendor answered HTTP 503)" in (
        cond.summary
    )
    assert "rotator refresh acme-fax" in cond.summary


def test_dead_grant_is_critical_and_says_authorize_or_import() -> None:
    dead = state(
        failed=True,
        consecutive_failures=5,
        last_error="invalid_grant: token revoked",
        last_error_code="invalid_grant",
    )
    [cond] = evaluate(dead, faxplus_settings(), ALERTS, T0)
    assert (cond.kind, cond.severity) == (Kind.DEAD, Severity.CRITICAL)
    assert cond.action == "rotator authorize acme-fax"
    assert cond.reauthorize
    [cond] = evaluate(dead, settings(), ALERTS, T0)
    assert "rotator import acme-fax" in cond.summary
    bad_client = replace(dead, last_error_code="invalid_client")
    [cond] = evaluate(bad_client, settings(), ALERTS, T0)
    assert "fix the client credentials of acme-fax" in cond.summary
    [cond] = evaluate(replace(dead, last_error_code="secret_ref"), settings(), ALERTS, T0)
    assert cond.action == "fix the secret reference named in the error, then reload rotator"
    [cond] = evaluate(replace(dead, last_error_code="http_400"), settings(), ALERTS, T0)
    assert cond.action == "fix the cause, then: rotator refresh acme-fax"


def test_access_token_lapsing_before_the_next_attempt() -> None:
    late = state(expires_at=T0 + timedelta(minutes=10), next_refresh_at=T0 + timedelta(minutes=30))
    [cond] = evaluate(late, settings(), ALERTS, T0)
    assert (cond.kind, cond.level, cond.severity) == (Kind.LAPSE, 1, Severity.WARNING)
    [cond] = evaluate(late, settings(), ALERTS, T0 + timedelta(minutes=11))
    assert (cond.level, cond.severity) == (2, Severity.CRITICAL)


def test_human_duration() -> None:
    assert human_duration(timedelta(days=2, hours=23)) == "3 days"
    assert human_duration(timedelta(hours=47)) == "47 hours"
    assert human_duration(timedelta(minutes=61)) == "61 minutes"
    assert human_duration(timedelta(seconds=1)) == "1 second"
    assert human_duration(timedelta(days=2, seconds=-1)) == "2 days"
    assert human_duration(timedelta(hours=2, seconds=-1)) == "2 hours"


_TOKENS = st.builds(lambda h: f"tok-{h}", st.text("0123456789abcdef", min_size=8, max_size=40))


@hypothesis_settings(max_examples=200)
@given(
    refresh=_TOKENS,
    access=_TOKENS,
    around=st.lists(st.text(max_size=30), min_size=3, max_size=3),
    failed=st.booleans(),
)
def test_no_token_of_the_state_reaches_a_summary_whatever_the_vendor_echoed(
    refresh: str, access: str, around: list[str], failed: bool
) -> None:
    """The error text is the vendor's; one that echoes the tokens it was sent (before,
    between, after any text) yields a summary without them, for dead grants and failures."""
    echo = f"{around[0]}{refresh}{around[1]}{access}{around[2]}"
    st_ = state(
        refresh_token=Secret(refresh),
        access_token=Secret(access),
        failed=failed,
        consecutive_failures=5,
        last_error=echo,
        last_error_code="invalid_grant",
    )
    [cond] = [c for c in evaluate(st_, settings(), ALERTS, T0) if c.kind is not Kind.LAPSE]
    assert cond.kind is (Kind.DEAD if failed else Kind.FAILURES)
    assert refresh not in cond.summary and access not in cond.summary
    assert "(last error: " in cond.summary
