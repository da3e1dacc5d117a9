"""The start's plan: overdue accounts spread per host, most urgent first (pure, fake clock).

The class of defect: a restart with every account overdue calls a vendor faster
than its rate, serves a token that expires later before one that expires
sooner, or pushes an account past its own expiry. Checked over hypothesis'
sets of accounts, and through the limiter itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rotator.politeness import Politeness, RateLimit, host_key
from rotator.secrets import Secret
from rotator.service.scheduling import (
    SPREAD_WINDOW,
    Overdue,
    StartPlan,
    plan_limits,
    spread_overdue,
)
from rotator.state import AccountState
from tests.test_politeness import FakeTime, assert_within_rate

A_TOKEN = "https://vendor.example/oauth/token"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOSTS = {
    host_key("https://a.example/token"): RateLimit(10, 20, 8),
    host_key("https://b.example/token"): RateLimit(0.5, 1, 1),
    host_key("http://127.0.0.1:9999/t"): RateLimit(100, 5, 2),
}

#: seconds from NOW to an access token's expiry (None: no token)
expiries = st.one_of(st.none(), st.integers(min_value=-7200, max_value=7200))
overdue_sets = st.lists(
    st.tuples(st.sampled_from(sorted(HOSTS)), expiries), min_size=0, max_size=80
)


def overdue_of(items: list[tuple[str, int | None]]) -> list[Overdue]:
    return [
        Overdue(f"acct{i}", host, None if left is None else NOW + timedelta(seconds=left))
        for i, (host, left) in enumerate(items)
    ]


def urgency(item: Overdue) -> tuple[int, float]:
    if item.expires_at is None:
        return (0, float("-inf"))
    left = (item.expires_at - NOW).total_seconds()
    return (0, left) if left <= 0 else (1, left)


@settings(max_examples=200, deadline=None)
@given(items=overdue_sets)
# three gaps of 2/3 s rounded to the microsecond once put the last slot 1 us past an
# expiry 2 s ahead (timedelta division rounds to the nearest)
@example(
    items=[(host_key("https://b.example/token"), None)] * 3
    + [(host_key("https://b.example/token"), 2)]
)
def test_each_host_is_served_most_urgent_first_within_its_window(
    items: list[tuple[str, int | None]],
) -> None:
    overdue = overdue_of(items)
    plan = spread_overdue(overdue, NOW, HOSTS.__getitem__)
    assert sorted(name for name, _ in plan) == sorted(o.account for o in overdue)
    when = dict(plan)
    for host, limit in HOSTS.items():
        mine = [o for o in overdue if o.host == host]
        if not mine:
            continue
        served = sorted(mine, key=lambda o: when[o.account])
        # most urgent first: expired or tokenless, then the nearest expiry
        assert [urgency(o) for o in served] == sorted(urgency(o) for o in served)
        assert when[served[0].account] == NOW  # the most urgent goes at once
        ahead = [o.expires_at for o in mine if o.expires_at and o.expires_at > NOW]
        last = max(when[o.account] for o in mine)
        # never pushed past an expiry still ahead, never longer than the window
        assert last <= NOW + min([SPREAD_WINDOW, *(a - NOW for a in ahead)])
        gaps = [
            (when[b.account] - when[a.account]).total_seconds()
            for a, b in itertools.pairwise(served)
        ]
        # spaced evenly, at the host's rate unless the window squeezes them
        if gaps:
            assert max(gaps) - min(gaps) < 1e-6
            assert gaps[0] <= 1 / limit.per_second + 1e-6


@settings(max_examples=100, deadline=None)
@given(items=overdue_sets)
def test_a_restart_with_every_account_overdue_never_exceeds_the_rate(
    items: list[tuple[str, int | None]],
) -> None:
    """The plan's jobs, each calling its vendor through the gate at its planned time."""
    fake = FakeTime()
    politeness = Politeness(dict(HOSTS), clock=fake.clock, waiter=fake)
    overdue = overdue_of(items)
    host_of = {o.account: o.host for o in overdue}
    starts: dict[str, list[float]] = {host: [] for host in HOSTS}
    base = fake.now
    for name, when in spread_overdue(overdue, NOW, HOSTS.__getitem__):
        fake.now = max(fake.now, base + (when - NOW).total_seconds())
        host = host_of[name]
        permit = politeness.acquire(host + "/token", budget=10_000)
        starts[host].append(fake.now)
        politeness.release(permit, 200, None)
    for host, limit in HOSTS.items():
        assert_within_rate(starts[host], limit)


