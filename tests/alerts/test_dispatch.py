from __future__ import annotations

import email.utils
import json
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from rotator.alerts.channels import WebhookAlertChannel, build_channels
from rotator.alerts.dispatch import (
    Dispatcher,
    MemoryAlertMemory,
    StoreAlertMemory,
    alert_record_path,
)
from rotator.alerts.rules import Alert, Kind, Sent, Severity
from rotator.backends.file import FileStore
from rotator.config.models import AlertsSettings, CommandChannel, FileStoreSettings, WebhookChannel
from rotator.waits import Waiter
from tests.support.alertkit import (
    ALERTS,
    T0,
    Clock,
    Hook,
    Recorder,
    dispatcher,
    hook,
    settings,
    state,
)

__all__ = ["hook"]  # the fixture, imported so pytest finds it here


def test_each_threshold_fires_once_repeats_resolves_and_survives_restart(
    store: FileStore,
) -> None:
    clock = Clock(T0)
    end = T0 + timedelta(days=10)
    st = state(refresh_expires_at=end)
    rec = Recorder()
    d = dispatcher(store, clock, rec)

    def sweep(hours: float) -> list[Alert]:
        """Check every hour for `hours` hours; return what was sent."""
        out: list[Alert] = []
        for _ in range(int(hours)):
            out += d.check(st, settings())
            clock.advance(hours=1)
        return out

    assert sweep(72) == []  # 10 days .. 7 days left: quiet
    crossing_7d = sweep(1)
    assert [a.summary.split(";")[0] for a in crossing_7d] == [
        "refresh token of acme-fax expires in 7 days (2026-11-11 10:00 UTC)"
    ]
    assert crossing_7d[0].severity is Severity.WARNING and not crossing_7d[0].repeat
    # the next 23 hourly checks are quiet, the 24th is the daily reminder
    assert sweep(23) == []
    [reminder] = sweep(1)
    assert reminder.repeat and reminder.kind is Kind.REFRESH_TOKEN_EXPIRY

    # restart: a new dispatcher over the same store sends nothing already sent
    d = dispatcher(store, clock, rec)
    assert sweep(23) == []
    sent = sweep(49)  # two more daily reminders, then the 3-day threshold
    assert [(a.repeat, a.summary.split(" (")[0]) for a in sent] == [
        (True, "refresh token of acme-fax expires in 5 days"),
        (True, "refresh token of acme-fax expires in 4 days"),
        (False, "refresh token of acme-fax expires in 3 days"),
    ]
    clock.now = end - timedelta(days=1)
    [last] = d.check(st, settings())
    assert (last.severity, last.repeat) == (Severity.CRITICAL, False)
    assert d.check(st, settings()) == []

    # re-authorized: a new refresh token with a far expiry resolves the alert once
    st = replace(st, refresh_expires_at=clock.now + timedelta(days=30))
    [resolved] = d.check(st, settings())
    assert (resolved.status, resolved.kind, resolved.severity) == (
        "resolved",
        Kind.REFRESH_TOKEN_EXPIRY,
        Severity.INFO,
    )
    assert resolved.since == T0 + timedelta(days=3)
    assert d.check(st, settings()) == []
    assert dispatcher(store, clock, rec).check(st, settings()) == []
    assert len(rec.got) == 7  # 7d, three reminders, 3d, 1d, resolved
    record = store.read(alert_record_path("acme-fax"))
    assert record is not None and set(record.data) == {"format", "requires", "account"}


def test_thresholds_fire_exactly_once_each_over_a_month(store: FileStore) -> None:
    clock = Clock(T0)
    st = state(refresh_expires_at=T0 + timedelta(days=30))
    rec = Recorder()
    d = Dispatcher(
        alerts=AlertsSettings(repeat=timedelta(days=60)),
        channels=[rec],
        memory=StoreAlertMemory(lambda a: store),
        clock=clock,
    )
    while clock.now < T0 + timedelta(days=31):
        d.check(st, settings())
        clock.advance(minutes=15)
    assert [(a.severity, a.summary.split(";")[0].split(" (")[0]) for a in rec.got] == [
        (Severity.WARNING, "refresh token of acme-fax expires in 7 days"),
        (Severity.WARNING, "refresh token of acme-fax expires in 3 days"),
        (Severity.CRITICAL, "refresh token of acme-fax expires in 24 hours"),
        (Severity.CRITICAL, "refresh token of acme-fax has expired"),
    ]


