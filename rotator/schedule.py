"""When to refresh next. Pure: no I/O, no clock, no randomness of its own.

Every function takes ``now`` and a random number ``rand`` in [0, 1) from the
caller, so the rules are tested exactly:

- the refresh point is ``refresh_before`` ahead of expiry when set, else the
  moment ``refresh_share`` of the lifetime has passed;
- ``jitter`` moves it *earlier* by a random part of the window, never later,
  so jitter can never eat into the safety margin;
- a failed attempt retries after a capped exponential backoff with jitter, and
  the last attempt is always made before the token expires;
- :func:`next_run` is the one place that decides when an account's job runs
  again, from the outcome of the run that just ended.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "FAILED_RECHECK",
    "MIN_REFRESH_INTERVAL",
    "Outcome",
    "RefreshPolicy",
    "RunFacts",
    "is_due",
    "last_chance",
    "next_refresh",
    "next_run",
    "planned_refresh",
    "refresh_point",
    "retry_at",
]

#: a stopped account (permanent failure) is looked at again this often, so a grant
#: seeded by `rotator import`/`authorize` or a manual refresh resumes the schedule
FAILED_RECHECK = timedelta(seconds=60)
#: a vendor answering expires_in 0 must not make us refresh in a tight loop
MIN_REFRESH_INTERVAL = timedelta(seconds=1)
#: another worker's lease: look again this long after it ends (or after a lost
#: compare-and-set on it)
_BUSY_RECHECK = timedelta(seconds=1)


class Outcome(enum.StrEnum):
    """The outcome of one job run. The values are metric labels and log values: keep them."""

    SUCCESS = "success"  # the vendor gave us a new token; state written; sinks published
    ADOPTED = "adopted"  # another worker had rotated; we took its result
    NOT_DUE = "not_due"  # nothing to do yet (sinks checked)
    BUSY = "busy"  # another worker holds the lease
    TRANSIENT = "transient_error"  # will retry with backoff
    PERMANENT = "permanent_error"  # stopped until reload or manual refresh
    FAILED = "failed"  # was already permanently failed; not attempted

    @property
    def ok(self) -> bool:
        return self in (Outcome.SUCCESS, Outcome.ADOPTED, Outcome.NOT_DUE)

    @property
    def failing(self) -> bool:
        return self in (Outcome.TRANSIENT, Outcome.PERMANENT, Outcome.FAILED)


_MIN_MARGIN = timedelta(seconds=1)
_MAX_MARGIN = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a run learned that decides its next run (see :func:`next_run`).

    ``planned``: the moment already planned for the account (the state's
    ``next_refresh_at``, or the retry a failure recorded in the state).
    ``failures``: consecutive failed attempts. ``sink_failures``: consecutive runs
    with a sink that missed the token. ``lease_until``: when another worker's
    lease ends. ``issued_at``/``expires_at``: the token still in use, whose last
    chance a retry never passes. ``retry_after``: the vendor's floor, in
    seconds. ``hold``: a rotated grant waits to land; try again this soon.
    """

    planned: datetime | None = None
    failures: int = 1
    sink_failures: int = 0
    lease_until: datetime | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    retry_after: float | None = None
    hold: timedelta | None = None


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    refresh_share: float = 0.67
    refresh_before: timedelta | None = None
    jitter: float = 0.1
    retry_initial: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(minutes=5)

    @classmethod
    def from_settings(cls, settings: Any) -> RefreshPolicy:
        return cls(
            refresh_share=settings.refresh_share,
            refresh_before=settings.refresh_before,
            jitter=settings.jitter,
            retry_initial=settings.retry_initial,
            retry_max=settings.retry_max,
        )


def refresh_point(issued_at: datetime, expires_at: datetime, policy: RefreshPolicy) -> datetime:
    """The planned refresh moment before jitter."""
    lifetime = expires_at - issued_at
    if lifetime <= timedelta(0):
        return issued_at
    if policy.refresh_before is not None:
        # A refresh_before as long as the lifetime would refresh in a tight loop;
        # keep at least a tenth of the lifetime between refreshes.
        return max(expires_at - policy.refresh_before, issued_at + lifetime * 0.1)
    return issued_at + lifetime * policy.refresh_share


