"""The exec notification: a real child process, its environment, stdin, timeout and output."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from rotator.notify import NotifyError, event_environment, run_exec
from tests.notify.kit import TOKEN, Child, event, exec_entry
from tests.support import leakcheck

DAEMON_SECRET = leakcheck.register("daemon-only-secret-5e6f7a", "daemon environment secret")
ENVIRON = {
    "PATH": os.environ["PATH"],
    "LANG": "C.UTF-8",
    "HOME": "/nonexistent",
    "CLIENT_SECRET": DAEMON_SECRET,
    "VAULT_TOKEN": DAEMON_SECRET,
    "NOTIFY_SOCKET": "/run/systemd/notify",
}


def test_the_program_gets_the_event_in_a_minimal_environment_and_no_token(tmp_path: Path) -> None:
    child = Child(tmp_path)
    run_exec(exec_entry(child.argv), event(), ENVIRON)
    [run] = child.runs()
    assert run["stdin"] == ""
    env = dict(run["env"])
    env.pop("LC_CTYPE", None)  # Python's own locale coercion, not ours
    assert env == {
        "PATH": ENVIRON["PATH"],
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
        "ROTATOR_EVENT": "rotated",
        "ROTATOR_EVENT_ID": event().id,
        "ROTATOR_ACCOUNT": "acme",
        "ROTATOR_EXPIRES_AT": "2026-11-01T11:00:00Z",
        "ROTATOR_SINKS": "files:acme.json vault:apps/acme",
    }
    assert TOKEN not in json.dumps(run) and DAEMON_SECRET not in json.dumps(run)


def test_token_stdin_writes_the_token_to_stdin_only(tmp_path: Path) -> None:
    child = Child(tmp_path)
    run_exec(exec_entry(child.argv, token="stdin"), event(), ENVIRON)
    [run] = child.runs(stdin_has_token=True)
    assert run["stdin"] == TOKEN
    assert TOKEN not in json.dumps(run["env"]) + json.dumps(run["argv"])


def test_events_without_a_token_write_nothing_to_stdin(tmp_path: Path) -> None:
    child = Child(tmp_path)
    run_exec(
        exec_entry(child.argv, token="stdin", events=["failed"]),
        event("failed", token=None),
        ENVIRON,
    )
    assert child.runs()[0]["stdin"] == ""


def test_pass_env_hands_on_only_the_names_it_lists(tmp_path: Path) -> None:
    child = Child(tmp_path)
    environ = {**ENVIRON, "FAXAPP_SOCKET": "/run/faxapp.sock"}
    run_exec(exec_entry(child.argv, pass_env=["FAXAPP_SOCKET", "NOT_SET"]), event(), environ)
    env = child.runs()[0]["env"]
    assert env["FAXAPP_SOCKET"] == "/run/faxapp.sock"
    assert "NOT_SET" not in env and "CLIENT_SECRET" not in env


def test_a_path_with_a_space_is_percent_encoded_in_rotator_sinks() -> None:
    env = event_environment(event(sinks=("files:my token.json", "files:100%.json")))
    assert env["ROTATOR_SINKS"] == "files:my%20token.json files:100%25.json"
    assert env["ROTATOR_SINKS"].split(" ") == ["files:my%20token.json", "files:100%25.json"]


def test_a_failing_program_is_an_error_with_its_output_scrubbed(tmp_path: Path) -> None:
    script = "import sys; t = sys.stdin.read(); print('cannot reload with', t); sys.exit(3)"
    entry = exec_entry([sys.executable, "-c", script], token="stdin")
    with pytest.raises(NotifyError, match="exited with 3: cannot reload with \\*\\*\\*") as caught:
        run_exec(entry, event(), ENVIRON)
    assert TOKEN not in str(caught.value)


def test_a_missing_program_is_named() -> None:
    with pytest.raises(NotifyError, match="'/no/such/reloader' not found"):
        run_exec(exec_entry(["/no/such/reloader"]), event(), ENVIRON)


def test_a_hanging_program_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    # a shell that starts a long sleep and waits: the sleep must die too
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    entry = exec_entry(["/bin/sh", "-c", script], timeout="1s")
    started = time.monotonic()
    with pytest.raises(NotifyError, match="did not finish within 1s; its process group was killed"):
        run_exec(entry, event(), ENVIRON)
    assert time.monotonic() - started < 4
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the grandchild outlived the timeout")
