"""rotator.politeness: the per-host gate, driven by a fake clock (no test sleeps).

The class of defect: a vendor sees more than its configured rate, or more calls
at once than the cap, whatever the sequence of calls, answers and pauses. The
properties are checked over hypothesis' sequences, not a few hand-picked ones.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.errors import TransientProviderError
from rotator.http import HttpClients, polite_client_class
from rotator.politeness import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    MAX_PAUSE,
    Politeness,
    RateLimit,
    Throttled,
    host_key,
    host_label,
    retry_after_seconds,
    status_class,
)
from rotator.providers.base import send

HOST = "https://vendor.example/oauth/token"


@dataclass
class FakeTime:
    """A monotonic clock that moves only when the gate sleeps (or a test says so)."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)
    stopped: bool = False

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        if self.stopped:
            return False
        self.slept.append(seconds)
        self.now += max(seconds, 0.0)
        return True


def gate(limit: RateLimit, fake: FakeTime, *, wall: float = 1_700_000_000.0) -> Politeness:
    return Politeness(
        {host_key(HOST): limit}, clock=fake.clock, wall=lambda: wall + fake.now, waiter=fake
    )


def assert_within_rate(starts: list[float], limit: RateLimit) -> None:
    """Every window [a, b] holds at most burst + per_second * (b - a) call starts."""
    starts = sorted(starts)
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            allowed = limit.burst + limit.per_second * (starts[j] - first) + 1e-6
            assert j - i + 1 <= allowed, (i, j, starts[i : j + 1])


limits = st.builds(
    RateLimit,
    per_second=st.floats(min_value=0.5, max_value=50),
    burst=st.integers(min_value=1, max_value=10),
    concurrency=st.integers(min_value=1, max_value=8),
)
#: (seconds before the call, the answer's status, its Retry-After)
calls = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=2),
        st.sampled_from([200, 200, 200, 400, 429, 503, 500, None]),
        st.sampled_from([None, "0", "1", "2.5", "junk"]),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(limit=limits, sequence=calls)
def test_over_any_sequence_the_rate_never_exceeds_the_bucket(
    limit: RateLimit, sequence: list[tuple[float, int | None, str | None]]
) -> None:
    fake = FakeTime()
    politeness = gate(limit, fake)
    starts: list[float] = []
    pauses: list[tuple[float, float]] = []  # (from, until) asked by an answer
    for gap, status, retry_after in sequence:
        fake.now += gap
        try:
            permit = politeness.acquire(HOST, budget=10_000)
        except Throttled:
            continue
        starts.append(fake.now)
        politeness.release(permit, status, retry_after)
        if status in (429, 503):
            pauses.append((fake.now, fake.now + politeness.hold_off([HOST])))
    assert_within_rate(starts, limit)
    # every call made, waited or not, counted once in the wait histogram
    [stats] = politeness.stats() or [None]
    assert (stats.wait_count if stats else 0) == len(starts)
    # no call started inside a pause the vendor asked for (every account: one host)
    for begin, until in pauses:
        assert not [s for s in starts if begin < s < until - 1e-9], (begin, until)


@settings(max_examples=60, deadline=None)
@given(
    cap=st.integers(min_value=1, max_value=4),
    threads=st.integers(min_value=1, max_value=10),
)
def test_concurrency_never_exceeds_the_cap(cap: int, threads: int) -> None:
    politeness = Politeness({host_key(HOST): RateLimit(10_000, 10_000, cap)})
    in_flight = 0
    most = 0
    lock = threading.Lock()
    go = threading.Barrier(threads)

    def call() -> None:
        nonlocal in_flight, most
        go.wait()
        for _ in range(5):
            permit = politeness.acquire(HOST, budget=30)
            with lock:
                in_flight += 1
                most = max(most, in_flight)
            with lock:
                in_flight -= 1
            politeness.release(permit, 200, None)

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert most <= cap
    assert sum(politeness.stats()[0].requests.values()) == 5 * threads


def test_a_429_with_retry_after_pauses_the_host_for_every_account() -> None:
    fake = FakeTime()
    politeness = gate(RateLimit(10, 20, 8), fake)
    permit = politeness.acquire(HOST, budget=5)
    politeness.release(permit, 429, "30")
    # another account, another path, same host: not called, told when to come back
    with pytest.raises(Throttled) as refused:
        politeness.acquire("https://vendor.example:443/other?x=1", budget=5)
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after == pytest.approx(30)
    assert politeness.hold_off([HOST]) == pytest.approx(30)
    # another host is not slowed down
    politeness.release(politeness.acquire("https://other.example/token", budget=5), 200, None)
    # a budget that covers the pause waits it out, through the waiter
    permit = politeness.acquire(HOST, budget=60)
    assert fake.slept[-1] == pytest.approx(30)
    politeness.release(permit, 200, None)
    # after the pause the bucket starts empty: no burst, one call per interval
    starts = []
    for _ in range(5):
        permit = politeness.acquire(HOST, budget=60)
        starts.append(fake.now)
        politeness.release(permit, 200, None)
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.1] * 4


