"""Partitioned replicas measured: the same burst run by one process and by N replicas.

The question is what a second and third ``rotator run`` buy, and what they
cost, when they share the accounts through ``server.coordination`` (tooz on a
real ``redis-server`` on loopback, started and stopped by PID). One burst of
``count`` client-credentials accounts with no state, so every account is due
when the processes start, is run three ways on the same accounts (the same
names and configuration; each run its own state and sink directories and its
own emulator, so each starts from nothing):

- one process without ``coordination`` (the embedded scheduler, the default);
- one replica with ``coordination`` (the cost of the group alone);
- N replicas with ``coordination``, spawned together.

The file store, for state and sinks: the replicas are processes on one host
sharing one state directory (the lease is a compare-and-set on files guarded
by ``flock``), and a burst on it is bound by rotator's own CPU (about 3 CPU
seconds per 1,000 rotations), which is what replicas could divide. On OpenBao
the one dev server on the same two cores is the bound (most of the 7 CPU
seconds per 1,000 are its), and the phase would measure OpenBao.

Each daemon runs at debug level for its ``job done`` line (one per job, with its
result: ``busy`` is a lease refused because another replica held it; replicas
lease every grant, so a client-credentials account in flight at one replica is
busy at another instead of a second vendor call). After the
N-replica burst one replica is killed with SIGKILL (no goodbye: its heartbeat
just stops); the survivors must own every account within the membership timeout
and look at each gained account once (its first run, through the start's plan).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.follow import JobLog, wait_for
from bench.harness import (
    PY,
    Env,
    _stop,
    emulator,
    emulator_stats,
    proc_stats,
    settle,
    write_config,
)

__all__ = ["MEMBERSHIP_TIMEOUT", "Replicas", "Run", "run_replicas", "table", "watch_interval"]

#: the documented default of server.coordination: what a user gets
MEMBERSHIP_TIMEOUT = 30.0


def watch_interval(membership_timeout: float) -> float:
    """The documented default (2 s) at the default timeout; a shorter timeout, a fifth of it."""
    return min(2.0, membership_timeout / 5)


@dataclass
class Run:
    """One way of running the burst: one process, one replica, or N replicas."""

    label: str
    replicas: int
    coordination: bool
    accounts: int
    wall_s: float = 0.0  # spawn -> the last account's `rotated` line, any replica
    settled_s: float = 0.0  # spawn -> every replica's share line says N members
    shares: list[int] = field(default_factory=list)  # rotations by each replica
    owned: list[int] = field(default_factory=list)  # each replica's share at the end
    vendor_calls: int = 0
    max_calls: int = 0  # the most calls any one account had
    busy: int = 0  # jobs that found another replica's lease
    cpu_s: list[float] = field(default_factory=list)  # each replica, start included
    redis_cpu_s: float = 0.0
    peak_rss_mb: list[float] = field(default_factory=list)
    problems: int = 0
    takeover_s: float | None = None  # kill -9 -> the survivors own every account
    looked_s: float | None = None  # kill -9 -> every gained account looked at
    gained: int = 0  # the dead replica's share
    takeover_calls: int = 0  # vendor calls after the kill (nothing was due: 0)

    @property
    def cpu_total_s(self) -> float:
        return sum(self.cpu_s)

    @property
    def cpu_per_1000_s(self) -> float:
        return self.cpu_total_s / max(1, self.accounts) * 1000

    @property
    def calls_per_account(self) -> float:
        return self.vendor_calls / max(1, self.accounts)


@dataclass
class Replicas:
    accounts: int
    replicas: int
    membership_timeout: float = MEMBERSHIP_TIMEOUT
    runs: list[Run] = field(default_factory=list)


def settled(follows: list[JobLog], members: int, accounts: int) -> float | None:
    """When the replicas' shares first covered every account in a group of ``members``."""
    events = sorted((t, i, m, owned) for i, f in enumerate(follows) for t, m, owned in _shares(f))
    last: dict[int, tuple[int, int]] = {}
    for t, i, m, owned in events:
        last[i] = (m, owned)
        every = len(last) == len(follows) and all(v[0] == members for v in last.values())
        if every and sum(v[1] for v in last.values()) == accounts:
            return t
    return None


def _shares(follow: JobLog) -> list[tuple[float, int, int]]:
    """(time, members, owned) of each share line."""
    return [(s["t"], int(s["members"]), int(s["owned"])) for s in follow.shares]


def coordinated(config: Path, redis_url: str, group: str, membership_timeout: float) -> None:
    """Add ``server.coordination`` to a configuration written by ``write_config``."""
    text = config.read_text(encoding="utf-8")
    line = (
        f"  coordination: {{url: '{redis_url}', group: {group}, "
        f"membership_timeout: {membership_timeout:g}s, "
        f"watch_interval: {watch_interval(membership_timeout):g}s}}\n"
    )
    config.write_text(text.replace("server:\n", "server:\n" + line, 1), encoding="utf-8")


