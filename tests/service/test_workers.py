"""The daemon's worker pool: every call once, futures as ThreadPoolExecutor's, a clean end."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.service.workers import Workers
from tests.support.proc import wait_for


@settings(max_examples=20, deadline=None)
@given(
    workers=st.integers(min_value=1, max_value=6),
    submitters=st.integers(min_value=1, max_value=6),
    chained=st.integers(min_value=0, max_value=30),
)
def test_every_call_runs_once_from_any_thread_on_at_most_max_threads(
    workers: int, submitters: int, chained: int
) -> None:
    """Calls submitted at once from several threads, and calls that submit the next one
    as they finish (the start's burst), each run exactly once, on at most ``workers``."""
    pool = Workers(workers, thread_name_prefix="test-workers")
    ran: list[str] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def call(name: str, then: int) -> str:
        with lock:
            ran.append(name)
            threads.add(threading.current_thread().name)
        if then:
            pool.submit(call, f"{name}>", then - 1)
        return name

    start = threading.Barrier(submitters)

    def submit(s: int) -> None:
        start.wait()
        for i in range(10):
            assert pool.submit(call, f"{s}-{i}", chained if i == 0 else 0).result(10) == f"{s}-{i}"

    feeders = [threading.Thread(target=submit, args=(s,)) for s in range(submitters)]
    for feeder in feeders:
        feeder.start()
    for feeder in feeders:
        feeder.join()
    wait_for(lambda: len(ran) == submitters * (10 + chained), timeout=10, what="every call")
    pool.shutdown(wait=True)
    assert len(ran) == len(set(ran)) == submitters * (10 + chained)
    assert 1 <= len(threads) <= workers
    assert all(name.startswith("test-workers_") for name in threads)


def test_a_failing_call_fails_its_future_and_the_thread_goes_on() -> None:
    pool = Workers(1)

    def fail() -> None:
        raise RuntimeError("this call broke")

    with pytest.raises(RuntimeError, match="this call broke"):
        pool.submit(fail).result(5)
    assert pool.submit(lambda: 42).result(5) == 42
    pool.shutdown()


def test_shutdown_cancels_what_waits_finishes_what_runs_and_refuses_more() -> None:
    pool = Workers(1)
    gate = threading.Event()
    entered = threading.Event()

    def held() -> str:
        entered.set()
        gate.wait(10)
        return "finished"

    running = pool.submit(held)
    assert entered.wait(5)
    waiting = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    assert waiting.cancelled()
    with pytest.raises(CancelledError):
        waiting.result(0)
    gate.set()
    assert running.result(5) == "finished"  # a call in flight is never cut off
    pool.shutdown(wait=True)
    assert not any(t.is_alive() for t in pool._threads)


def test_the_interpreter_waits_for_a_call_in_flight_and_ends_without_a_shutdown() -> None:
    """As for ThreadPoolExecutor: at exit an idle thread ends, a busy one finishes first
    (a rotation between the vendor's answer and its spool write is not cut off)."""
    script = (
        "import time\n"
        "from rotator.service.workers import Workers\n"
        "pool = Workers(4)\n"
        "pool.submit(lambda: None).result(5)\n"
        "def slow():\n"
        "    time.sleep(0.5)\n"
        "    print('finished', flush=True)\n"
        "pool.submit(slow)\n"
        "time.sleep(0.1)\n"
        "print('main done', flush=True)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["main", "done", "finished"]
    assert time.monotonic() - started < 20


def test_a_call_without_a_future_runs_and_a_failing_one_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = Workers(1)
    ran: list[int] = []

    def fail() -> None:
        raise RuntimeError("this call broke")

    pool.call(fail)
    pool.call(ran.append, 1)
    wait_for(lambda: ran == [1], timeout=5, what="the call after the failing one")
    gate = threading.Event()
    pool.call(gate.wait, 10)
    pool.call(ran.append, 2)  # waits behind the gate: cancelled by the shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.call(ran.append, 3)
    gate.set()
    pool.shutdown(wait=True)
    assert ran == [1]
    assert "worker call failed" in caplog.text and "this call broke" in caplog.text
