"""When to refresh next (rotator/schedule.py). Pure: exact times, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.schedule import (
    FAILED_RECHECK,
    MIN_REFRESH_INTERVAL,
    Outcome,
    RefreshPolicy,
    RunFacts,
    is_due,
    last_chance,
    next_refresh,
    next_run,
    planned_refresh,
    refresh_point,
    retry_at,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
S = timedelta(seconds=1)


def test_refresh_point_by_share() -> None:
    policy = RefreshPolicy(refresh_share=0.67, jitter=0)
    assert refresh_point(T0, T0 + HOUR, policy) == T0 + HOUR * 0.67
    assert refresh_point(T0, T0 + 100 * S, RefreshPolicy(refresh_share=0.5)) == T0 + 50 * S


def test_refresh_before_wins_over_share() -> None:
    policy = RefreshPolicy(refresh_share=0.2, refresh_before=timedelta(minutes=5))
    assert refresh_point(T0, T0 + HOUR, policy) == T0 + timedelta(minutes=55)


def test_refresh_before_longer_than_the_lifetime_keeps_a_floor() -> None:
    # Refreshing at issue time would loop; at least a tenth of the lifetime passes.
    policy = RefreshPolicy(refresh_before=timedelta(hours=2))
    assert refresh_point(T0, T0 + HOUR, policy) == T0 + HOUR * 0.1
    policy = RefreshPolicy(refresh_before=HOUR)
    assert refresh_point(T0, T0 + HOUR, policy) == T0 + HOUR * 0.1


def test_zero_or_negative_lifetime_refreshes_at_issue() -> None:
    assert refresh_point(T0, T0, RefreshPolicy()) == T0
    assert refresh_point(T0, T0 - S, RefreshPolicy()) == T0


def test_jitter_zero_rand_is_the_refresh_point() -> None:
    policy = RefreshPolicy(refresh_share=0.5, jitter=0.2)
    assert next_refresh(T0, T0 + HOUR, policy, 0.0) == T0 + HOUR * 0.5


def test_jitter_near_one_moves_earlier_by_the_whole_jitter_share() -> None:
    policy = RefreshPolicy(refresh_share=0.5, jitter=0.2)
    window = HOUR * 0.5
    moved = next_refresh(T0, T0 + HOUR, policy, 0.999999)
    assert moved < T0 + window
    assert moved >= T0 + window - window * 0.2
    assert abs(moved - (T0 + window * 0.8)) < S


def test_out_of_range_rand_is_clamped() -> None:
    policy = RefreshPolicy(refresh_share=0.5, jitter=0.2)
    assert next_refresh(T0, T0 + HOUR, policy, -3.0) == T0 + HOUR * 0.5
    assert next_refresh(T0, T0 + HOUR, policy, 7.0) == T0 + HOUR * 0.5 * 0.8


@settings(deadline=None)
@given(
    lifetime_s=st.floats(1, 400 * 86400),
    share=st.floats(0.01, 0.99),
    jitter=st.floats(0, 0.5),
    rand=st.floats(0, 1, exclude_max=True),
    before_s=st.none() | st.floats(0, 400 * 86400),
)
def test_jitter_only_moves_earlier_and_stays_in_bounds(
    lifetime_s: float, share: float, jitter: float, rand: float, before_s: float | None
) -> None:
    policy = RefreshPolicy(
        refresh_share=share,
        jitter=jitter,
        refresh_before=None if before_s is None else timedelta(seconds=before_s),
    )
    expires = T0 + timedelta(seconds=lifetime_s)
    point = refresh_point(T0, expires, policy)
    moved = next_refresh(T0, expires, policy, rand)
    assert T0 <= point <= expires
    assert moved <= point
    assert moved >= point - (point - T0) * jitter - timedelta(microseconds=1)
    assert moved >= T0


def test_from_settings_takes_the_account_keys() -> None:
    settings = SimpleNamespace(
        refresh_share=0.5,
        refresh_before=timedelta(minutes=1),
        jitter=0.0,
        retry_initial=2 * S,
        retry_max=60 * S,
    )
    assert RefreshPolicy.from_settings(settings) == RefreshPolicy(
        0.5, timedelta(minutes=1), 0.0, 2 * S, 60 * S
    )


# -- retries ---------------------------------------------------------------------------

RETRY = RefreshPolicy(retry_initial=5 * S, retry_max=300 * S)


@pytest.mark.parametrize(
    ("failures", "backoff_s"),
    [(0, 5), (1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (6, 160), (7, 300), (50, 300)],
)
def test_backoff_doubles_and_caps_at_retry_max(failures: int, backoff_s: float) -> None:
    # "Equal jitter": half fixed, half random; rand 0 -> half, rand ~1 -> the whole.
    assert retry_at(T0, failures, RETRY, 0.0) == T0 + timedelta(seconds=backoff_s / 2)
    assert retry_at(T0, failures, RETRY, 1.0) == T0 + timedelta(seconds=backoff_s)
    late = retry_at(T0, failures, RETRY, 0.999)
    assert T0 + timedelta(seconds=backoff_s / 2) < late < T0 + timedelta(seconds=backoff_s)


def test_huge_failure_counts_do_not_overflow() -> None:
    assert retry_at(T0, 10**9, RETRY, 0.5) == T0 + timedelta(seconds=225)


def test_retry_after_is_a_floor() -> None:
    assert retry_at(T0, 1, RETRY, 0.0, retry_after=60) == T0 + timedelta(seconds=60)
    # Shorter than the backoff: the backoff stands.
    assert retry_at(T0, 3, RETRY, 1.0, retry_after=1) == T0 + timedelta(seconds=20)


def test_retry_is_pulled_in_to_the_last_chance_before_expiry() -> None:
    issued = T0 - timedelta(minutes=55)
    expires = T0 + timedelta(minutes=5)  # an hour-long token with 5 minutes left
    chance = last_chance(issued, expires)
    assert chance == expires - timedelta(seconds=30)
    when = retry_at(T0, 8, RETRY, 1.0, issued_at=issued, expires_at=expires)
    assert when == chance
    # Even a vendor's Retry-After does not push the last attempt past expiry.
    when = retry_at(T0, 1, RETRY, 0.0, issued_at=issued, expires_at=expires, retry_after=3600)
    assert when == chance


def test_retry_well_before_expiry_is_not_pulled_in() -> None:
    expires = T0 + HOUR
    assert retry_at(T0, 1, RETRY, 0.0, issued_at=T0, expires_at=expires) == T0 + 2.5 * S


def test_after_the_last_chance_backoff_resumes() -> None:
    # The last attempt was made at the last chance; later retries follow the backoff.
    expires = T0 + 10 * S
    assert retry_at(T0, 3, RETRY, 1.0, issued_at=T0 - HOUR, expires_at=expires) == T0 + 20 * S


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [(HOUR, 30 * S), (timedelta(seconds=200), 10 * S), (timedelta(seconds=20), S)],
)
def test_last_chance_margin_scales_with_the_lifetime(
    lifetime: timedelta, margin: timedelta
) -> None:
    assert last_chance(T0, T0 + lifetime) == T0 + lifetime - margin


def test_last_chance_without_issue_time_assumes_a_long_token() -> None:
    assert last_chance(None, T0 + HOUR) == T0 + HOUR - 30 * S


@settings(deadline=None)
@given(
    lifetime_s=st.floats(5, 86400),
    elapsed_share=st.floats(0, 0.99),
    failures=st.integers(1, 40),
    rand=st.floats(0, 1),
    retry_after=st.none() | st.floats(0, 3600),
)
def test_an_attempt_is_always_planned_before_expiry(
    lifetime_s: float, elapsed_share: float, failures: int, rand: float, retry_after: float | None
) -> None:
    issued = T0
    expires = T0 + timedelta(seconds=lifetime_s)
    now = T0 + timedelta(seconds=lifetime_s * elapsed_share)
    chance = last_chance(issued, expires)
    when = retry_at(
        now, failures, RETRY, rand, issued_at=issued, expires_at=expires, retry_after=retry_after
    )
    assert when > now or when == chance
    if now < chance:
        assert when <= chance < expires


# -- is_due ----------------------------------------------------------------------------


def test_is_due() -> None:
    assert is_due(T0, has_token=False, next_refresh_at=T0 + HOUR)
    assert is_due(T0, has_token=True, next_refresh_at=None)
    assert not is_due(T0, has_token=True, next_refresh_at=T0 + S)
    assert is_due(T0, has_token=True, next_refresh_at=T0)
    assert is_due(T0, has_token=True, next_refresh_at=T0 - S)


# -- next_run: the one decision of when a job runs again ----------------------------------

POLICY = RefreshPolicy(retry_initial=timedelta(seconds=5), retry_max=timedelta(minutes=5))
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
rands = st.floats(min_value=0, max_value=1, exclude_max=True)


def test_next_run_for_each_outcome() -> None:
    planned = T0 + HOUR
    run = partial(next_run, now=T0, policy=POLICY, rand=0.0)
    assert run(Outcome.FAILED, RunFacts(planned=planned)) == T0 + FAILED_RECHECK
    assert run(Outcome.PERMANENT, RunFacts(planned=planned)) == T0 + FAILED_RECHECK
    assert run(Outcome.BUSY, RunFacts(lease_until=T0 + 30 * S)) == T0 + 31 * S
    assert run(Outcome.BUSY, RunFacts()) == T0 + S  # a lost compare-and-set on the lease
    assert run(Outcome.TRANSIENT, RunFacts(hold=8 * S, planned=planned)) == T0 + 8 * S
    assert run(Outcome.TRANSIENT, RunFacts(planned=planned)) == planned
    assert run(Outcome.TRANSIENT, RunFacts(failures=3)) == T0 + 10 * S  # 20 s, half fixed
    for ok in (Outcome.SUCCESS, Outcome.ADOPTED, Outcome.NOT_DUE):
        assert run(ok, RunFacts(planned=planned)) == planned
        assert run(ok, RunFacts()) == T0  # nothing planned: look now
        assert run(ok, RunFacts(planned=planned, sink_failures=1)) == T0 + 2.5 * S


def test_outcome_values_are_the_metric_labels() -> None:
    assert [o.value for o in Outcome] == [
        "success",
        "adopted",
        "not_due",
        "busy",
        "transient_error",
        "permanent_error",
        "failed",
    ]
    assert {o for o in Outcome if o.ok} == {Outcome.SUCCESS, Outcome.ADOPTED, Outcome.NOT_DUE}
    assert {o for o in Outcome if o.failing} == {
        Outcome.TRANSIENT,
        Outcome.PERMANENT,
        Outcome.FAILED,
    }


@settings(max_examples=300, deadline=None)
@given(
    outcome=st.sampled_from(list(Outcome)),
    now=moments,
    ahead=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
    failures=st.integers(min_value=1, max_value=50),
    sink_failures=st.integers(min_value=0, max_value=50),
    rand=rands,
)
def test_next_run_is_never_in_the_past_and_a_broken_sink_never_delays(
    *,
    outcome: Outcome,
    now: datetime,
    ahead: timedelta,
    failures: int,
    sink_failures: int,
    rand: float,
) -> None:
    facts = RunFacts(planned=now + ahead, failures=failures, sink_failures=sink_failures)
    when = next_run(outcome, facts, now=now, policy=POLICY, rand=rand)
    assert when >= now
    if outcome.ok:
        assert when <= now + ahead  # a failing sink only pulls the next run in
        if sink_failures:
            assert when <= now + POLICY.retry_max
    # no outcome ever plans a retry further out than the backoff cap or the recheck
    if not outcome.ok and outcome is not Outcome.TRANSIENT:
        assert when - now <= max(FAILED_RECHECK, timedelta(seconds=1))


@settings(max_examples=200, deadline=None)
@given(now=moments, lifetime=st.integers(min_value=0, max_value=86400 * 30), rand=rands)
def test_planned_refresh_is_before_expiry_and_never_a_tight_loop(
    now: datetime, lifetime: int, rand: float
) -> None:
    expires = now + timedelta(seconds=lifetime)
    when = planned_refresh(now, expires, RefreshPolicy(), rand)
    assert when >= now + MIN_REFRESH_INTERVAL
    if lifetime >= 2:
        assert when <= expires
