"""Smoke test of the benchmark harness at a tiny size, so it cannot rot.

Not a performance test: nothing here is timed against a target. It runs
``python -m bench`` end to end (emulator process, OpenBao, daemon, the baselines,
steady state, the one-process scale phase) with 20 to 200 accounts and checks that
every phase produced its numbers.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import leakcheck
from tests.support.proc import ROOT, env_for

pytestmark = pytest.mark.slow

_TOKEN = re.compile(r"(access|seed)-[A-Za-z0-9_-]{16,}")


def test_bench_runs_end_to_end_at_a_tiny_size(tmp_path: Path) -> None:
    client_secret = leakcheck.register("bench-" + secrets.token_urlsafe(24), "bench client secret")
    out = tmp_path / "results.md"
    logs = tmp_path / "logs"
    captured = leakcheck.log_file("bench")
    with open(captured, "wb") as handle:
        finished = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "--burst",
                "20",
                "--rounds",
                "2",
                "--steady",
                "20",
                "--steady-seconds",
                "4",
                "--scale",
                "200",
                "--scale-seconds",
                "4",
                "--replicas",
                "2",
                "--replicas-accounts",
                "30",
                "--membership-timeout",
                "2",
                # no pause before each timed run: nothing here is timed against a target
                "--settle",
                "0",
                "--out",
                str(out),
                "--keep-logs",
                str(logs),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            timeout=240,
            check=False,
            env=env_for({"BENCH_CLIENT_SECRET": client_secret}),
        )
    output = captured.read_text(encoding="utf-8")
    assert finished.returncode == 0, output[-3000:]
    text = out.read_text(encoding="utf-8")
    assert "<!-- run:latest -->" in text
    assert re.search(r"\| file \| 20 \| [\d.]+ \|", text), text
    assert re.search(r"\| vault \| 20 \| [\d.]+ \|", text), text
    # the bare two-write baseline and its ratio, with its target, in every burst row
    assert len(re.findall(r"\| [\d.]+ \| [\d.]+ \| <= 1\.2 (ok|MISSED) \|", text)) == 2, text
    assert re.search(r"to the bare baseline [\d.]+, [\d.]+; median [\d.]+", text), text
    # the scale phase: its start, its memory, one vendor call per account per lifetime
    assert "### 200 accounts in one process" in text
    assert re.search(r"\| start to first job \| [\d.]+ s \|", text), text
    assert re.search(r"\| peak RSS \| \d+ MiB \| <= 400 MiB", text), text
    scale_rows = text.split("### 200 accounts in one process", 1)[1]
    assert re.search(r"per lifetime \| [\d.]+ \(max 1\)", scale_rows), scale_rows
    # The average is noise in a 4 s window (a job done after the last poll counts its
    # call but not its lifetime); the per-account maximum is what proves no account
    # was refreshed twice in one lifetime.
    assert re.search(r"vendor calls per account per lifetime \| [\d.]+ \(max 1\)", text), text
    assert "`rotator --help` wall time" in text
    # two rounds per burst store: the ratio is the median of the rounds' ratios
    assert re.search(r"burst file20: ratios of the 2 rounds [\d.]+, [\d.]+; median [\d.]+", text)
    # the partitioned phase: 1 process, 1 replica, 2 replicas (one killed), no double call
    assert "### Partitioned replicas: 30 accounts due at once, 1 process vs 2 replicas" in text
    rows = re.findall(r"\| (1 process|1 replica|2 replicas) \| [\d.]+ \|.*\| 1\.000 \(1\) \|", text)
    assert rows == ["1 process", "1 replica", "2 replicas"], text
    assert re.search(r"the survivors owned every account [\d.]+ s later", text), text
    replica_logs = sorted(logs.glob("daemon-replicas-*.log"))
    assert len(replica_logs) == 4  # 1 process, 1 replica, 2 replicas
    for log in replica_logs:
        assert client_secret not in log.read_text(encoding="utf-8")
    daemon_logs = sorted(set(logs.glob("daemon-*.log")) - set(replica_logs))
    assert len(daemon_logs) == 6  # two rounds of two bursts, the steady state, the scale
    for log in daemon_logs:
        content = log.read_text(encoding="utf-8")
        # bursts run at the default level (one line per rotation); steady and scale at debug
        assert '"event": "rotated"' in content
        at_debug = log.name.endswith(("steady.log", "scale.log"))
        assert ('"job done"' in content) == at_debug, log.name
        assert client_secret not in content
        assert not _TOKEN.search(content), f"a token appears in {log.name}"
    assert not _TOKEN.search(output)