def spawn(env: Env, config: Path, log: Path) -> subprocess.Popen[Any]:
    argv = [PY, "-m", "rotator", "run", "-c", str(config), "--log-format", "json"]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*argv, "--log-level", "debug"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env.environ(),
            cwd=env.work,
        )


def run_one(
    env: Env,
    names: list[str],
    *,
    label: str,
    replicas: int,
    redis: Any | None,
    timeout: float,
    kill: bool,
    membership_timeout: float = MEMBERSHIP_TIMEOUT,
) -> Run:
    """The burst by ``replicas`` processes (``redis`` None: one process, no coordination)."""
    count = len(names)
    result = Run(label, replicas, redis is not None, count)
    phase = f"replicas-{replicas}{'c' if redis is not None else ''}"
    with emulator(env, 3600) as (url, stats_url):
        config = write_config(env, phase, names, url, state="files", sinks=["sinks"])
        if redis is not None:
            coordinated(config, redis.url, phase, membership_timeout)
        redis_cpu = proc_stats(redis.proc.pid)["cpu"] if redis is not None else 0.0
        logs = [env.work / f"daemon-{phase}-{i}.log" for i in range(replicas)]
        settle()
        spawned = time.time()
        procs = [spawn(env, config, log) for log in logs]
        # debug level: tooz's libraries print plain lines of their own
        follows = [JobLog(log, plain_is_problem=False) for log in logs]
        try:

            def rotated() -> bool:
                for f in follows:
                    f.poll()
                return sum(len(f.rotated) for f in follows) >= count

            wait_for(rotated, procs, timeout, f"{label}: burst")
            result.wall_s = max(line["t"] for f in follows for line in f.rotated) - spawned
            if redis is not None:
                # a bound, not a measure (settled_s is): the replicas settle after two
                # looks a watch interval apart, and a loaded machine (CI) stretches that
                def shares_settled() -> bool:
                    # read on: the burst can end before the last replica's share line
                    for f in follows:
                        f.poll()
                    return settled(follows, replicas, count) is not None

                wait_for(
                    shares_settled,
                    procs,
                    3 * membership_timeout + 30,
                    f"{label}: shares",
                )
                result.settled_s = (settled(follows, replicas, count) or spawned) - spawned
            time.sleep(2)  # late `job done` lines (runs that found an account rotated)
            for f in follows:
                f.poll()
            usage = [proc_stats(p.pid) for p in procs]
            result.cpu_s = [u["cpu"] for u in usage]
            result.peak_rss_mb = [u["VmHWM"] for u in usage]
            result.shares = [len(f.rotated) for f in follows]
            result.owned = [f.share()[1] if redis is not None else count for f in follows]
            result.busy = sum(1 for f in follows for job in f.jobs if job["result"] == "busy")
            if redis is not None:
                result.redis_cpu_s = proc_stats(redis.proc.pid)["cpu"] - redis_cpu
            before = emulator_stats(stats_url)["calls"]
            if kill and replicas > 1:
                takeover(result, procs, follows, timeout, membership_timeout)
                result.takeover_calls = emulator_stats(stats_url)["calls"] - before
            result.problems = sum(len(f.errors) for f in follows)
            for f in follows:
                if f.errors:
                    env.note(f"{label}: {len(f.errors)} problems logged, first: {f.errors[0]}")
                    break
        finally:
            for proc in procs:
                _stop(proc)
        per_client = Counter(emulator_stats(stats_url)["per_client"])
    result.vendor_calls = sum(per_client[n] for n in names)
    result.max_calls = max((per_client[n] for n in names), default=0)
    env.note(
        f"{label}: {count:,} accounts in {result.wall_s:.2f}s, shares {result.shares}, "
        f"calls/account {result.calls_per_account:.3f} (max {result.max_calls}), "
        f"busy {result.busy}, CPU {result.cpu_total_s:.1f}s"
        + (f", takeover {result.takeover_s:.1f}s" if result.takeover_s is not None else "")
    )
    return result


