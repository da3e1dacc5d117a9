"""Politeness toward vendors: per-host rate limits, concurrency caps and pauses.

A platform with thousands of grants on one vendor must never look like an attack: after
a restart with every account overdue, or when the vendor says ``429``, rotator must slow
down for the whole host, not per account. So every call to a vendor passes one gate per
*host* (scheme, host and port of the URL):

- a concurrency cap (calls in flight at once);
- a token bucket (GCRA: ``per_second`` sustained, ``burst`` at most at once);
- a pause: ``429``/``503`` with ``Retry-After`` (seconds or an HTTP date, capped
  at :data:`MAX_PAUSE`) closes the host's bucket until then, for every account
  on it; without ``Retry-After`` the host backs off exponentially
  (:data:`BACKOFF_FIRST` doubling up to :data:`BACKOFF_MAX`) until an answer
  that is neither. After a pause the bucket starts empty: no burst at its end.

Waiting goes through :class:`~rotator.waits.Waiter` (the daemon's stop ends it) and is
bounded by a *budget* (half the call's timeout, see :mod:`rotator.http`): a call that
would wait longer is not made; :class:`Throttled` (a transient provider error with
``retry_after``) says when to try again, so a worker never holds an account's lease
through a long pause. The daemon asks :meth:`Politeness.hold_off` before a rotation and
defers a job whose host is paused (:meth:`Politeness.deferral_slot` spaces them at the
host's rate: no burst at the pause's end either); the start's plan for overdue accounts is
:func:`rotator.service.scheduling.spread_overdue`. Pure but for the injected clock and waiter.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from rotator.errors import TransientProviderError
from rotator.waits import Waiter

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "DEFAULT_LIMIT",
    "MAX_PAUSE",
    "WAIT_BUCKETS",
    "HostStats",
    "Permit",
    "Politeness",
    "RateLimit",
    "Sleeper",
    "Throttled",
    "host_key",
    "host_label",
    "retry_after_seconds",
    "status_class",
]

#: the longest pause a vendor's Retry-After may ask for
MAX_PAUSE = 3600.0
#: a 429/503 without Retry-After pauses the host this long, doubling each time in a row
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
#: buckets of the limiter wait histogram (seconds)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 3600.0)
#: a waiter for a concurrency slot looks at the stop flag at least this often
_SLOT_POLL = 0.25


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One host's limits. Defaults: 10 calls/s sustained, 20 at once, 8 in flight.

    10/s is far below any published OAuth token-endpoint limit we know of and
    still rotates 36,000 one-hour tokens an hour per host; a burst of 20 lets a
    small deployment's start go at once; 8 in flight is half the default worker
    pool, so one slow vendor cannot hold every worker.
    """

    per_second: float = 10.0
    burst: int = 20
    concurrency: int = 8

    def strictest(self, other: RateLimit) -> RateLimit:
        return RateLimit(
            per_second=min(self.per_second, other.per_second),
            burst=min(self.burst, other.burst),
            concurrency=min(self.concurrency, other.concurrency),
        )


DEFAULT_LIMIT = RateLimit()
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: str) -> str:
    """``scheme://host:port`` of ``url``: what one gate guards (no user, path or query)."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "https").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS.get(scheme, 0)}"


def host_label(key: str) -> str:
    """The metric label of a host key: the host name, with the port only when it is
    not the scheme's own (never a user, path or query: URLs can carry secrets)."""
    scheme, _, rest = key.partition("://")
    host, _, port = rest.rpartition(":")
    if port and port != str(_DEFAULT_PORTS.get(scheme, "")):
        return f"{host}:{port}"
    return host


def status_class(status: int | None) -> str:
    """``2xx`` .. ``5xx`` for an answer, ``error`` for no answer (timeout, refused)."""
    return f"{status // 100}xx" if status is not None and 100 <= status <= 599 else "error"


def retry_after_seconds(value: str | None, now_wall: float) -> float | None:
    """A Retry-After header (delta seconds or an HTTP date) as seconds from now,
    capped at :data:`MAX_PAUSE`; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_wall
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_PAUSE)


class Sleeper(Protocol):
    """What the gate waits with: :class:`rotator.waits.Waiter`, or a test's fake clock."""

    def sleep(self, seconds: float) -> bool: ...
    @property
    def stopped(self) -> bool: ...


