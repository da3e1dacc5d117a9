"""Delivery off the rotation's thread, once per replica set (claims in a real file store)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rotator.backends.file import FileStore
from rotator.config.models import AccountSettings, FileStoreSettings
from rotator.notify import Notifications, StoreClaims, notify_record_path
from tests.notify.kit import T0, Child, Receiver, event, exec_entry, settings, webhook_entry
from tests.notify.test_events import result, state
from tests.support.net import wait_until


class Outcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, account: str, kind: str, event: str, outcome: str) -> None:
        with self._lock:
            self.seen.append((account, kind, event, outcome))

    def count(self, outcome: str) -> int:
        return sum(1 for seen in self.seen if seen[3] == outcome)


def notifications(
    store: FileStore | None, account: AccountSettings, outcomes: Outcomes, **kw: Any
) -> Notifications:
    accounts = {"acme": SimpleNamespace(settings=account)}
    return Notifications(
        lambda: accounts,  # type: ignore[arg-type,return-value]
        claims=StoreClaims(lambda _: store) if store is not None else None,  # type: ignore[arg-type,return-value]
        replica="test",
        on_outcome=outcomes,
        **kw,
    )


def test_a_rotation_is_delivered_by_a_worker_and_claimed(store: FileStore, tmp_path: Path) -> None:
    child = Child(tmp_path)
    outcomes = Outcomes()
    notes = notifications(store, settings(exec_entry(child.argv)), outcomes)
    notes.after_rotation(result(sinks_written=1))
    wait_until(lambda: outcomes.count("delivered") == 1, what="the exec delivered")
    assert [run["env"]["ROTATOR_EVENT"] for run in child.runs()] == ["rotated"]
    record = store.read(notify_record_path("acme"))
    assert record is not None
    assert record.data["rotated"] == child.runs()[0]["env"]["ROTATOR_EVENT_ID"]
    assert notes.drain(5)


def test_an_unchanged_publish_or_an_unlistened_event_queues_nothing(
    store: FileStore, tmp_path: Path
) -> None:
    child = Child(tmp_path)
    outcomes = Outcomes()
    notes = notifications(store, settings(exec_entry(child.argv)), outcomes)
    notes.after_rotation(result(sinks_unchanged=2))
    notes.after_rotation(result(sinks_written=1, revived=True))  # recovered: exec not listening
    assert notes.drain(5)
    assert [run["env"]["ROTATOR_EVENT"] for run in child.runs()] == ["rotated"]
    assert store.read(notify_record_path("acme")).data.keys() == {
        "format",
        "requires",
        "account",
        "rotated",
    }  # type: ignore[union-attr]


def test_two_replicas_deliver_each_event_once(store: FileStore, receiver: Receiver) -> None:
    """Two processes' notifiers on one state store notice the same rotation at once."""
    outcomes = Outcomes()
    account = settings(webhook_entry("HOOK_URL", "HOOK_SECRET"))
    replicas = [notifications(store, account, outcomes) for _ in range(4)]
    for round_ in range(5):
        run = result(sinks_written=1, state=state(issued_at=T0.replace(minute=round_)))
        barrier = threading.Barrier(len(replicas))

        def notice(
            notes: Notifications, run: Any = run, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            notes.deliver_result(run)

        threads = [threading.Thread(target=notice, args=(n,)) for n in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(receiver.got) == 5
    assert len({d.headers["webhook-id"] for d in receiver.got}) == 5
    assert outcomes.count("delivered") == 5 and outcomes.count("claimed_elsewhere") == 15


def test_a_hanging_hook_never_delays_the_rotation_thread(store: FileStore) -> None:
    outcomes = Outcomes()
    hang = exec_entry([sys.executable, "-c", "import time; time.sleep(30)"], timeout="2s")
    notes = notifications(store, settings(hang), outcomes)
    took = []
    for minute in range(20):
        run = result(
            sinks_written=1,
            state=state(issued_at=T0.replace(minute=minute)),
        )
        started = time.monotonic()
        notes.after_rotation(run)
        took.append(time.monotonic() - started)
    assert max(took) < 0.05, took  # a queue put, whatever the hook does
    notes.drain(0.1)


def test_a_full_queue_drops_counts_and_logs(store: FileStore) -> None:
    outcomes = Outcomes()
    hang = exec_entry([sys.executable, "-c", "import time; time.sleep(30)"], timeout="1s")
    notes = notifications(store, settings(hang), outcomes, queue_size=1)
    for minute in range(6):
        run = result(
            sinks_written=1,
            state=state(issued_at=T0.replace(minute=minute)),
        )
        notes.after_rotation(run)
        time.sleep(0.05)  # let the two workers pick up the first two
    # two being run, one waiting, three dropped at once
    assert outcomes.count("dropped") == 3
    notes.drain(5)
    assert outcomes.count("failed") == 3  # each timed out


def test_the_stop_waits_a_bounded_time_then_drops_what_is_left(store: FileStore) -> None:
    outcomes = Outcomes()
    hang = exec_entry([sys.executable, "-c", "import time; time.sleep(30)"], timeout="3s")
    notes = notifications(store, settings(hang), outcomes)
    for minute in range(5):
        run = result(
            sinks_written=1,
            state=state(issued_at=T0.replace(minute=minute)),
        )
        notes.after_rotation(run)
    started = time.monotonic()
    assert notes.drain(0.5) is False
    assert time.monotonic() - started < 1.5
    assert outcomes.count("dropped") == 3  # the two in the workers run out their timeout
    notes.after_rotation(result(sinks_written=1))  # after the stop: dropped at once
    assert outcomes.count("dropped") == 4


def test_a_store_that_cannot_record_the_claim_still_delivers(
    tmp_path: Path, receiver: Receiver
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    broken = FileStore("files", FileStoreSettings(type="file", directory=blocker / "state"))
    outcomes = Outcomes()
    notes = notifications(broken, settings(webhook_entry("HOOK_URL", "HOOK_SECRET")), outcomes)
    notes.deliver(event(), settings(webhook_entry("HOOK_URL", "HOOK_SECRET")))
    assert len(receiver.got) == 1 and outcomes.count("delivered") == 1


def test_a_failed_delivery_is_counted_and_the_next_entry_still_runs(
    store: FileStore, receiver: Receiver, tmp_path: Path
) -> None:
    child = Child(tmp_path)
    outcomes = Outcomes()
    account = settings(
        exec_entry([sys.executable, "-c", "raise SystemExit(1)"]),
        exec_entry(child.argv),
        webhook_entry("HOOK_URL", "HOOK_SECRET"),
    )
    notes = notifications(store, account, outcomes)
    notes.deliver(event(), account)
    assert outcomes.seen == [
        ("acme", "exec", "rotated", "failed"),
        ("acme", "exec", "rotated", "delivered"),
        ("acme", "webhook", "rotated", "delivered"),
    ]
    assert len(child.runs()) == 1 and len(receiver.got) == 1


def test_the_metric_counts_outcomes_without_secrets_in_labels() -> None:
    from rotator.service.metrics import Metrics

    metrics = Metrics()
    metrics.notified("acme", "webhook", "rotated", "delivered")
    text = metrics.render().decode()
    labels = 'account="acme",event="rotated",outcome="delivered",type="webhook"'
    assert f"rotator_notify_total{{{labels}}} 1.0" in text


pytestmark = pytest.mark.timeout(60)