def takeover(
    result: Run,
    procs: list[subprocess.Popen[Any]],
    follows: list[JobLog],
    timeout: float,
    membership_timeout: float,
) -> None:
    """SIGKILL the last replica; time the survivors' takeover and their first looks."""
    victim, survivors = procs[-1], procs[:-1]
    watched = follows[:-1]
    result.gained = follows[-1].share()[1]
    looked_before = [len(f.jobs) for f in watched]
    killed = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)

    def owned_by_survivors() -> bool:
        for f in watched:
            f.poll()
        return (
            all(f.share()[0] == len(survivors) for f in watched)
            and sum(f.share()[1] for f in watched) == result.accounts
        )

    wait_for(owned_by_survivors, survivors, membership_timeout + 30, f"{result.label}: takeover")
    result.takeover_s = max(f.shares[-1]["t"] for f in watched) - killed

    def gained_looked_at() -> bool:
        for f in watched:
            f.poll()
        return sum(len(f.jobs) - n for f, n in zip(watched, looked_before, strict=True)) >= (
            result.gained
        )

    what = f"{result.label}: first looks after the takeover"
    wait_for(gained_looked_at, survivors, timeout, what)
    result.looked_s = (
        max(f.jobs[-1]["t"] for f, n in zip(watched, looked_before, strict=True) if len(f.jobs) > n)
        - killed
    )
    result.busy = sum(1 for f in follows for job in f.jobs if job["result"] == "busy")


def run_replicas(
    env: Env,
    count: int,
    replicas: int,
    timeout: float = 600,
    membership_timeout: float = MEMBERSHIP_TIMEOUT,
) -> Replicas:
    """The burst by one process, one replica, and ``replicas`` replicas; then a kill."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.servers import RedisServer

    out = Replicas(accounts=count, replicas=replicas, membership_timeout=membership_timeout)
    timing = {"timeout": timeout, "membership_timeout": membership_timeout}
    names = [f"bench-r-{i:05d}" for i in range(count)]
    out.runs.append(
        run_one(env, names, label="1 process", replicas=1, redis=None, kill=False, **timing)
    )
    with RedisServer() as redis:  # SIGTERM by PID at the end
        out.runs.append(
            run_one(env, names, label="1 replica", replicas=1, redis=redis, kill=False, **timing)
        )
        out.runs.append(
            run_one(
                env,
                names,
                label=f"{replicas} replicas",
                replicas=replicas,
                redis=redis,
                kill=True,
                **timing,
            )
        )
    return out


def table(r: Replicas) -> list[str]:
    """The results section: one row per way of running, then the takeover."""
    lines = [
        "",
        f"### Partitioned replicas: {r.accounts:,} accounts due at once, 1 process vs "
        f"{r.replicas} replicas",
        "",
        "| run | wall s | shares settled s | rotations by each | share at the end | "
        "vendor calls / account (max) | busy | CPU s (each) | CPU s / 1000 | redis CPU s | "
        "peak RSS MiB (each) |",
        "|---|---:|---:|---|---|---:|---:|---|---:|---:|---|",
    ]
    for run in r.runs:
        lines.append(
            f"| {run.label} | {run.wall_s:.2f} | "
            f"{f'{run.settled_s:.1f}' if run.coordination else '-'} | "
            f"{' / '.join(f'{n:,}' for n in run.shares)} | "
            f"{' / '.join(f'{n:,}' for n in run.owned) if run.coordination else '-'} | "
            f"{run.calls_per_account:.3f} ({run.max_calls}) | {run.busy} | "
            f"{run.cpu_total_s:.1f} ({' / '.join(f'{c:.1f}' for c in run.cpu_s)}) | "
            f"{run.cpu_per_1000_s:.2f} | "
            f"{f'{run.redis_cpu_s:.2f}' if run.coordination else '-'} | "
            f"{' / '.join(f'{m:.0f}' for m in run.peak_rss_mb)} |"
        )
    killed = [run for run in r.runs if run.takeover_s is not None]
    for run in killed:
        lines += [
            "",
            f"After the {run.label}' burst, `kill -9` of one replica (its share: {run.gained:,} "
            f"accounts): the survivors owned every account {run.takeover_s:.1f} s later "
            f"(membership timeout {r.membership_timeout:g} s, watch interval "
            f"{watch_interval(r.membership_timeout):g} s) "
            f"and had looked at every gained account {run.looked_s:.1f} s after the kill; "
            f"{run.takeover_calls} vendor calls in the takeover (nothing was due).",
        ]
    lines += [
        "",
        "Wall: from spawning the processes (together) to the last account's `rotated` line in "
        "any of them. Shares settled: until the replicas' shares, in a group of all of them, "
        "first covered every account (a replica takes accounts on only from a group it has "
        "seen twice in a row, one watch interval apart). Busy: jobs that found another "
        "replica's lease (replicas lease every grant, a client-credentials one too; one "
        "process leases only a grant with a refresh token). CPU: user + system of each daemon, "
        "start included; redis: its CPU over the run. State and sinks in the file store (one "
        "directory shared by the replicas); daemons at debug level (a `job done` line per "
        "job); one client id per account, the emulator counts calls per client id.",
    ]
    return lines