class Throttled(TransientProviderError):
    """The call was not made: its host is paused or its bucket is too far behind."""

    def __init__(self, label: str, wait: float, why: str) -> None:
        super().__init__(
            "rate_limited",
            f"{label}: not called, {why} (would wait {wait:.1f}s); "
            "tried again when the host takes calls",
            retry_after=max(wait, 0.0),
        )


@dataclass(frozen=True, slots=True)
class Permit:
    """A concurrency slot of one host, held from before the call until its answer."""

    key: str
    waited: float


@dataclass
class _Gate:
    """One host: its limit, bucket, slots, pause and counters. Guarded by the
    Politeness lock (one lock: a gate's work is a few arithmetic steps)."""

    limit: RateLimit
    #: GCRA's theoretical arrival time: calls may start at tat - tolerance
    tat: float = 0.0
    in_flight: int = 0
    #: callers waiting for a slot, in arrival order
    waiting: deque[object] = field(default_factory=deque)
    paused_until: float = 0.0
    backoff: float = 0.0
    #: the last slot handed to a job deferred by a pause (spaced at the rate)
    deferral_line: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    wait_buckets: list[int] = field(default_factory=lambda: [0] * len(WAIT_BUCKETS))
    wait_count: int = 0
    wait_sum: float = 0.0
    deferred: int = 0

    @property
    def interval(self) -> float:
        return 1.0 / self.limit.per_second

    @property
    def tolerance(self) -> float:
        return (self.limit.burst - 1) * self.interval

    def start_time(self, now: float) -> float:
        """When the next call may start (not reserved)."""
        return max(now, self.tat - self.tolerance, self.paused_until)

    def reserve(self, start: float) -> None:
        self.tat = max(self.tat, start) + self.interval

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)
        # the bucket starts empty at the pause's end: one call per interval, no burst
        self.tat = max(self.tat, self.paused_until + self.tolerance)

    def observe_wait(self, seconds: float) -> None:
        self.wait_count += 1
        self.wait_sum += seconds
        for index, bound in enumerate(WAIT_BUCKETS):
            if seconds <= bound:
                self.wait_buckets[index] += 1


@dataclass(frozen=True, slots=True)
class HostStats:
    """One host's counters, for the metrics collector (cumulative since start)."""

    label: str
    requests: Mapping[str, int]
    #: cumulative counts per WAIT_BUCKETS bound, then count and sum (a histogram)
    wait_buckets: tuple[int, ...]
    wait_count: int
    wait_sum: float
    paused_for: float
    deferred: int


