"""When to refresh next. Pure: no I/O, no clock, no randomness of its own.

Every function takes ``now`` and a random number ``rand`` in [0, 1) from the
caller, so the rules are tested exactly:

- the refresh point is ``refresh_before`` ahead of expiry when set, else the
  moment ``refresh_share`` of the lifetime has passed;
- ``jitter`` moves it *earlier* by a random part of the window, never later,
  so jitter can never eat into the safety margin;
- a failed attempt retries after a capped exponential backoff with jitter, and
  the last attempt is always made before the token expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "RefreshPolicy",
    "is_due",
    "last_chance",
    "next_refresh",
    "refresh_point",
    "retry_at",
]

_MIN_MARGIN = timedelta(seconds=1)
_MAX_MARGIN = timedelta(seconds=30)


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
