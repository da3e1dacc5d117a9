"""``python -m bench`` (or ``make bench``): the whole benchmark in one run.

    python -m bench                 # the documented full run (~20 minutes)
    python -m bench --quick         # shorter steady state, 1,000-account bursts only
    python -m bench --burst 20 --steady 20 --steady-seconds 5 --out /tmp/r.md   # smoke
    python -m bench --burst '' --steady 0 --scale 100000   # the 100,000-account phase only
    python -m bench --burst '' --steady 0 --scale 0 --replicas 3   # 1 process vs 3 replicas only

Prints a table and writes it, with the machine description, into
``bench/results.md`` between the ``run:latest`` markers (the rest of the file,
e.g. the before/after history, is kept).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from bench import harness, replicas, scale

LATEST_START = "<!-- run:latest -->"
LATEST_END = "<!-- /run:latest -->"
TARGETS = {
    "ratio": 1.3,
    "bare_ratio": 1.2,
    "p99_ms": 1000.0,
    "rss_mb": 150.0,
    "help_s": 0.3,
    "scale_start_s": 10.0,
    "scale_rss_mb": 400.0,
}


def _ok(good: bool) -> str:
    return "ok" if good else "MISSED"


def report(
    *,
    args: argparse.Namespace,
    env: harness.Env,
    bursts: list[harness.Burst],
    steady: harness.Steady | None,
    large: scale.Scale | None,
    shared: replicas.Replicas | None = None,
    helps: tuple[float, float, float],
    machine: dict[str, str],
    elapsed: float,
) -> str:
    lines = [
        f"Run: `{' '.join(['python -m bench', *sys.argv[1:]])}` — {elapsed / 60:.1f} min, "
        f"{machine['date']}",
        "",
        f"Machine: {machine['cpus']} CPUs, {machine['memory']}, Python {machine['python']}, "
        f"{machine['os']}; load average at start {args.load_start}, at end {machine['load']}.",
        "",
        "### Burst: every account due at once",
        "",
        "| store | accounts | daemon s | (of which start) | baseline s | ratio | target | "
        "2-write baseline s | ratio | bare baseline s | ratio | target | "
        "peak RSS MiB | idle RSS MiB | CPU s / 1000 |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for b in bursts:
        lines.append(
            f"| {b.store} | {b.accounts:,} | {b.daemon_s:.2f} | {b.daemon_start_s:.2f} | "
            f"{b.baseline_s:.2f} | {b.ratio:.2f} | <= {TARGETS['ratio']} "
            f"{_ok(b.ratio <= TARGETS['ratio'])} | {b.baseline2_s:.2f} | {b.ratio2:.2f} | "
            f"{b.bare_s:.2f} | {b.ratio_bare:.2f} | <= {TARGETS['bare_ratio']} "
            f"{_ok(b.ratio_bare <= TARGETS['bare_ratio'])} | {b.peak_rss_mb:.0f} | "
            f"{b.idle_rss_mb:.0f} | "
            f"{b.cpu_s / b.accounts * 1000:.1f} |"
        )
    lines += [
        "",
        "Daemon time: from spawning `rotator run` (default log level) to the last account's "
        "`rotated` line (state written, every sink published). Baseline: from spawning "
        "`bench/baseline.py` to its exit, for the same token calls and the same three "
        "writes per account (the lease, the state, the sink) with the same store classes and "
        f"{harness.WORKERS} threads sharing one pooled HTTP client (the daemon gives each "
        "worker its own); the 2-write baseline leaves out the lease (the design's "
        "one-refresher guarantee). The bare baseline is the floor of the job with none of "
        "rotator's code: one token call and two durable writes per account (file: temp file, "
        "fsync, rename, directory fsync; OpenBao: two KV v2 writes), each thread with its "
        "own client; its ratio is the median of the rounds' ratios too. "
        "CPU s / 1000 rotations includes the daemon's start. "
        "Each phase's files stay until the end of the run, so no timed phase follows a "
        "deletion (ext4 is slower to allocate inodes for a minute after one). "
        f"With {args.rounds} rounds, each burst and its baseline ran {args.rounds} times back "
        "to back: the seconds are medians, the ratio is the median of the rounds' ratios "
        "(each in the notes), and the 2-write baseline, RSS and CPU are from the first round.",
    ]
    if steady is not None:
        s = steady
        lines += [
            "",
            f"### Steady state: {s.accounts:,} accounts, 60 s tokens, staggered, {s.seconds:.0f} s",
            "",
            "| measure | value | target |",
            "|---|---:|---|",
            f"| rotations in the window | {s.rotations:,} | |",
            f"| lateness p50 | {s.p50_late_ms:.0f} ms | |",
            f"| lateness p99 | {s.p99_late_ms:.0f} ms | <= 1000 ms "
            f"{_ok(s.p99_late_ms <= TARGETS['p99_ms'])} |",
            f"| lateness max | {s.max_late_ms:.0f} ms | |",
            f"| vendor calls per account per lifetime | {s.calls_per_lifetime:.3f} "
            f"(max {s.max_calls_per_lifetime}) | 1.0 "
            f"{_ok(abs(s.calls_per_lifetime - 1) < 1e-9 and s.max_calls_per_lifetime <= 1)} |",
            f"| sink writes made / skipped as unchanged | {s.sink_writes:,} / "
            f"{s.sink_skipped:,} | |",
            f"| CPU s per 1000 rotations | {s.cpu_per_1000_s:.2f} | |",
            f"| peak RSS | {s.rss_mb:.0f} MiB | |",
            f"| warnings/errors logged | {s.problems} | |",
            "",
            "Lateness: from the planned refresh time (the state's `next_refresh_at`, the job's "
            "run date) to the end of the job (state written, sinks published). State in the "
            "file store; sinks in a file and in OpenBao. Skipped writes: the daemon's first look "
            "at every account finds its sinks already current.",
        ]
    if large is not None:
        lines += scale_table(large)
    if shared is not None:
        lines += replicas.table(shared)
    big = [b for b in bursts if b.accounts >= 10_000]
    peak = max((b.peak_rss_mb for b in big), default=0.0)
    lines += [
        "",
        "### Resources",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
    ]
    if big:
        lines.append(
            f"| peak RSS, 10,000 accounts (burst) | {peak:.0f} MiB | <= 150 MiB "
            f"{_ok(peak <= TARGETS['rss_mb'])} |"
        )
        lines.append(f"| idle RSS, 10,000 accounts | {max(b.idle_rss_mb for b in big):.0f} MiB | |")
    lines += [
        f"| `rotator --help` wall time (median / max of 7) | {helps[0]:.3f} s / "
        f"{helps[1]:.3f} s | <= 0.3 s {_ok(helps[0] <= TARGETS['help_s'])} |",
        f"| bare `python -c pass` (median) | {helps[2]:.3f} s | |",
    ]
    if env.log:
        lines += ["", "Notes:", ""] + [f"- {line}" for line in env.log]
    return "\n".join(lines) + "\n"


def scale_table(s: scale.Scale) -> list[str]:
    return [
        "",
        f"### {s.accounts:,} accounts in one process: the start, then {s.seconds:.0f} s steady",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| start to first job | {s.start_s:.1f} s | <= {TARGETS['scale_start_s']:.0f} s "
        f"{_ok(s.start_s <= TARGETS['scale_start_s'])} |",
        f"| CPU s to the first job | {s.cpu_first_s:.1f} s | |",
        f"| load average (1 min) at the spawn | {s.load_at_spawn:.1f} | |",
        f"| start to `started` (every first run queued) | {s.started_s:.1f} s | |",
        f"| start to every account looked at once | {s.looked_s:.1f} s | |",
        f"| CPU s to every account looked at | {s.cpu_start_s:.1f} s | |",
        f"| peak RSS | {s.rss_mb:.0f} MiB | <= {TARGETS['scale_rss_mb']:.0f} MiB "
        f"{_ok(s.rss_mb <= TARGETS['scale_rss_mb'])} |",
        f"| RSS at the end of the window | {s.idle_rss_mb:.0f} MiB | |",
        f"| rotations in the window | {s.rotations:,} | |",
        f"| lateness p50 / max | {s.p50_late_ms:.0f} / {s.max_late_ms:.0f} ms | |",
        f"| lateness p99 | {s.p99_late_ms:.0f} ms | <= 1000 ms "
        f"{_ok(s.p99_late_ms <= TARGETS['p99_ms'])} |",
        f"| vendor calls per account per lifetime | {s.calls_per_lifetime:.3f} "
        f"(max {s.max_calls_per_lifetime}) | 1.0 "
        f"{_ok(abs(s.calls_per_lifetime - 1) < 1e-9 and s.max_calls_per_lifetime <= 1)} |",
        f"| CPU s per 1000 rotations (window) | {s.cpu_per_1000_s:.2f} | |",
        f"| warnings/errors logged | {s.problems} | |",
        "",
        f"Tokens live {s.ttl:.0f} s; the seeded refresh times are spread evenly over one "
        f"refresh interval ({s.ttl * scale.SHARE:.0f} s). State and sinks in the "
        "file store; the daemon runs at debug level (a `job done` line per job, the first "
        "looks included). First job: spawn to the first `job done` line.",
    ]


def settle_for(pause: float) -> None:
    """Make every phase's pre-run pause ``pause`` seconds long (see harness.settle).

    The pause is for the measurement (the previous phase's writes reach the disk before
    the next is timed); a smoke run (tests/deploy/test_bench.py) checks that every
    phase runs and reports, not its times, and would otherwise spend a quarter of its
    minute and a half waiting. The sync is kept: it is cheap, and it is what a phase
    would otherwise pay for.
    """
    original = harness.settle

    def settle(seconds: float = pause) -> None:
        original(seconds)

    # replicas imported the function itself, so both names are rebound
    harness.settle = settle
    replicas.settle = settle  # type: ignore[attr-defined]


def write_results(path: Path, text: str) -> None:
    block = f"{LATEST_START}\n{text}{LATEST_END}\n"
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if LATEST_START in old and LATEST_END in old:
            head, rest = old.split(LATEST_START, 1)
            tail = rest.split(LATEST_END, 1)[1].lstrip("\n")
            path.write_text(head + block + tail, encoding="utf-8")
            return
    path.write_text("# Benchmark results\n\n## Latest run\n\n" + block, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,000-account bursts and a 60 s steady state (development)",
    )
    parser.add_argument(
        "--burst", default=None, help="comma-separated burst sizes (default 1000,10000)"
    )
    parser.add_argument("--stores", default="file,vault", help="burst stores (file,vault)")
    parser.add_argument("--steady", type=int, default=1000, help="steady-state accounts")
    parser.add_argument(
        "--steady-seconds",
        type=float,
        default=None,
        help="steady-state duration (default 300, --quick 60)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        help="accounts of the one-process scale phase (default 100000, --quick 0: off)",
    )
    parser.add_argument(
        "--scale-seconds", type=float, default=60.0, help="the scale phase's steady window"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="replicas of the partitioned phase, run against 1 process on the same accounts "
        "(default 3, --quick 0: off)",
    )
    parser.add_argument(
        "--replicas-accounts",
        type=int,
        default=10_000,
        help="accounts of the partitioned phase's burst",
    )
    parser.add_argument(
        "--membership-timeout",
        type=float,
        default=replicas.MEMBERSHIP_TIMEOUT,
        help="the replicas' server.coordination.membership_timeout in seconds (default 30, "
        "the documented default)",
    )
    parser.add_argument("--out", default=str(harness.ROOT / "bench" / "results.md"))
    parser.add_argument(
        "--keep-logs", metavar="DIR", help="copy the daemon, baseline and emulator logs here"
    )
    parser.add_argument("--timeout", type=float, default=600, help="per phase (s)")
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds to pause, after a sync, before each timed daemon or baseline run "
        "(default 2; 0 for a smoke run, whose times mean nothing)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="run each burst and its baseline this many times and report the median ratio "
        "(default 3, --quick 1)",
    )
    args = parser.parse_args(argv)
    burst = args.burst if args.burst is not None else ("1000" if args.quick else "1000,10000")
    sizes = [int(x) for x in burst.split(",") if x]
    if args.scale is None:
        args.scale = 0 if args.quick else 100_000
    if args.replicas is None:
        args.replicas = 0 if args.quick else 3
    seconds = args.steady_seconds or (60.0 if args.quick else 300.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    stores = [s for s in args.stores.split(",") if s]
    if args.settle is not None:
        settle_for(args.settle)
    args.load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.time()
    harness.compile_sources()
    env = harness.new_env()
    bursts: list[harness.Burst] = []
    steady = None
    large = None
    shared = None
    try:
        with harness.openbao(env):
            for size in sizes:
                for store in stores:
                    bursts.append(harness.run_burst(env, store, size, args.timeout, args.rounds))
            if args.steady:
                steady = harness.run_steady(env, args.steady, seconds)
            if args.scale:
                large = scale.run_scale(env, args.scale, args.scale_seconds, args.timeout)
        if args.replicas:
            shared = replicas.run_replicas(
                env, args.replicas_accounts, args.replicas, args.timeout, args.membership_timeout
            )
        helps = harness.help_times(env)
    except BaseException:
        print(f"bench: failed; logs kept in {env.work}", file=sys.stderr)
        raise
    finally:
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            for log in env.work.glob("*.log"):
                shutil.copy(log, Path(args.keep_logs) / log.name)
    shutil.rmtree(env.work, ignore_errors=True)
    text = report(
        args=args,
        env=env,
        bursts=bursts,
        steady=steady,
        large=large,
        shared=shared,
        helps=helps,
        machine=harness.machine(),
        elapsed=time.time() - started,
    )
    print(text)
    write_results(Path(args.out), text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