def test_failures_then_dead_then_recovery(store: FileStore) -> None:
    clock = Clock(T0)
    rec = Recorder()
    d = dispatcher(store, clock, rec)
    assert d.check(state(consecutive_failures=2), settings()) == []
    [failing] = d.check(state(consecutive_failures=3, last_error="HTTP 503"), settings())
    assert failing.kind is Kind.FAILURES
    dead = d.check(
        state(consecutive_failures=4, failed=True, last_error_code="invalid_grant"), settings()
    )
    assert {(a.kind, a.status) for a in dead} == {
        (Kind.DEAD, "firing"),
        (Kind.FAILURES, "resolved"),
    }
    clock.advance(minutes=5)
    [back] = d.check(state(), settings())
    assert (back.kind, back.status) == (Kind.DEAD, "resolved")
    assert back.summary == "resolved: acme-fax can be refreshed again"
    assert back.title == "[RESOLVED] acme-fax can be refreshed again"


def test_failing_channel_is_retried_and_sends_again_later(store: FileStore) -> None:
    clock = Clock(T0)
    broken = Recorder("broken", fail=100)
    flaky = Recorder("flaky", fail=2)
    waiter = CountingWaiter()
    d = Dispatcher(
        alerts=ALERTS,
        channels=[broken, flaky],
        memory=StoreAlertMemory(lambda a: store),
        clock=clock,
        waiter=waiter,
    )
    st = state(failed=True)
    assert len(d.check(st, settings())) == 1
    assert len(flaky.got) == 1 and waiter.pauses == [1.0, 2.0, 1.0, 2.0]
    # one channel took it: remembered, no resend
    assert d.check(st, settings()) == []

    only_broken = Dispatcher(
        alerts=ALERTS,
        channels=[broken],
        memory=MemoryAlertMemory(),
        clock=clock,
    )
    assert len(only_broken.check(st, settings())) == 1
    broken.fail = 0
    clock.advance(minutes=15)
    # nothing took it the first time, so the next sweep sends it again
    [again] = only_broken.check(st, settings())
    assert not again.repeat and broken.got == [again]


