from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from tests.support import leakcheck
from tests.support.servers import MotoServer, OpenBao, openbao

# No per-example deadline anywhere: speed is measured in the benchmark harness, not in
# unit tests, and a loaded 2-core CI machine made single examples miss hypothesis's 200 ms
# default (test_views: 441 ms) without anything being wrong.
settings.register_profile("rotator", deadline=None)
settings.load_profile("rotator")

# A suite run by a systemd service or through sudo is not a one-off command of the
# daemon's: commands started by tests would refuse their per-user spool
# (rotator/rotation/spooldir.py). Tests that mean it set these themselves.
for _name in ("INVOCATION_ID", "SUDO_UID"):
    os.environ.pop(_name, None)


def _redis_backoff_draws_from_its_own_generator() -> None:
    """redis-py's retry backoff draws from the global ``random``. ``check --online``
    against a dead backend leaves its tooz call retrying on a daemon thread for about a
    minute (the command exits anyway; rotator/service/coordination_backend.py
    ``within``), and in the test process those draws change the global state while
    hypothesis draws in a later test (HypothesisDeprecationWarning). Here they go to a
    generator of their own."""
    try:
        import redis.backoff
    except ImportError:  # the coordination extra is not installed: nothing draws
        return
    redis.backoff.random = random.Random()  # type: ignore[assignment,attr-defined]


_redis_backoff_draws_from_its_own_generator()
_CPUS = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


@pytest.fixture(autouse=True)
def _every_cpu_after_each_test() -> Iterator[None]:
    """An in-process daemon puts the test process on one CPU (rotator/service/cpus.py)
    until it stops; one a test left running must not slow the tests after it."""
    yield
    if _CPUS is None or os.sched_getaffinity(0) == _CPUS:
        return
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), _CPUS)
        except OSError:
            continue


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log() -> Iterator[None]:
    """Capture every in-process log line to LOG_DIR; at the end, scan it all for secrets."""
    from rotator.service.logs import configure_logging

    # structlog's default configuration prints to stdout, past the stdlib root logger;
    # route it through stdlib (as the daemon does) so the file handler below sees it.
    configure_logging(fmt="json", level="debug")
    handler = logging.FileHandler(leakcheck.log_file("in-process"), encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    handler.close()
    leaks = leakcheck.find_leaks()
    if leaks:
        pytest.fail("secret values reached captured output:\n" + "\n".join(leaks), pytrace=False)


# --- real store servers (tests/support/servers.py), shared by the whole session --------------


@pytest.fixture(scope="session")
def bao() -> Iterator[OpenBao]:
    """One OpenBao dev server (in memory) for the session; use distinct paths per test.
    ``bao.root_token`` sets things up; tests/backends/conftest.py adds policies."""
    with openbao() as server:
        yield server


@pytest.fixture(params=["file", "openbao"])
def state_bao(request: pytest.FixtureRequest) -> Iterator[OpenBao | None]:
    """The guarantee proofs run twice: state in files (None), and in a fresh OpenBao."""
    if request.param == "file":
        yield None
        return
    with OpenBao() as server:
        yield server


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """moto's server (Secrets Manager and the rest) in a thread, for the session; its
    state is process-wide, so use distinct secret names per test."""
    with MotoServer() as server:
        yield server


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """What the guarantee proofs reached (rotations, kills, grace uses)."""
    rig = sys.modules.get("tests.support.rig")
    counts = getattr(rig, "PROOF_COUNTS", None)
    if counts:
        terminalreporter.write_sep("-", "proof counts")
        for line in counts:
            terminalreporter.write_line(line)