@pytest.mark.parametrize(("retry_after", "budget"), [("3", 60), ("3", 1)])
def test_a_pause_that_comes_while_a_call_waits_for_its_start_holds_that_call_too(
    retry_after: str, budget: float
) -> None:
    # The call reserved its start (a bucket token 0.5 s ahead), then another call's 429
    # paused the host: the waiting call must not go out inside the pause (seen in the
    # process proof: one call 0.25 s after the 429). It waits the pause out, or is
    # refused when that is past its budget.
    fake = FakeTime()
    began = fake.now
    politeness = gate(RateLimit(2, 1, 2), fake)
    first = [politeness.acquire(HOST, budget=5)]
    plain_sleep = fake.sleep

    def answer_429_during_the_wait(seconds: float) -> bool:
        if first:  # once: the first call's answer lands while the second one waits
            politeness.release(first.pop(), 429, retry_after)
        return plain_sleep(seconds)

    fake.sleep = answer_429_during_the_wait  # type: ignore[method-assign]
    if budget < 3:
        with pytest.raises(Throttled) as refused:
            politeness.acquire(HOST, budget=budget)
        assert refused.value.code == "rate_limited"
        assert politeness._gates[host_key(HOST)].in_flight == 0  # its slot is freed
        return
    second = politeness.acquire(HOST, budget=budget)
    assert fake.now - began >= 3, f"started {fake.now - began:.2f}s in, inside the 3 s pause"
    politeness.release(second, 200, None)


def test_a_503_with_an_http_date_pauses_until_that_date() -> None:
    fake = FakeTime()
    wall = 1_700_000_000.0
    politeness = gate(RateLimit(), fake, wall=wall)
    when = datetime.fromtimestamp(wall + fake.now + 120, UTC)
    politeness.release(
        politeness.acquire(HOST, budget=1), 503, when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    )
    assert politeness.hold_off([HOST]) == pytest.approx(120, abs=1)


def test_without_retry_after_the_host_backs_off_exponentially_and_recovers() -> None:
    fake = FakeTime()
    politeness = gate(RateLimit(), fake)
    pauses = []
    for _ in range(12):
        politeness.release(politeness.acquire(HOST, budget=10_000), 429, None)
        pauses.append(round(politeness.hold_off([HOST]), 6))
    assert pauses[:3] == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST]
    assert max(pauses) == BACKOFF_MAX
    politeness.release(politeness.acquire(HOST, budget=10_000), 200, None)
    politeness.release(politeness.acquire(HOST, budget=10_000), 503, None)
    assert politeness.hold_off([HOST]) == pytest.approx(BACKOFF_FIRST)


def test_a_stopped_waiter_ends_the_wait_and_the_call_is_not_made() -> None:
    fake = FakeTime()
    politeness = gate(RateLimit(1, 1, 8), fake)
    politeness.release(politeness.acquire(HOST, budget=10), 200, None)
    fake.stopped = True
    with pytest.raises(Throttled):
        politeness.acquire(HOST, budget=10)
    stats = politeness.stats()[0]
    assert stats.requests == {"2xx": 1}  # the refused call is no request


def test_a_full_concurrency_cap_refuses_after_the_budget() -> None:
    politeness = Politeness({host_key(HOST): RateLimit(100, 100, 1)})
    held = politeness.acquire(HOST, budget=1)
    with pytest.raises(Throttled) as refused:
        politeness.acquire(HOST, budget=0.05)
    assert "concurrency" in str(refused.value)
    politeness.release(held, None, None)  # no answer: counted as an error, slot freed
    politeness.release(politeness.acquire(HOST, budget=0.05), 200, None)
    assert politeness.stats()[0].requests == {"error": 1, "2xx": 1}


@given(seconds=st.integers(min_value=-100, max_value=10 * 3600))
def test_retry_after_in_seconds_is_capped(seconds: int) -> None:
    assert retry_after_seconds(str(seconds), 0.0) == min(max(seconds, 0), MAX_PAUSE)


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "nan", "inf", "Mon, 99 Foo 2026"])
def test_an_unreadable_retry_after_is_none(value: str | None) -> None:
    assert retry_after_seconds(value, 0.0) is None