class Politeness:
    """Every host's gate. Thread-safe; one per process (:class:`rotator.http.HttpClients`)."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        default: RateLimit = DEFAULT_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        waiter: Sleeper | None = None,
    ) -> None:
        self._limits: dict[str, RateLimit] = dict(limits or {})
        self._default = default
        self.clock = clock
        self.wall = wall
        self.waiter: Sleeper = waiter if waiter is not None else Waiter()
        self._gates: dict[str, _Gate] = {}
        self._cond = threading.Condition()
        #: the latest end of any host's pause: before it, hold_off looks at the hosts;
        #: after it (almost always), it answers 0 without a lock or a URL parsed
        self._any_paused_until = 0.0

    def configure(
        self, limits: Mapping[str, RateLimit], default: RateLimit = DEFAULT_LIMIT
    ) -> None:
        """New limits (a reload); counters, buckets and pauses of known hosts carry on."""
        with self._cond:
            self._limits = dict(limits)
            self._default = default
            for key, gate in self._gates.items():
                gate.limit = self._limits.get(key, default)
            self._cond.notify_all()  # a raised concurrency cap frees waiters

    def limit_for(self, key: str) -> RateLimit:
        return self._limits.get(key, self._default)

    def _gate(self, key: str) -> _Gate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(self.limit_for(key))
        return gate

    # -- one call -----------------------------------------------------------------------

    def acquire(self, url: str, budget: float) -> Permit:
        """Wait for a slot and a bucket token of ``url``'s host, at most ``budget`` s.

        Raises :class:`Throttled` (the call must not be made) when the wait would
        be longer or the waiter is stopped (shutdown).
        """
        key = host_key(url)
        began = self.clock()
        # a slot is freed by another thread: that wait is on the real clock
        slot_deadline = time.monotonic() + budget
        with self._cond:
            gate = self._gate(key)
            if gate.waiting or gate.in_flight >= gate.limit.concurrency:
                # first come, first served: without a queue one worker can lose every wake-up
                ticket = object()
                gate.waiting.append(ticket)
                try:
                    while gate.waiting[0] is not ticket or gate.in_flight >= gate.limit.concurrency:
                        left = slot_deadline - time.monotonic()
                        if self.waiter.stopped or left <= 0:
                            raise Throttled(
                                host_label(key), budget, "its concurrency cap is reached"
                            )
                        self._cond.wait(min(left, _SLOT_POLL))
                finally:
                    gate.waiting.remove(ticket)
                    self._cond.notify_all()  # the next in the queue looks again
            now = self.clock()
            start = gate.start_time(now)
            if start > began + budget or self.waiter.stopped:
                why = "the vendor asked for a pause" if gate.paused_until > now else "rate limit"
                raise Throttled(host_label(key), start - now, why)
            gate.reserve(start)
            gate.in_flight += 1
            if start <= now:  # no wait (a pause is in start_time): one lock, not three
                gate.observe_wait(now - began)
                return Permit(key, now - began)
        while True:
            if not self.waiter.sleep(start - now):
                self.release(Permit(key, 0.0), None, None, called=False)
                raise Throttled(host_label(key), start - now, "rotator is stopping")
            with self._cond:
                # a 429/503 that paused the host while this call waited for its start
                # holds it too: the vendor asked every call to wait, not only later ones
                now = self.clock()
                paused = gate.paused_until > start
                if paused:
                    start = gate.start_time(now)
                    if start <= began + budget:
                        gate.reserve(start)
            if not paused:
                break
            if start > began + budget:
                self.release(Permit(key, 0.0), None, None, called=False)
                raise Throttled(host_label(key), start - now, "the vendor asked for a pause")
        waited = max(self.clock() - began, start - began)
        with self._cond:
            gate.observe_wait(waited)
        return Permit(key, waited)

    def release(
        self, permit: Permit, status: int | None, retry_after: str | None, *, called: bool = True
    ) -> None:
        """The call's answer (``status`` None: none came); frees the slot, pauses on 429/503."""
        with self._cond:
            gate = self._gate(permit.key)
            gate.in_flight = max(0, gate.in_flight - 1)
            if called:
                kind = status_class(status)
                gate.requests[kind] = gate.requests.get(kind, 0) + 1
            if status in (429, 503):
                seconds = retry_after_seconds(retry_after, self.wall())
                if seconds is None:
                    gate.backoff = min(BACKOFF_MAX, gate.backoff * 2 or BACKOFF_FIRST)
                    seconds = gate.backoff
                gate.pause(self.clock() + seconds)
                self._any_paused_until = max(self._any_paused_until, gate.paused_until)
            elif status is not None:
                gate.backoff = 0.0
            self._cond.notify_all()

    # -- the daemon's view --------------------------------------------------------------

    def hold_off(self, urls: Iterable[str]) -> float:
        """Seconds until every host of ``urls`` takes calls again (0: now)."""
        now = self.clock()
        if now >= self._any_paused_until:
            return 0.0
        with self._cond:
            paused = [g.paused_until for k in map(host_key, urls) if (g := self._gates.get(k))]
        return max(0.0, max(paused, default=now) - now)

    def deferral_slot(self, url: str) -> float:
        """Seconds from now for a job deferred by its host's pause: after the pause,
        one per rate interval in the order they were deferred (counted as a wait)."""
        now = self.clock()
        with self._cond:
            gate = self._gate(host_key(url))
            slot = max(gate.paused_until, gate.deferral_line + gate.interval, now)
            gate.deferral_line = slot
            gate.deferred += 1
            gate.observe_wait(slot - now)
            return slot - now

    def stats(self) -> list[HostStats]:
        now = self.clock()
        with self._cond:
            return [
                HostStats(
                    label=host_label(key),
                    requests=dict(gate.requests),
                    wait_buckets=tuple(gate.wait_buckets),
                    wait_count=gate.wait_count,
                    wait_sum=gate.wait_sum,
                    paused_for=max(0.0, gate.paused_until - now),
                    deferred=gate.deferred,
                )
                for key, gate in sorted(self._gates.items())
            ]
