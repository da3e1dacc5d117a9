"""The daemon keeps its long-lived heap out of the cyclic collector's walk
(rotator/service/daemon.py): frozen after the build and after the first runs,
given back and frozen anew by a reload, and an account dropped by a reload is
freed. The accounts' planned runs (one heap) keep one plan per account."""

from __future__ import annotations

import gc
import json
import random
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rotator
from rotator.service.app import build_daemon
from rotator.service.heap import AccountTimers
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck

SECRET = leakcheck.register("heap-test-secret-5a4b3c2d", "client secret")


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    with emulator(clients={"app": SECRET}, access_ttl=600) as srv:
        yield srv


def _config(tmp: Path, url: str, names: list[str]) -> Path:
    raw = {
        "server": {"workers": 4, "shutdown_grace": "5s", "spool_dir": str(tmp / "spool")},
        "stores": {"files": {"type": "file", "directory": str(tmp / "files")}},
        "defaults": {
            "provider": "oauth2",
            "grant": "client_credentials",
            "token_url": url,
            "client_id": "app",
            "client_secret": "env:HEAP_TEST_SECRET",
        },
        "accounts": {n: {"sinks": [{"store": "files", "path": f"{n}.json"}]} for n in names},
    }
    path = tmp / "rotator.yaml"
    path.write_text(json.dumps(raw))
    return path


def _wait(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_heap_is_frozen_after_the_first_runs_and_a_reload_refreezes_it(
    tmp_path: Path, server: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEAP_TEST_SECRET", SECRET)
    names = [f"acct-{i}" for i in range(20)]
    config = _config(tmp_path, server.url, names)
    gc.unfreeze()
    daemon = build_daemon(str(config))
    drawn = _draws_by_rotator(monkeypatch)
    try:
        daemon.start()
        _wait(lambda: all((tmp_path / "files" / f"{n}.json").exists() for n in names))
        _wait(daemon.start_plan.finished.is_set)
        frozen = gc.get_freeze_count()
        assert frozen > 0
        # every account's scheduled job existed before the last freeze
        jobs = [daemon.scheduler.get_job(n) for n in names]
        assert all(job is not None for job in jobs)
        dropped = weakref.ref(daemon.rotator.accounts["acct-0"].provider)
        del jobs

        _config(tmp_path, server.url, [*names[1:], "acct-new"])
        gc.unfreeze()  # so that a count after the reload is the reload's own freeze
        assert daemon.reload()
        assert "acct-0" not in daemon.rotator.accounts
        assert "acct-new" in daemon.rotator.accounts
        assert gc.get_freeze_count() > 0  # the new configuration, frozen again
        _wait(lambda: dropped() is None)  # the dropped account was given back and freed
        _wait((tmp_path / "files" / "acct-new.json").exists)
        assert server.token_calls == len(names) + 1  # one each, none repeated
        # the rotations' jitter left the process-wide generator alone: worker threads that
        # drew from it changed it under the property test below, mid-draw (hypothesis
        # took that for `random` used inside a strategy). Asked of rotator's own code, not
        # of the generator's state: in a whole suite other tests' threads may draw from it.
        assert drawn == []
        # nor holds one of its bound methods (``rand=random.random``), which no spy sees
        assert getattr(daemon.rotator.rand, "__self__", None) is not random._inst  # type: ignore[attr-defined]
    finally:
        daemon.stop()
        gc.unfreeze()


def _draws_by_rotator(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every draw from the process-wide generator made by rotator's own code (not a
    test's, not a library's), as "function file:line"; recorded, not refused, so a
    draw shows up in the assertion instead of failing a worker thread's job."""
    drawn: list[str] = []
    package = str(Path(rotator.__file__).parent)
    for name in ("random", "uniform", "randint", "randrange", "choice", "shuffle", "gauss"):
        original = getattr(random, name)

        def spy(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(package):
                drawn.append(f"{_name} {caller.co_filename}:{caller.co_firstlineno}")
            return _original(*args, **kwargs)

        monkeypatch.setattr(random, name, spy)
    return drawn


# --- the accounts' planned runs: one heap, one plan per account ----------------------------

_NAMES = st.sampled_from(["a", "b", "c", "d"])
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _NAMES, st.integers(0, 20)),
        st.tuples(st.just("remove"), _NAMES, st.just(0)),
        st.tuples(st.just("pop"), st.just(""), st.integers(0, 20)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_STEPS)
def test_account_timers_keep_one_plan_per_account_and_give_the_due_ones_in_order(
    steps: list[tuple[str, str, int]],
) -> None:
    # The class of defect: a replaced plan that still fires, a removed one that fires,
    # a due one lost or given twice, or the earliest reported wrong (the scheduler then
    # sleeps past it). Checked against a plain dict of name -> (when, arguments).
    timers = AccountTimers()
    model: dict[str, tuple[float, tuple[str, int]]] = {}
    for serial, (step, name, when) in enumerate(steps):
        if step == "set":
            timers.set(name, float(when), (name, serial))
            model[name] = (float(when), (name, serial))
        elif step == "remove":
            assert timers.remove(name) == (model.pop(name, None) is not None)
        else:
            due = sorted((w, args) for w, args in model.values() if w <= when)
            got = timers.pop_due(float(when))
            assert sorted(got) == sorted(args for _, args in due)
            assert [model[args[0]][0] for args in got] == sorted(w for w, _ in due)
            for _, args in due:
                del model[args[0]]
        assert len(timers) == len(model)
        assert timers.next_at() == min((w for w, _ in model.values()), default=None)
        for key in "abcd":
            assert timers.get(key) == model.get(key)


def test_account_timers_stay_compact_when_plans_are_replaced_over_and_over() -> None:
    timers = AccountTimers()
    for round_ in range(5000):
        timers.set("a", float(round_ % 7), ("a", round_))
    assert len(timers) == 1
    assert len(timers._heap) <= 2 + 1024  # stale entries are dropped, not kept for good
    assert timers.pop_due(10.0) == [("a", 4999)]