class CountingWaiter(Waiter):
    """A waiter that remembers the pauses asked of it (set_testing makes them instant)."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return super().sleep(seconds)


def test_a_stop_ends_the_retries_but_each_channel_still_gets_its_attempt() -> None:
    broken, later = Recorder("broken", fail=100), Recorder("later")
    waiter = CountingWaiter()
    waiter.stop()  # the daemon is stopping
    d = Dispatcher(
        alerts=ALERTS, channels=[broken, later], memory=MemoryAlertMemory(), waiter=waiter
    )
    [sent] = d.check(state(failed=True), settings())
    assert broken.fail == 99  # one attempt, no retry
    assert waiter.pauses == [1.0]  # asked once, told "stopped"
    assert later.got == [sent]


def test_a_store_outage_still_alerts_once_and_is_recorded_after(tmp_path: Path) -> None:
    """The state store being down is when alerts matter most."""
    root = tmp_path / "root"
    root.write_text("a file where the store wants a directory: every read fails")
    store = FileStore("files", FileStoreSettings(type="file", directory=root / "sub"))
    clock, rec = Clock(T0), Recorder()
    d = dispatcher(store, clock, rec)
    dead = state(failed=True, last_error_code="invalid_grant")
    [sent] = d.check(dead, settings())
    assert sent.kind is Kind.DEAD and rec.got == [sent]
    clock.advance(hours=1)
    assert d.check(dead, settings()) == []  # this process remembers it sent it

    root.unlink()  # the store is back
    clock.advance(hours=1)
    assert d.check(dead, settings()) == []  # not sent again: recorded now instead
    record = store.read(alert_record_path("acme-fax"))
    assert record is not None and set(record.data) == {"format", "requires", "account", "dead"}
    # and a restarted daemon knows it too
    assert dispatcher(store, clock, rec).check(dead, settings()) == []
    assert len(rec.got) == 1


def test_two_replicas_send_once(store: FileStore) -> None:
    clock = Clock(T0)
    a, b = Recorder(), Recorder()
    da, db = dispatcher(store, clock, a), dispatcher(store, clock, b)
    st = state(failed=True)
    barrier = threading.Barrier(2)

    def run(d: Dispatcher) -> None:
        barrier.wait()
        d.check(st, settings())

    threads = [threading.Thread(target=run, args=(d,)) for d in (da, db)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(a.got) + len(b.got) == 1


def test_dispatcher_over_real_channels_counts_what_was_sent(
    hook: Hook, store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATOR_TEST_HOOK2", f"http://127.0.0.1:{hook.port}/hook")
    out = tmp_path / "cmd.json"
    script = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())"
    channels = build_channels(
        [
            WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK2"),
            WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK2", format="slack"),
            CommandChannel(type="command", argv=[sys.executable, "-c", script]),
        ]
    )
    assert [c.name for c in channels] == ["webhook", "webhook-2", "command"]
    counted: list[tuple[str, str]] = []
    d = Dispatcher(
        alerts=ALERTS,
        channels=channels,
        memory=StoreAlertMemory(lambda a: store),
        clock=Clock(T0),
        on_sent=lambda c, k: counted.append((c, k)),
    )
    [sent] = d.check(state(failed=True, last_error_code="invalid_grant"), settings())
    assert [body.get("kind", body.get("text", "")[:15]) for _, body in hook.got] == [
        "dead",
        ":rotating_light",
    ]
    assert json.loads(out.read_text())["summary"] == sent.summary
    assert counted == [
        ("log", "dead"),
        ("webhook", "dead"),
        ("webhook-2", "dead"),
        ("command", "dead"),
    ]


class CountingMemory(MemoryAlertMemory):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self, account: str) -> tuple[dict[str, Sent], object]:
        self.loads += 1
        return super().load(account)


def test_a_healthy_account_costs_one_read_then_none() -> None:
    memory = CountingMemory()
    clock = Clock(T0)
    d = Dispatcher(alerts=ALERTS, channels=[], memory=memory, clock=clock)
    for _ in range(5):
        assert d.check(state(), settings()) == []
    assert memory.loads == 1
    [fired] = d.check(state(failed=True), settings())
    [resolved] = d.check(state(), settings())
    assert (fired.status, resolved.status) == ("firing", "resolved")
    loads = memory.loads
    assert d.check(state(), settings()) == []
    assert memory.loads == loads


def test_settled_says_when_a_check_would_do_nothing() -> None:
    memory = CountingMemory()
    d = Dispatcher(alerts=ALERTS, channels=[], memory=memory, clock=Clock(T0))
    assert not d.settled(state(), settings())  # never looked: the record may hold a sent alert
    assert d.check(state(), settings()) == []
    assert d.settled(state(), settings())
    assert memory.loads == 1  # settled() reads nothing
    assert not d.settled(state(failed=True), settings())  # a condition holds: check it
    [fired] = d.check(state(failed=True), settings())
    assert not d.settled(state(), settings())  # something was sent: the resolution is due
    [resolved] = d.check(state(), settings())
    assert (fired.status, resolved.status) == ("firing", "resolved")
    assert d.settled(state(), settings())


def test_checks_of_one_account_in_one_process_send_once_and_leave_no_lock(
    store: FileStore,
) -> None:
    """The dispatcher's per-account lock lives only while checks hold it: four
    threads checking one dead account send its alert once, and no lock is kept."""
    clock, rec = Clock(T0), Recorder()
    d = dispatcher(store, clock, rec)
    st = state(failed=True)
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        d.check(st, settings())

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(rec.got) == 1
    assert len(d._locks) == 0


@pytest.mark.parametrize("retry_after", ["4", "HTTP-DATE"])
def test_a_receivers_retry_after_holds_the_next_attempt_back(
    hook: Hook, monkeypatch: pytest.MonkeyPatch, retry_after: str
) -> None:
    # Slack answers 429 with Retry-After when a channel sends too fast: trying again
    # after the dispatcher's own 1 s and 2 s only earns more 429s
    hook.status = 429
    hook.retry_after = (
        email.utils.formatdate(time.time() + 4, usegmt=True) if retry_after == "HTTP-DATE" else "4"
    )
    monkeypatch.setenv("ROTATOR_TEST_HOOK", f"http://127.0.0.1:{hook.port}/slack")
    waiter = CountingWaiter()
    d = Dispatcher(
        alerts=ALERTS,
        channels=[WebhookAlertChannel(WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK"))],
        memory=MemoryAlertMemory(),
        waiter=waiter,
    )
    d.check(state(failed=True), settings())
    assert len(hook.got) == 3
    assert len(waiter.pauses) == 2 and all(3.0 <= p <= 4.0 for p in waiter.pauses)


def test_a_retry_after_longer_than_five_minutes_is_capped_and_a_short_one_is_a_floor(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATOR_TEST_HOOK", f"http://127.0.0.1:{hook.port}/slack")
    for asked, pauses in (("86400", [300.0, 300.0]), ("0", [1.0, 2.0])):
        hook.status, hook.retry_after = 503, asked
        waiter = CountingWaiter()
        Dispatcher(
            alerts=ALERTS,
            channels=[
                WebhookAlertChannel(WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK"))
            ],
            memory=MemoryAlertMemory(),
            waiter=waiter,
        ).check(state(failed=True), settings())
        assert waiter.pauses == pauses
