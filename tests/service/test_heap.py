"""The daemon keeps its long-lived heap out of the cyclic collector's walk
(rotator/service/daemon.py): frozen after the build and after the first runs,
given back and frozen anew by a reload, and an account dropped by a reload is
freed."""

from __future__ import annotations

import gc
import json
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.service.app import build_daemon
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
    finally:
        daemon.stop()
        gc.unfreeze()
