"""Proof: consumers are told of every new token once, after the sinks hold it, and a hook
never holds up a rotation.

Real daemon processes rotate against the OAuth2 emulator, with an ``exec`` entry (a
program that records its argv, environment, stdin and what the sink held when it ran)
and a ``webhook`` entry (a loopback receiver that verifies every POST with the
``standardwebhooks`` package):

- exactly one ``rotated`` per new token, through several rotations, and none for a
  publish that changed nothing (a restart finds the sinks current);
- ``failed`` when the vendor refuses the client (``invalid_client``), ``recovered`` after
  the reload that fixes it;
- the program ran after the sink held the token it was given on stdin; no token and no
  daemon secret in any argv, environment or webhook body;
- two daemons on one state store deliver each event once;
- a program that hangs (killed at its timeout) does not slow the rotations.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.notify.kit import HOOK_SECRET, Receiver
from tests.proofs.test_failure import events, moment
from tests.support import leakcheck
from tests.support.alertkit import capture
from tests.support.proc import DaemonProcess, wait_for
from tests.support.rig import CLIENT_ID, SECRET, Rig, report

#: in the daemon's environment, never in a notified program's
DAEMON_SECRET = leakcheck.register("daemon-env-secret-7c1d2e3f", "daemon environment secret")

_CHILD = """
import json, os, sys
runs, sink = sys.argv[1], sys.argv[2]
held = open(sink).read().strip() if os.path.exists(sink) else None
line = {"argv": sys.argv, "env": dict(os.environ), "stdin": sys.stdin.read(), "sink": held}
open(runs, "a").write(json.dumps(line) + "\\n")
"""


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=3.0, reuse_grace=10.0) as srv:
        yield srv


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def child_argv(tmp: Path, name: str) -> tuple[list[str], Path]:
    script = tmp / "child.py"
    script.write_text(_CHILD)
    runs = tmp / "runs.jsonl"
    return [sys.executable, str(script), str(runs), str(tmp / "out" / f"{name}.token")], runs


def read_runs(runs: Path) -> list[dict[str, Any]]:
    if not runs.exists():
        return []
    out = [json.loads(line) for line in runs.read_text().splitlines() if line]
    # stdin (token: stdin) and what the sink held are the token on purpose; the argv and
    # the environment are leak-checked
    capture("notify-proof-runs", json.dumps([{**run, "stdin": "", "sink": ""} for run in out]))
    return out


def stopped(daemon: DaemonProcess, timeout: float = 30) -> None:
    """SIGTERM; the daemon must exit 0 (the end of its log says why when it does not)."""
    code = daemon.stop(timeout=timeout)
    assert code == 0, f"exit {code}; the log ends: {daemon.output()[-1500:]}"


def daemon_env(receiver: Receiver) -> dict[str, str]:
    return {"HOOK_URL": receiver.url, "HOOK_SECRET": HOOK_SECRET, "FAXAPP_KEY": DAEMON_SECRET}


def notify_lines(
    argv: list[str], *, exec_events: str = "[rotated, failed, recovered]"
) -> tuple[str, ...]:
    return (
        "notify:",
        f"  - {{type: exec, argv: {json.dumps(argv)}, events: {exec_events}, token: stdin}}",
        "  - {type: webhook, url: env:HOOK_URL, secret: env:HOOK_SECRET}",
    )


@pytest.mark.slow
def test_each_new_token_is_told_once_and_an_outage_is_failed_then_recovered(
    tmp_path: Path, server: OAuth2Emulator, receiver: Receiver
) -> None:
    argv, runs = child_argv(tmp_path, "acct")
    rig = Rig(tmp_path, server, accounts=("acct",), account_extra=notify_lines(argv))
    rig.seed_all()
    with DaemonProcess(rig.config_path, env=daemon_env(receiver)) as daemon:
        wait_for(lambda: len(receiver.events("rotated")) >= 4, 40, what="four rotated webhooks")
        # the vendor refuses the client: the account stops; the reload (the fix) resumes it
        server.fail_next(1, 401, {"error": "invalid_client", "error_description": "bad secret"})
        wait_for(lambda: receiver.events("failed"), 30, what="a failed webhook")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: receiver.events("recovered"), 30, what="a recovered webhook")
        wait_for(lambda: len(receiver.events("rotated")) >= 6, 40, what="rotations after it")
        stopped(daemon)
        rotated_logs = events(daemon, "rotated")
        notified = events(daemon, "notified")
    got = receiver.got
    assert got and all(d.verified for d in got)
    kinds = [d.body["data"]["event"] for d in got]
    # one rotated per rotation the daemon made, each a distinct event
    assert kinds.count("rotated") == len(rotated_logs)
    assert len({d.headers["webhook-id"] for d in got}) == len(got)
    assert kinds.count("failed") == 1 and kinds.count("recovered") == 1
    assert kinds.index("failed") < kinds.index("recovered")
    assert kinds[kinds.index("recovered") - 1] == "rotated"  # the new token, then the news
    # the program: one run per event it listens to, after the sink held its token
    done = read_runs(runs)
    events_run = [run["env"]["ROTATOR_EVENT"] for run in done]
    assert events_run.count("rotated") == len(rotated_logs)
    assert events_run.count("failed") == 1 and events_run.count("recovered") == 1
    tokens = [run["stdin"] for run in done if run["env"]["ROTATOR_EVENT"] == "rotated"]
    assert len(set(tokens)) == len(tokens)
    for run in done:
        if run["env"]["ROTATOR_EVENT"] == "rotated":
            assert run["sink"] == run["stdin"], "the program ran before the sink held its token"
        env = run["env"]
        assert set(env) <= {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "LC_CTYPE"} | {
            name for name in env if name.startswith("ROTATOR_")
        }
        assert env["ROTATOR_SINKS"] == "files:acct.token"
        assert DAEMON_SECRET not in json.dumps(run) and HOOK_SECRET not in json.dumps(run)
        assert SECRET not in json.dumps(run)
        if run["stdin"]:
            assert run["stdin"] not in json.dumps(run["argv"]) + json.dumps(env)
    for delivery in got:
        text = json.dumps(delivery.body) + json.dumps(delivery.headers)
        assert all(token not in text for token in tokens if token)
    assert len(notified) == len(done) + len(got)
    report(
        f"notify: {len(rotated_logs)} rotations -> {kinds.count('rotated')} rotated webhooks "
        f"and exec runs, 1 failed, 1 recovered, {len(got)} signatures verified"
    )


@pytest.mark.slow
def test_two_daemons_deliver_each_event_once_and_a_current_sink_tells_nothing(
    tmp_path: Path, server: OAuth2Emulator, receiver: Receiver
) -> None:
    argv, runs = child_argv(tmp_path, "acct")
    accounts = ("a0", "a1", "a2")  # more accounts: both daemons win some leases
    rig = Rig(tmp_path, server, accounts=accounts, account_extra=notify_lines(argv))
    rig.seed_all()
    env = daemon_env(receiver)
    with (
        DaemonProcess(rig.config_path, env=env) as one,
        DaemonProcess(rig.config_path, env=env) as two,
    ):
        wait_for(lambda: len(receiver.events("rotated")) >= 15, 60, what="15 rotated webhooks")
        server.access_ttl = 120.0  # the next token lasts: no rotation after it for a while
        count = server.token_calls
        wait_for(lambda: server.token_calls > count, 20, what="a long-lived token")
        time.sleep(1.0)  # its notifications go out
        stopped(one)
        stopped(two)
        rotations = len(events(one, "rotated")) + len(events(two, "rotated"))
        by_two = len(events(two, "rotated"))
        lost = events(one, "another worker delivers this notification")
        lost += events(two, "another worker delivers this notification")
    ids = [d.headers["webhook-id"] for d in receiver.got]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert len(receiver.events("rotated")) == rotations
    assert [run["env"]["ROTATOR_EVENT"] for run in read_runs(runs)].count("rotated") == rotations
    # A restart: the first runs find the sinks holding the current token and tell nobody;
    # a0's sink was lost meanwhile, so that run writes it again: the same token, the same
    # event, which the earlier daemon claimed in the state store, so nobody is told twice.
    before = len(receiver.got)
    (rig.out / "a0.token").unlink()
    with DaemonProcess(rig.config_path, env=env) as again:
        again.wait_log('"event": "started"')
        wait_for(lambda: rig.sink_token("a0"), 10, what="a0's sink written again")
        again.wait_log("another worker delivers this notification")
        stopped(again)
    assert len(receiver.got) == before
    rig.assert_grants_alive()
    report(
        f"notify: two daemons, {rotations} rotations ({by_two} by the second), each told "
        f"once ({len(lost)} claims lost to the other daemon)"
    )


@pytest.mark.slow
def test_a_hanging_program_does_not_slow_the_rotations(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    server.access_ttl = 2.0
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    extra = ("notify:", f"  - {{type: exec, argv: {json.dumps(hang)}, timeout: 6s}}")
    rig = Rig(tmp_path, server, accounts=("acct",), account_extra=extra)
    rig.seed_all()
    with DaemonProcess(rig.config_path) as daemon:
        daemon.wait_log('"event": "rotated"', count=6, timeout=40)
        stopped(daemon)
        rotated = events(daemon, "rotated")
        dropped_or_failed = events(daemon, "notification not delivered")
    moments = [moment(r) for r in rotated]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]
    # a 2 s token is refreshed about every second; a rotation waiting on the 6 s program
    # would space them 6 s apart
    assert max(gaps) <= 3, gaps
    assert max(r["duration_ms"] for r in rotated) < 1000
    assert dropped_or_failed, "the hanging program was not killed at its timeout"
    assert "process group was killed" in dropped_or_failed[0]["error"]
    report(f"notify: a 60 s program (6 s timeout); rotation gaps at most {max(gaps):.0f} s")


@pytest.mark.slow
def test_the_stop_waits_for_queued_notifications_a_bounded_time(
    tmp_path: Path, server: OAuth2Emulator, receiver: Receiver
) -> None:
    server.access_ttl = 120.0  # one rotation at the start, then quiet
    extra = ("notify:", "  - {type: webhook, url: env:HOOK_URL, secret: env:HOOK_SECRET}")
    rig = Rig(tmp_path, server, accounts=("a0", "a1", "a2"), account_extra=extra)
    rig.seed_all()
    # a slow receiver: the three first rotations' events are still queued at the stop
    receiver.delay = 1.0
    with DaemonProcess(rig.config_path, env=daemon_env(receiver)) as daemon:
        daemon.wait_log('"event": "rotated"', count=3)
        started = time.monotonic()
        stopped(daemon)
        took = time.monotonic() - started
        output = daemon.output()
    assert len(receiver.events("rotated")) == 3, "queued notifications were lost at the stop"
    assert took < 10, took
    assert output.index('"event": "stopping"') < output.rindex('"event": "notified"')
    # a receiver that hangs: the stop still ends, after its bounded wait
    receiver.delay = 60.0
    server.access_ttl = 3.0
    rig.seed_all()
    with DaemonProcess(rig.config_path, env=daemon_env(receiver)) as daemon:
        daemon.wait_log('"event": "rotated"', count=3)
        started = time.monotonic()
        stopped(daemon, timeout=40)
        took = time.monotonic() - started
    assert took < 10 + 5 + 3, took  # STOP_WAIT, the in-flight rotations' share, slack
    report(
        f"notify: stop with queued notifications delivered them; with a hung receiver {took:.1f} s"
    )