def next_refresh(
    issued_at: datetime, expires_at: datetime, policy: RefreshPolicy, rand: float
) -> datetime:
    """The refresh point, moved earlier by up to ``jitter`` of the window."""
    point = refresh_point(issued_at, expires_at, policy)
    window = point - issued_at
    return point - window * (policy.jitter * min(max(rand, 0.0), 1.0))


def last_chance(issued_at: datetime | None, expires_at: datetime) -> datetime:
    """The latest moment an attempt still has a margin before expiry."""
    lifetime = expires_at - issued_at if issued_at is not None else _MAX_MARGIN * 20
    margin = min(_MAX_MARGIN, max(_MIN_MARGIN, lifetime * 0.05))
    return expires_at - margin


def retry_at(
    now: datetime,
    failures: int,
    policy: RefreshPolicy,
    rand: float,
    *,
    issued_at: datetime | None = None,
    expires_at: datetime | None = None,
    retry_after: float | None = None,
) -> datetime:
    """When to try again after ``failures`` consecutive failures (1 = the first).

    Backoff is ``retry_initial * 2**(failures-1)`` capped at ``retry_max``, with
    "equal jitter" (half fixed, half random). A vendor's ``Retry-After`` is a floor.
    While the current token is still valid, no retry is planned past its last
    chance: the attempt is pulled in so one is always made before expiry.
    """
    exponent = min(max(failures, 1) - 1, 30)
    backoff = min(policy.retry_max, policy.retry_initial * (1 << exponent))
    delay = backoff * 0.5 + backoff * 0.5 * min(max(rand, 0.0), 1.0)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    when: datetime = now + delay
    if expires_at is not None:
        deadline = last_chance(issued_at, expires_at)
        if now < deadline < when:
            when = deadline
    return when


def is_due(
    now: datetime,
    *,
    has_token: bool,
    next_refresh_at: datetime | None,
) -> bool:
    """True when an account should be refreshed now."""
    if not has_token or next_refresh_at is None:
        return True
    return now >= next_refresh_at


def planned_refresh(
    issued_at: datetime, expires_at: datetime, policy: RefreshPolicy, rand: float
) -> datetime:
    """When a token just issued is refreshed: :func:`next_refresh`, never sooner
    than :data:`MIN_REFRESH_INTERVAL` after issue."""
    return max(next_refresh(issued_at, expires_at, policy, rand), issued_at + MIN_REFRESH_INTERVAL)


def next_run(
    outcome: Outcome,
    facts: RunFacts,
    *,
    now: datetime,
    policy: RefreshPolicy,
    rand: float,
) -> datetime:
    """When the job of an account runs again after a run that ended in ``outcome``.

    - failed / permanent_error: look again after :data:`FAILED_RECHECK`;
    - busy: just after the other worker's lease ends (else in a moment);
    - transient_error: a grant waiting to land is retried after ``hold``; a time
      already planned (a failure recorded its retry in the state) stands; else
      the backoff of :func:`retry_at` for ``failures``;
    - success / adopted / not_due: the planned refresh (now when nothing is
      planned), pulled in by the sink backoff while a sink keeps failing.
    """
    if outcome in (Outcome.FAILED, Outcome.PERMANENT):
        return now + FAILED_RECHECK
    if outcome is Outcome.BUSY:
        return (facts.lease_until or now) + _BUSY_RECHECK
    if outcome is Outcome.TRANSIENT:
        if facts.hold is not None:
            return now + facts.hold
        if facts.planned is not None:
            return facts.planned
        return retry_at(
            now,
            facts.failures,
            policy,
            rand,
            issued_at=facts.issued_at,
            expires_at=facts.expires_at,
            retry_after=facts.retry_after,
        )
    if not facts.sink_failures:
        return facts.planned or now
    # The state is safe; come back for the sinks that missed it, backing off while
    # they stay broken.
    soon = retry_at(now, facts.sink_failures, policy, rand)
    return min(facts.planned, soon) if facts.planned else soon