def test_conflicting_limits_on_one_host_take_the_strictest_of_each_number() -> None:
    planned = plan_limits(
        [
            ("a", [A_TOKEN], RateLimit(10, 20, 2)),
            ("b", ["https://vendor.example/api"], RateLimit(5, 30, 8)),
            ("c", ["https://other.example/t"], RateLimit(1, 1, 1)),
            ("d", [A_TOKEN, "https://api.example/v3"], RateLimit(10, 20, 2)),
        ]
    )
    assert planned.limits[host_key(A_TOKEN)] == RateLimit(5, 20, 2)
    assert planned.limits[host_key("https://api.example")] == RateLimit(10, 20, 2)
    assert planned.conflicts == {host_key(A_TOKEN): ("a", "b", "d")}


def _plan_limits_one_by_one(
    accounts: list[tuple[str, tuple[str, ...], RateLimit]],
) -> tuple[dict[str, RateLimit], dict[str, tuple[str, ...]]]:
    """plan_limits as first written: every account's hosts parsed and merged on its own."""
    limits: dict[str, RateLimit] = {}
    users: dict[str, dict[RateLimit, list[str]]] = {}
    for account, urls, limit in accounts:
        for key in {host_key(url) for url in urls}:
            limits[key] = limits[key].strictest(limit) if key in limits else limit
            users.setdefault(key, {}).setdefault(limit, []).append(account)
    conflicts = {
        key: tuple(sorted(a for names in by_limit.values() for a in names))
        for key, by_limit in users.items()
        if len(by_limit) > 1
    }
    return limits, conflicts


_URLS = st.sampled_from(
    [A_TOKEN, "https://vendor.example/api", "https://VENDOR.example:443/x", "http://a.example/t"]
)
_LIMITS = st.builds(
    RateLimit, st.sampled_from([0.5, 1.0, 10.0]), st.sampled_from([1, 5]), st.sampled_from([1, 8])
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(_URLS, max_size=3).map(tuple), _LIMITS),
        max_size=30,
    )
)
def test_planned_limits_are_those_of_each_account_merged_one_by_one(
    rows: list[tuple[tuple[str, ...], RateLimit]],
) -> None:
    # plan_limits parses each distinct URL tuple once and merges each (host, limit)
    # once: the class of defect is a shortcut that loses a host, a limit or a name
    accounts = [(f"acct-{i:02d}", urls, limit) for i, (urls, limit) in enumerate(rows)]
    planned = plan_limits(accounts)
    assert (planned.limits, planned.conflicts) == _plan_limits_one_by_one(accounts)


# --- the daemon's first runs ---------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    urls: tuple[str, ...]

    def vendor_urls(self) -> tuple[str, ...]:
        return self.urls


@dataclass(frozen=True)
class _Account:
    name: str
    state: AccountState | None
    settings: _Settings = _Settings(("https://a.example/token",))
    state_store: object = None  # no listing: each account is read

    def read_state(self, *, fresh: bool = False) -> tuple[AccountState, None]:
        if self.state is None:
            raise OSError("the state store is down")
        return self.state, None

    def hand_off(self, state: AccountState, version: None) -> None:
        pass  # the hand-off itself: tests/service/test_start_handoff.py

    def drop_hand_off(self) -> None:
        pass


@dataclass
class _Calls:
    jobs: list[str] = field(default_factory=list)
    scheduled: list[tuple[str, datetime, Any]] = field(default_factory=list)

    def job(self, name: str, **kwargs: Any) -> None:
        self.jobs.append(name)

    def schedule(self, name: str, when: datetime, **kwargs: Any) -> None:
        self.scheduled.append((name, when, kwargs.get("planned")))


