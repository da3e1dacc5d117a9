"""Time in FaxMAX passwordless logins: a fresh reading per login token, the vendor's clock measured.

A login token's ``exp`` may be at most 3 s ahead of the vendor's clock and must
not be behind it, so it is only good for about three seconds. A refresh may make
two calls (the keep-alive, then a login), and the first may take as long as the
account's ``timeout``: a login token built from a time read before the first
call can be dead before it is sent. :class:`RunClock` gives every login token a
fresh reading, taken immediately before its own request.

When the vendor refuses ``exp`` anyway, the cause is a clock (ours or the
vendor's) or a slow path, not a dead grant. :class:`Timing` measures what can
be measured: the local clock against the answer's ``Date`` header (a resolution
of one second) and how long the call took, so the error says which it was.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

__all__ = ["SKEW_TOLERANCE", "RunClock", "Timing", "refuses_exp"]

#: a measured offset or a call duration below this explains nothing: the Date
#: header has a resolution of one second
SKEW_TOLERANCE = 1.0

# What a vendor says when it refuses a login token's time. FaxMAX does not publish
# its error codes or messages, so this is a guess kept narrow: words about expiry
# or a time window, never a wrong code, password or cipher, and not a bare "exp"
# (a message listing the fields a token must hold names it too).
_EXP_WORDS = re.compile(
    r"(?i)expir|\bahead\b|\bfuture\b|\bclock\b|\btoo (early|late|old)\b|\bstale\b"
    r"|\bexp\b[^.;]*\b(past|passed|invalid|wrong|late|early|outside|range)\b"
)


def refuses_exp(message: str) -> bool:
    """True when a vendor's refusal of a login token talks about its time."""
    return bool(_EXP_WORDS.search(message))


class RunClock:
    """The rotation's ``now``, advanced by the monotonic time since: a fresh reading each call.

    Anchored on the ``now`` the caller passes (the rotation's clock, so tests and
    the rotation agree on the time); advanced by :func:`time.monotonic`, so a
    wall-clock step in the middle of a rotation does not move a login's ``exp``.
    """

    def __init__(self, start: datetime, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._start = start
        self._monotonic = monotonic
        self._origin = monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._monotonic() - self._origin)


@dataclass(frozen=True, slots=True)
class Timing:
    """One call as the local clock saw it, and the vendor's ``Date`` header."""

    sent_at: datetime
    received_at: datetime
    vendor_date: str | None = None

    @property
    def elapsed(self) -> float:
        return (self.received_at - self.sent_at).total_seconds()

    def offset(self) -> float | None:
        """Local clock minus the vendor's, in seconds; None without a usable Date header.

        The vendor stamped its answer somewhere inside the call, in the second its
        Date header names: the middle of the call against the middle of that second.
        """
        if not self.vendor_date:
            return None
        try:
            vendor = parsedate_to_datetime(self.vendor_date)
        except (TypeError, ValueError, IndexError):
            return None
        if vendor.tzinfo is None:  # "-0000": the header is UTC by definition (RFC 9110)
            return None
        middle = self.sent_at + (self.received_at - self.sent_at) / 2
        return (middle - vendor).total_seconds() - 0.5

    def explains_exp_refusal(self) -> bool:
        """A measured skew or a slow call: the refusal is about time, not the login."""
        offset = self.offset()
        skewed = offset is not None and abs(offset) >= SKEW_TOLERANCE
        return skewed or self.elapsed >= SKEW_TOLERANCE

    def describe(self) -> str:
        """What was measured, for an error message: the offset and the call's duration."""
        took = f"the call took {self.elapsed:.1f} s"
        offset = self.offset()
        if offset is None:
            return f"the clock offset is unknown (the answer has no usable Date header); {took}"
        if abs(offset) < SKEW_TOLERANCE:
            return (
                f"local clock agrees with the vendor's within {SKEW_TOLERANCE:g} s "
                f"(its Date header); {took}"
            )
        way = "ahead of" if offset > 0 else "behind"
        return (
            f"local clock is {abs(offset):.1f} s {way} the vendor's "
            f"(measured from its Date header, to about 1 s); {took}"
        )
