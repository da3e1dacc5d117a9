"""The 100,000-account phase: the daemon's start and its steady state at that size.

No burst: at 100,000 accounts the question is whether one process holds them
(start to first job, peak RSS) and keeps them fresh (lateness, one vendor call
per token lifetime). The accounts are seeded straight into the file store's
layout (state file, sink file, each with its ownership lock file) without an
fsync per file: seeding is not timed, and 200,000 fsyncs would take longer than
the phase. One ``sync`` at the end makes the daemon start on a settled disk.

Tokens live an hour (at 100,000 accounts; see :func:`ttl_for`); the seeded refresh
times are spread evenly over one refresh interval (2,412 s), so about 41
accounts are due every second. The
window starts once the daemon has looked at every account (its first run reads
each state and finds the sinks current), so the start's reads do not count as
lateness.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import Env, daemon, emulator, emulator_stats, proc_stats, write_config

__all__ = ["Scale", "run_scale", "seed_files"]

TTL = 3600.0
SHARE = 0.67  # the default refresh_share


def ttl_for(count: int) -> float:
    """An hour at 100,000 accounts (about 41 due a second); shorter for fewer, so a
    small run (the harness's own test) still sees rotations in a short window."""
    return min(TTL, max(60.0, count * 0.036))


@dataclass
class Scale:
    accounts: int
    seconds: float
    ttl: float = TTL
    seed_s: float = 0.0
    start_s: float = 0.0  # spawn -> the first job done
    started_s: float = 0.0  # spawn -> the "started" line (every first run queued)
    looked_s: float = 0.0  # spawn -> every account looked at once
    rotations: int = 0
    p50_late_ms: float = 0.0
    p99_late_ms: float = 0.0
    max_late_ms: float = 0.0
    calls_per_lifetime: float = 0.0
    max_calls_per_lifetime: int = 0
    load_at_spawn: float = 0.0  # the machine's 1-minute load average when the daemon spawned
    cpu_first_s: float = 0.0  # CPU seconds to the first job done (read within 20 ms of it)
    cpu_start_s: float = 0.0  # CPU seconds to the end of the first looks
    cpu_per_1000_s: float = 0.0
    rss_mb: float = 0.0  # peak, the whole run
    idle_rss_mb: float = 0.0  # at the end of the window
    problems: int = 0


def seed_files(base: Path, names: list[str], first: float, spread: float, ttl: float = TTL) -> None:
    """State and sink files as the file store and the oauth2 provider write them."""
    from rotator.backends.file.formats import render
    from rotator.backends.file.store import MARKER
    from rotator.providers.base import base_view
    from rotator.secrets import Secret
    from rotator.state import AccountState
    from rotator.tokens import TokenSet

    state_dir, sink_dir = base / "state" / "state", base / "sinks"
    for directory in (state_dir, sink_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(directory: Path, name: str, content: bytes) -> None:
        (directory / name).write_bytes(content)
        (directory / name).chmod(0o600)
        (directory / f".{name}.lock").write_bytes(MARKER)

    for index, name in enumerate(names):
        planned = datetime.fromtimestamp(first + spread * index / len(names), UTC)
        expires = planned + timedelta(seconds=ttl * (1 - SHARE))
        tokens = TokenSet(
            access_token=Secret("seed-" + secrets.token_urlsafe(12)),
            token_type="bearer",
            issued_at=expires - timedelta(seconds=ttl),
            expires_at=expires,
        )
        state = AccountState(account=name, provider="oauth2").with_tokens(tokens)
        record = {**state.to_record(), "next_refresh_at": _iso(planned)}
        put(state_dir, name, render(record, "json"))
        put(sink_dir, f"{name}.json", render(base_view(name, "oauth2", tokens), "json"))
    os.sync()


def _iso(when: datetime) -> str:
    from rotator.tokens import format_time

    return format_time(when.replace(microsecond=0))


def run_scale(env: Env, count: int, seconds: float, timeout: float = 600) -> Scale:
    """``count`` accounts, hour-long tokens, due evenly; the start, then ``seconds``."""
    ttl = ttl_for(count)
    result = Scale(accounts=count, seconds=seconds, ttl=ttl)
    names = [f"bench-x-{i:06d}" for i in range(count)]
    spread = ttl * SHARE
    with emulator(env, ttl) as (url, stats_url):
        config = write_config(env, "scale", names, url, state="files", sinks=["sinks"])
        seeded_at = time.time()
        # planned times start after the seeding and the first looks (~1.4 + ~0.7 ms an account)
        first = seeded_at + 3 + count * 0.0025
        seed_files(config.parent, names, first, spread, ttl)
        result.seed_s = time.time() - seeded_at
        env.note(f"scale: seeded {count:,} accounts in {result.seed_s:.1f}s")
        with daemon(env, config, "scale", level="debug") as (proc, jobs, spawned):
            result.load_at_spawn = os.getloadavg()[0]
            deadline = time.monotonic() + timeout
            peak = 0.0
            while True:
                jobs.poll()
                stats = proc_stats(proc.pid)
                peak = max(peak, stats["VmHWM"])
                if jobs.jobs and not result.cpu_first_s:
                    result.cpu_first_s = stats["cpu"]
                if len(jobs.jobs) >= count:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"scale: the daemon exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"scale: {len(jobs.jobs)} of {count} looked at")
                # until the first job, often: its CPU seconds are read close to it
                time.sleep(0.2 if jobs.jobs else 0.02)
            result.start_s = jobs.jobs[0]["t"] - spawned
            result.started_s = (jobs.started_at or spawned) - spawned
            result.looked_s = max(j["t"] for j in jobs.jobs[:count]) - spawned
            usage = proc_stats(proc.pid)
            result.cpu_start_s = usage["cpu"]
            window_start = max(first, time.time())
            if time.time() > first:
                env.note("scale: the first looks overran the warm-up; the window starts later")
            while time.time() < window_start:
                time.sleep(0.05)
            window_end = window_start + seconds
            cpu_start = proc_stats(proc.pid)["cpu"]
            while time.time() < window_end:
                time.sleep(1)
                jobs.poll()
            usage = proc_stats(proc.pid)
            result.idle_rss_mb = usage["VmRSS"]
            result.rss_mb = max(peak, usage["VmHWM"])
            time.sleep(2)  # rotations in flight at the end of the window finish
        jobs.poll()
        calls = emulator_stats(stats_url)["per_client"]
    window = [j for j in jobs.successes() if window_start <= j["planned_at"] < window_end]
    late = sorted(float(j["late_ms"]) for j in window)
    result.rotations = len(window)
    if late:
        result.p50_late_ms = statistics.median(late)
        result.p99_late_ms = late[min(len(late) - 1, int(len(late) * 0.99))]
        result.max_late_ms = late[-1]
    lifetimes: dict[str, set[float]] = {}
    for job in jobs.successes():
        if job["result"] == "success" and job["planned_at"] >= first - 1:
            lifetimes.setdefault(job["account"], set()).add(job["planned_at"])
    called = {n: c for n, c in calls.items() if n in lifetimes or c}
    total = sum(len(v) for v in lifetimes.values())
    result.calls_per_lifetime = sum(called.values()) / max(1, total)
    result.max_calls_per_lifetime = max(
        (-(-c // max(1, len(lifetimes.get(n, ())))) for n, c in called.items()), default=0
    )
    result.cpu_per_1000_s = (usage["cpu"] - cpu_start) / max(1, len(window)) * 1000
    result.problems = len(jobs.errors)
    if jobs.errors:
        env.note(f"scale: daemon logged {len(jobs.errors)} problems, first: {jobs.errors[0]}")
    env.note(
        f"scale: {count:,} accounts, first job {result.start_s:.1f}s "
        f"({result.cpu_first_s:.1f} CPU s, load {result.load_at_spawn:.1f}), all looked at "
        f"{result.looked_s:.1f}s, peak RSS {result.rss_mb:.0f} MiB, {result.rotations} "
        f"rotations, p99 {result.p99_late_ms:.0f} ms, calls/lifetime "
        f"{result.calls_per_lifetime:.3f}"
    )
    return result