def test_first_runs_run_the_not_due_at_once_and_plan_the_overdue_after_the_last_look() -> None:
    now = datetime.now(UTC)
    token = Secret("access-not-a-secret-of-the-suite")

    def state(name: str, expires_in: float | None, due_in: float, *, failed: bool = False) -> Any:
        expires = None if expires_in is None else now + timedelta(seconds=expires_in)
        return AccountState(
            account=name,
            access_token=token if expires_in is not None else None,
            expires_at=expires,
            next_refresh_at=now + timedelta(seconds=due_in),
            failed=failed,
        )

    accounts = {
        "fresh": _Account("fresh", state("fresh", 3000, 1000)),
        "later": _Account("later", state("later", 600, -10)),
        "soon": _Account("soon", state("soon", 60, -10)),
        "expired": _Account("expired", state("expired", -5, -100)),
        "never": _Account("never", state("never", None, 0)),
        "failed": _Account("failed", state("failed", 60, -10, failed=True)),
        "broken": _Account("broken", None),
    }
    calls = _Calls()
    plan = StartPlan(accounts, Politeness(), calls.job, calls.schedule)  # type: ignore[arg-type]
    for name in accounts:
        assert calls.scheduled == []  # nothing planned before every account was looked at
        plan.first_run(name)
    # not due, failed (its run decides) and unreadable (its run reports) run at once
    assert sorted(calls.jobs) == ["broken", "failed", "fresh"]
    order = [name for name, _, _ in sorted(calls.scheduled, key=lambda c: c[1])]
    assert order == ["never", "expired", "soon", "later"]
    assert {planned for _, _, planned in calls.scheduled} == {plan._now}  # lateness from the start


def test_first_runs_wait_in_the_pool_a_few_at_a_time_and_each_runs_once() -> None:
    """The start does not queue a future per account (1.8 KB each: 175 MB at
    100,000): at most _QUEUED wait in the pool's queue, and every account's first
    run still happens exactly once, the plan after the last."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from rotator.service import scheduling

    now = datetime.now(UTC)
    fresh = AccountState(
        account="a",
        provider="oauth2",
        access_token=Secret("access-not-a-secret-of-the-suite"),
        expires_at=now + timedelta(hours=1),
        next_refresh_at=now + timedelta(minutes=30),
    )
    accounts = {f"acct{i}": _Account(f"acct{i}", fresh) for i in range(3 * scheduling._QUEUED)}
    calls = _Calls()
    queued: list[int] = []
    guard = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=4)

    def job(name: str, **kwargs: Any) -> None:
        with guard:
            calls.jobs.append(name)
            queued.append(pool._work_queue.qsize())

    plan = StartPlan(accounts, Politeness(), job, calls.schedule)  # type: ignore[arg-type]
    try:
        plan.start(pool)
        assert plan.finished.wait(30)
    finally:
        pool.shutdown(wait=True)
    assert sorted(calls.jobs) == sorted(accounts)
    assert max(queued) <= scheduling._QUEUED
    assert calls.scheduled == []


def test_a_pool_shut_down_during_the_first_runs_ends_them() -> None:
    """A stop during the start's first runs (the daemon shuts the pool down): the
    ones not started are dropped, and none runs twice or after the stop."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    accounts = {f"acct{i}": _Account(f"acct{i}", None) for i in range(5000)}
    calls = _Calls()
    pool = ThreadPoolExecutor(max_workers=2)
    plan = StartPlan(accounts, Politeness(), calls.job, calls.schedule)  # type: ignore[arg-type]
    plan.start(pool)
    pool.shutdown(wait=True, cancel_futures=True)
    ran = len(calls.jobs)
    time.sleep(0.05)
    assert len(calls.jobs) == ran  # nothing queued itself past the shutdown
    assert len(set(calls.jobs)) == ran
    assert ran == len(accounts) or not plan.finished.is_set()


def test_an_empty_plan_is_finished_at_once() -> None:
    # a replica's first share can be empty: its plan must not leave a waiter hanging
    from concurrent.futures import ThreadPoolExecutor

    from rotator.politeness import Politeness

    called: list[str] = []
    plan = StartPlan(
        {},
        Politeness(),
        lambda *a, **k: None,
        lambda *a, **k: None,
        then=lambda: called.append("then"),
    )
    with ThreadPoolExecutor(1) as pool:
        plan.start(pool)
    assert plan.finished.is_set() and called == ["then"]