@pytest.mark.parametrize(
    ("url", "key", "label"),
    [
        (
            "https://vendor.example/token?refresh_token=SECRET",
            "https://vendor.example:443",
            "vendor.example",
        ),
        ("https://user:pw@Vendor.Example:443/a", "https://vendor.example:443", "vendor.example"),
        ("http://127.0.0.1:8080/x#frag", "http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("http://[::1]/t", "http://[::1]:80", "[::1]"),
    ],
)
def test_the_host_key_and_label_hold_no_user_path_or_query(url: str, key: str, label: str) -> None:
    assert host_key(url) == key
    assert host_label(host_key(url)) == label


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 302, 404, 429, 503, None, 42)] == [
        "2xx",
        "3xx",
        "4xx",
        "4xx",
        "5xx",
        "error",
        "error",
    ]


# --- through the client every vendor call uses -------------------------------------------


def polite_client(politeness: Politeness, handler: httpx.MockTransport) -> httpx.Client:
    client: httpx.Client = polite_client_class()(politeness, transport=handler)
    return client


def test_every_call_through_send_passes_the_gate_and_frees_its_slot() -> None:
    fake = FakeTime()
    politeness = gate(RateLimit(10, 20, 1), fake)
    answers = iter(
        [httpx.Response(200, json={}), httpx.Response(429, headers={"Retry-After": "7"})]
    )
    client = polite_client(politeness, httpx.MockTransport(lambda request: next(answers)))
    assert send(client, "POST", HOST, data={"a": "b"}).status == 200
    assert send(client, "POST", HOST).status == 429  # the slot (cap 1) was freed
    with pytest.raises(TransientProviderError) as refused:
        send(client, "POST", HOST, timeout=4)  # budget 2 s < the 7 s pause: not called
    assert refused.value.code == "rate_limited"
    stats = politeness.stats()[0]
    assert stats.requests == {"2xx": 1, "4xx": 1}
    assert stats.paused_for == pytest.approx(7)


def test_a_transport_failure_frees_the_slot_and_counts_as_error() -> None:
    politeness = Politeness({host_key(HOST): RateLimit(10, 20, 1)})

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = polite_client(politeness, httpx.MockTransport(refuse))
    for _ in range(3):
        with pytest.raises(TransientProviderError):
            send(client, "POST", HOST, timeout=1)
    assert politeness.stats()[0].requests == {"error": 3}


def test_http_clients_share_one_politeness_across_threads() -> None:
    clients = HttpClients()
    seen = []

    def take() -> None:
        client = clients.get()
        seen.append(client.politeness)  # type: ignore[attr-defined]

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    take()
    assert seen[0] is seen[1] is clients.politeness
    clients.close()


def test_deferred_jobs_are_spaced_at_the_rate_after_the_pause() -> None:
    fake = FakeTime()
    politeness = gate(RateLimit(4, 20, 8), fake)
    politeness.release(politeness.acquire(HOST, budget=1), 429, "10")
    slots = [politeness.deferral_slot(HOST) for _ in range(4)]
    assert slots == pytest.approx([10, 10.25, 10.5, 10.75])
    assert politeness.stats()[0].deferred == 4


def test_no_vendor_call_can_bypass_the_gate() -> None:
    """The class, not the instance: rotator builds httpx clients in one place only, and
    every client it hands out is the polite one (so probe, authorize, online checks and
    every provider's calls all pass their host's gate)."""
    import re
    from pathlib import Path

    import rotator

    bypass = re.compile(
        r"httpx\.(Client|AsyncClient|HTTPTransport)\(|httpx\.(get|post|request|stream)\("
    )
    package = Path(rotator.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path != package / "http.py" and bypass.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    clients = HttpClients()
    try:
        assert isinstance(clients.get(), polite_client_class())  # type: ignore[arg-type]
        assert isinstance(clients.get(verify=False), polite_client_class())  # type: ignore[arg-type]
    finally:
        clients.close()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["https://a.example/t", "https://b.example/t", "https://c.example/t"]),
            st.sampled_from([200, 429, 503]),
            st.one_of(st.none(), st.integers(0, 90).map(str)),
            st.floats(0, 60),
        ),
        max_size=12,
    )
)
def test_hold_off_answers_as_the_hosts_pauses_say(
    events: list[tuple[str, int, str | None, float]],
) -> None:
    """hold_off's shortcut (nothing paused past now: 0 without looking at the hosts)
    gives what every host's own pause gives, over any sequence of answers and time."""
    fake = FakeTime()
    politeness = Politeness(clock=fake.clock, wall=lambda: 1_700_000_000.0 + fake.now, waiter=fake)
    urls = ["https://a.example/t", "https://b.example/t", "https://c.example/t"]
    for url, status, retry_after, later in events:
        try:
            permit = politeness.acquire(url, budget=0)
        except Throttled:
            pass
        else:
            politeness.release(permit, status, retry_after)
        fake.now += later
        for asked in ([url], urls, urls[:1], []):
            gates = [politeness._gates.get(host_key(u)) for u in asked]
            slow = max([g.paused_until for g in gates if g], default=fake.now) - fake.now
            assert politeness.hold_off(asked) == pytest.approx(max(0.0, slow))
