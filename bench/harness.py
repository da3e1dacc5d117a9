"""The benchmark phases: burst, steady state, resources, ``--help``; the results table.

Everything runs as separate processes on loopback: the token emulator
(``bench.emulator``), OpenBao (``bao server -dev``, started and stopped by PID
through ``tests.support.servers.OpenBao``), the daemon (``python -m rotator run``) and
the baseline (``bench.baseline``). A burst runs the daemon at its default log
level and times each account by its ``rotated`` line (written once the state is
saved and every sink was tried); the steady state runs it with ``--log-level
debug`` for the ``job done`` line (one per job: planned time, lateness, sinks
written or unchanged).
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.follow import JobLog, wait_for

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
WORKERS = 16  # the daemon's default server.workers; the baseline uses the same
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Env:
    work: Path
    secret: str
    vault_url: str = ""
    vault_token: str = ""
    log: list[str] = field(default_factory=list)

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["BENCH_CLIENT_SECRET"] = self.secret
        env["BENCH_VAULT_TOKEN"] = self.vault_token
        env.pop("NOTIFY_SOCKET", None)
        # byte code of every module, the third-party ones too, in the run's own cache
        # (see warm_imports)
        env["PYTHONPYCACHEPREFIX"] = str(self.work / "pycache")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def note(self, line: str) -> None:
        self.log.append(line)
        print(f"[bench] {line}", file=sys.stderr, flush=True)


def compile_sources() -> None:
    """Byte-compile rotator and the harness, as ``pip install`` does for a package.

    A source checkout run with ``PYTHONDONTWRITEBYTECODE`` set (as on the CI
    machines) is otherwise compiled again at every start: 30-60 ms of each
    daemon's start, and a little of each baseline's. The ``__pycache__``
    directories are ignored by git.
    """
    import compileall

    for package in ("rotator", "bench"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


def warm_imports(env: Env) -> None:
    """Import every module a timed process imports once, before anything is timed.

    An installed package comes with its byte code (pip compiles it; so does the
    container image), but a virtualenv made with ``PYTHONDONTWRITEBYTECODE`` set
    has none for its third-party packages: every daemon start compiled pydantic,
    httpx, hvac and the rest again (about 2 s of CPU of a 3,000-account burst's
    daemon, a fraction of that for the baselines, which import less). Each
    timed process reads the byte code from the run's cache
    (``PYTHONPYCACHEPREFIX``, :meth:`Env.environ`); the source tree and the
    virtualenv are not written to.
    """
    code = (
        "import importlib, pkgutil, rotator\n"
        "for m in pkgutil.walk_packages(rotator.__path__, 'rotator.'):\n"
        "    if m.name.endswith('__main__'):\n"
        "        continue  # it runs the CLI\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except Exception:\n"
        "        pass\n"
        "import bench.baseline, bench.emulator, tests.support.servers\n"
        # what the daemon imports only once it runs: httpx's transport (httpcore, and
        # trio and anyio, which httpcore looks for), the scheduler, structlog's console
        # renderer. Unwarmed, the daemon compiled them (~0.25 s of a 3,000-account
        # burst's CPU, py-spy) and the bare baseline after it found them compiled.
        "import httpx; httpx.Client().close()\n"
        "import structlog.dev, apscheduler.schedulers.background, apscheduler.executors.pool\n"
        "import apscheduler.jobstores.memory, apscheduler.triggers.interval\n"
    )
    subprocess.run([PY, "-c", code], env=env.environ(), cwd=ROOT, check=True, timeout=300)


# -- processes -------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def emulator(env: Env, ttl: float) -> Iterator[tuple[str, str]]:
    """The token endpoint in its own process: yields (token url, stats url)."""
    log = open(env.work / f"emulator-{ttl:g}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [PY, "-m", "bench.emulator", "--ttl", str(ttl)],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env.environ(),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"emulator did not start; see {log.name}")
        ready = json.loads(line)
        yield ready["url"], ready["stats"]
    finally:
        _stop(proc)
        log.close()


def emulator_stats(stats_url: str) -> dict[str, Any]:
    return dict(httpx.get(stats_url, timeout=30).json())


@contextmanager
def openbao(env: Env) -> Iterator[None]:
    sys.path.insert(0, str(ROOT))
    from tests.support.servers import OpenBao

    server = OpenBao()
    server.start()
    env.vault_url, env.vault_token = server.url, server.root_token
    os.environ["BENCH_VAULT_TOKEN"] = server.root_token  # for seeding, in this process
    try:
        yield
    finally:
        server.close()  # SIGTERM by PID, then the temp dir


def proc_stats(pid: int) -> dict[str, float]:
    """RSS now and peak (MiB) and CPU seconds of a process, from /proc."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    out["cpu"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


# -- configuration ---------------------------------------------------------------------


def write_config(
    env: Env, phase: str, names: list[str], url: str, *, state: str, sinks: list[str]
) -> Path:
    """A daemon configuration for ``names`` (each account its own client id)."""
    base = env.work / phase
    lines = [
        "server:",
        f"  workers: {WORKERS}",
        "  shutdown_grace: 20s",
        f"  spool_dir: {base / 'spool'}",
        "stores:",
        f"  files: {{type: file, directory: {base / 'state'}}}",
        f"  sinks: {{type: file, directory: {base / 'sinks'}}}",
    ]
    if "bao" in sinks or state == "bao":
        lines.append(
            f"  bao: {{type: vault, url: '{env.vault_url}', prefix: bench/{phase}, "
            "auth: {method: token, token: 'env:BENCH_VAULT_TOKEN'}}"
        )
    lines += [
        "defaults:",
        "  provider: oauth2",
        f"  token_url: '{url}'",
        "  grant: client_credentials",
        "  client_auth: basic",
        "  client_secret: 'env:BENCH_CLIENT_SECRET'",
        # the bench measures rotator's own cost: the emulator gets no politeness limit
        "  rate_limit: {per_second: 10000, burst: 10000, concurrency: 256}",
        f"  state: {{store: {state}}}",
        "accounts:",
    ]
    for name in names:
        entries = ", ".join(
            f"{{store: sinks, path: {name}.json}}"
            if sink == "sinks"
            else f"{{store: bao, path: sinks/{name}}}"
            for sink in sinks
        )
        lines.append(f"  {name}: {{client_id: {name}, sinks: [{entries}]}}")
    base.mkdir(parents=True, exist_ok=True)
    path = base / "rotator.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def daemon(
    env: Env, config: Path, phase: str, *, level: str = "info"
) -> Iterator[tuple[subprocess.Popen[Any], JobLog, float]]:
    log_path = env.work / f"daemon-{phase}.log"
    log = open(log_path, "wb")  # noqa: SIM115
    settle()
    spawned = time.time()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "rotator",
            "run",
            "-c",
            str(config),
            "--log-format",
            "json",
            "--log-level",
            level,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env.environ(),
        cwd=env.work,
    )
    try:
        yield proc, JobLog(log_path), spawned
    finally:
        _stop(proc)
        log.close()


def settle(seconds: float = 2.0) -> None:
    """Before a timed phase: flush what the previous phase left to the disk.

    Each burst creates ~30,000 files. They are not deleted between phases:
    ext4 skips inodes freed in the last minute or so when it allocates new ones
    (``recently_deleted`` and ``find_inode_bit`` were a third of the kernel
    samples of a baseline that ran just after a burst's files were removed), so
    whichever side ran after a deletion paid for it, by up to 50% more system
    time. The whole work directory goes at the end of the run.
    """
    os.sync()
    time.sleep(seconds)


# -- burst -----------------------------------------------------------------------------


@dataclass
class Burst:
    store: str
    accounts: int
    daemon_s: float = 0.0  # the median over the rounds
    daemon_start_s: float = 0.0  # spawn -> "started" (config, stores, scheduler)
    baseline_s: float = 0.0  # the daemon's writes: lease, state, sink (median)
    baseline2_s: float = 0.0  # the two writes no design can skip: state, sink (first round)
    bare_s: float = 0.0  # the same two writes without rotator's code: the floor (median)
    peak_rss_mb: float = 0.0
    idle_rss_mb: float = 0.0
    cpu_s: float = 0.0
    vendor_calls: int = 0
    #: daemon / baseline of each round (a daemon run and its baseline run back to back)
    ratios: list[float] = field(default_factory=list)
    #: daemon / bare baseline of each round
    bare_ratios: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        if self.ratios:
            return statistics.median(self.ratios)
        return self.daemon_s / self.baseline_s if self.baseline_s else float("nan")

    @property
    def ratio_bare(self) -> float:
        if self.bare_ratios:
            return statistics.median(self.bare_ratios)
        return self.daemon_s / self.bare_s if self.bare_s else float("nan")

    @property
    def ratio2(self) -> float:
        return self.daemon_s / self.baseline2_s if self.baseline2_s else float("nan")


def run_burst(env: Env, store: str, count: int, timeout: float, rounds: int = 1) -> Burst:
    """N accounts, no state: all due at the daemon's start; then the baseline.

    With ``rounds`` > 1 the pair runs that many times (fresh accounts each time) and
    the ratio is the median of the rounds' ratios: on a shared virtual disk, one
    pair's fsync latency can differ from the next pair's by a quarter.
    """
    result = Burst(store=store, accounts=count)
    tag = f"{store}{count}"
    daemon_times: list[float] = []
    baseline_times: list[float] = []
    bare_times: list[float] = []
    for round_no in range(rounds):
        rtag = tag if round_no == 0 else f"{tag}r{round_no}"
        daemon_s, baseline_s, bare_s = _burst_round(
            env, result, rtag, timeout=timeout, first=round_no == 0
        )
        daemon_times.append(daemon_s)
        baseline_times.append(baseline_s)
        bare_times.append(bare_s)
        result.ratios.append(daemon_s / baseline_s)
        result.bare_ratios.append(daemon_s / bare_s)
    result.daemon_s = statistics.median(daemon_times)
    result.baseline_s = statistics.median(baseline_times)
    result.bare_s = statistics.median(bare_times)
    if rounds > 1:
        env.note(
            f"burst {tag}: ratios of the {rounds} rounds "
            + ", ".join(f"{r:.2f}" for r in result.ratios)
            + f"; median {result.ratio:.2f}; to the bare baseline "
            + ", ".join(f"{r:.2f}" for r in result.bare_ratios)
            + f"; median {result.ratio_bare:.2f}"
        )
    return result


def _burst_round(
    env: Env, result: Burst, tag: str, *, timeout: float, first: bool
) -> tuple[float, float, float]:
    """One daemon run, its baseline and the bare baseline; the first round also fills
    in the resources and the 2-write baseline."""
    store, count = result.store, result.accounts
    names = [f"bench-d{tag}-{i:05d}" for i in range(count)]
    state = "files" if store == "file" else "bao"
    sinks = ["sinks"] if store == "file" else ["bao"]
    with emulator(env, 3600) as (url, stats_url):
        config = write_config(env, f"burst-{tag}", names, url, state=state, sinks=sinks)
        with daemon(env, config, f"burst-{tag}") as (proc, jobs, spawned):

            def done() -> bool:
                jobs.poll()
                return len(jobs.rotated) >= count

            wait_for(done, [proc], timeout, f"daemon burst {tag}")
            usage = proc_stats(proc.pid)
            last = max(line["t"] for line in jobs.rotated)
            daemon_s = last - spawned
            result.peak_rss_mb = max(result.peak_rss_mb, usage["VmHWM"])
            if first:
                result.daemon_start_s = (jobs.started_at or spawned) - spawned
                result.cpu_s = usage["cpu"]
                time.sleep(3)  # nothing is due for an hour: the daemon is idle
                result.idle_rss_mb = proc_stats(proc.pid)["VmRSS"]
            if jobs.errors:
                env.note(
                    f"burst {tag}: daemon logged {len(jobs.errors)} problems, "
                    f"first: {jobs.errors[0]}"
                )
        calls = emulator_stats(stats_url)["per_client"]
        vendor_calls = sum(calls.get(n, 0) for n in names)
        result.vendor_calls += vendor_calls
        if vendor_calls != count:
            env.note(f"burst {tag}: {vendor_calls} vendor calls for {count} accounts")
        # The files stay until the end of the run: see settle().
        # the baselines: same emulator, same store, same concurrency, no daemon
        baseline_s = run_baseline(env, url, store, count, tag, writes=3, timeout=timeout)
        bare_s = run_baseline(env, url, store, count, tag, writes=2, timeout=timeout, bare=True)
        if first:
            result.baseline2_s = run_baseline(
                env, url, store, count, tag, writes=2, timeout=timeout
            )
    line = (
        f"burst {tag}: daemon {daemon_s:.2f}s (start {result.daemon_start_s:.2f}s) "
        f"baseline {baseline_s:.2f}s ratio {daemon_s / baseline_s:.2f}; "
        f"bare baseline {bare_s:.2f}s ratio {daemon_s / bare_s:.2f}"
    )
    if first:
        two = result.baseline2_s
        line += f"; 2-write baseline {two:.2f}s ratio {daemon_s / two:.2f}"
    env.note(line)
    return daemon_s, baseline_s, bare_s


def run_baseline(
    env: Env,
    url: str,
    store: str,
    count: int,
    tag: str,
    *,
    writes: int,
    timeout: float,
    bare: bool = False,
) -> float:
    """Seconds from spawning ``bench.baseline`` to its exit."""
    name = f"baseline{'bare' if bare else writes}-{tag}"
    base = env.work / name
    argv = [PY, "-m", "bench.baseline", "--url", url, "--count", str(count)]
    argv += ["--prefix", f"bench-b{'x' if bare else writes}{tag}-", "--workers", str(WORKERS)]
    argv += ["--store", store, "--writes", str(writes), *(["--bare"] if bare else [])]
    if store == "file":
        argv += ["--state-dir", str(base / "state"), "--sink-dir", str(base / "sinks")]
    else:
        argv += ["--vault-url", env.vault_url, "--vault-prefix", f"bench/{name}"]
    settle()
    started = time.time()
    with open(env.work / f"{name}.log", "wb") as log:
        finished = subprocess.run(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env.environ(),
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
    elapsed = time.time() - started
    if finished.returncode != 0:
        raise RuntimeError(f"baseline {name} failed; see {log.name}")
    return elapsed  # its files stay until the end of the run: see settle()


# -- steady state ----------------------------------------------------------------------


@dataclass
class Steady:
    accounts: int
    seconds: float
    rotations: int = 0
    p50_late_ms: float = 0.0
    p99_late_ms: float = 0.0
    max_late_ms: float = 0.0
    calls_per_lifetime: float = 0.0
    max_calls_per_lifetime: int = 0
    sink_writes: int = 0
    sink_skipped: int = 0
    cpu_per_1000_s: float = 0.0
    rss_mb: float = 0.0
    problems: int = 0


TTL = 60.0


def seed_steady(config: Path, names: list[str], first: float, spread: float) -> None:
    """Give every account a token whose refresh is planned in [first, first + spread),
    evenly spaced, and publish it, so the daemon starts with everything in step."""
    from rotator.backends.base import SecretStore
    from rotator.config import load_config
    from rotator.rotation.accounts import build_accounts
    from rotator.rotation.rotator import publish
    from rotator.secrets import Secret
    from rotator.service.app import open_stores
    from rotator.state import AccountState
    from rotator.tokens import TokenSet

    cfg = load_config(str(config))
    stores: dict[str, SecretStore] = open_stores(cfg)
    accounts = build_accounts(cfg, stores)
    try:
        for index, name in enumerate(names):
            account = accounts[name]
            planned = datetime.fromtimestamp(first + spread * index / len(names), UTC)
            expires = planned + timedelta(seconds=TTL * (1 - 0.67))
            tokens = TokenSet(
                access_token=Secret("seed-" + secrets.token_urlsafe(12)),
                token_type="bearer",
                issued_at=expires - timedelta(seconds=TTL),
                expires_at=expires,
            )
            state = replace(
                AccountState(account=name, provider="oauth2").with_tokens(tokens),
                next_refresh_at=planned,
            )
            account.state_store.write(account.state_path, state.to_record(), expected_version=None)
            view = account.provider.consumer_view(tokens)
            for store, sink in account.sinks:
                publish(store, sink, view)
    finally:
        for store in stores.values():
            store.close()


def run_steady(env: Env, count: int, seconds: float) -> Steady:
    """N accounts with 60 s tokens, refreshes staggered evenly, for ``seconds``."""
    result = Steady(accounts=count, seconds=seconds)
    names = [f"bench-s-{i:05d}" for i in range(count)]
    # seeding, then the daemon's start and its first look at every account
    warmup = 4 + count / 50
    spread = TTL * 0.67  # one refresh interval: the planned times cover it evenly
    with emulator(env, TTL) as (url, stats_url):
        config = write_config(env, "steady", names, url, state="files", sinks=["sinks", "bao"])
        seeded_at = time.time()
        first = seeded_at + warmup
        seed_steady(config, names, first, spread)
        env.note(f"steady: seeded {count} accounts in {time.time() - seeded_at:.1f}s")
        with daemon(env, config, "steady", level="debug") as (proc, jobs, _spawned):

            def ready() -> bool:
                jobs.poll()
                return len(jobs.jobs) >= count

            wait_for(ready, [proc], max(60.0, first - time.time() + 30), "steady start")
            if time.time() > first:
                env.note("steady: the daemon's start overran the warm-up")
            while time.time() < first:
                time.sleep(0.05)
            window_end = first + seconds
            cpu_start = proc_stats(proc.pid)["cpu"]
            while time.time() < window_end:
                time.sleep(1)
                jobs.poll()
            usage = proc_stats(proc.pid)
            time.sleep(2)  # rotations in flight at the end of the window finish
        # The vendor's call counts run to the daemon's exit, so its job lines must
        # too: a rotation that started after the last poll and finished during the
        # stop would otherwise count as a second call in one lifetime.
        jobs.poll()
        calls = emulator_stats(stats_url)["per_client"]
    window = [j for j in jobs.successes() if first <= j["planned_at"] < window_end]
    late = sorted(float(j["late_ms"]) for j in window)
    result.rotations = len(window)
    if late:
        result.p50_late_ms = statistics.median(late)
        result.p99_late_ms = late[min(len(late) - 1, int(len(late) * 0.99))]
        result.max_late_ms = late[-1]
    lifetimes: dict[str, set[float]] = {}
    for job in jobs.successes():
        lifetimes.setdefault(job["account"], set()).add(job["planned_at"])
    per_account = [
        calls.get(n, 0) / max(1, len(lifetimes.get(n, ()))) for n in names if calls.get(n, 0)
    ]
    total_lifetimes = sum(len(v) for v in lifetimes.values())
    result.calls_per_lifetime = sum(calls.values()) / max(1, total_lifetimes)
    # Rounded up: an account with 3 calls in 2 lifetimes must show as 2, not 1.
    result.max_calls_per_lifetime = math.ceil(max(per_account, default=0))
    result.sink_writes = sum(int(j["sinks_written"]) for j in jobs.jobs)
    result.sink_skipped = sum(int(j["sinks_unchanged"]) for j in jobs.jobs)
    result.cpu_per_1000_s = (usage["cpu"] - cpu_start) / max(1, len(window)) * 1000
    result.rss_mb = usage["VmHWM"]
    result.problems = len(jobs.errors)
    if jobs.errors:
        env.note(f"steady: daemon logged {len(jobs.errors)} problems, first: {jobs.errors[0]}")
    env.note(
        f"steady: {result.rotations} rotations, p50 {result.p50_late_ms:.0f} ms, "
        f"p99 {result.p99_late_ms:.0f} ms, calls/lifetime {result.calls_per_lifetime:.3f}"
    )
    return result


# -- --help ----------------------------------------------------------------------------


def help_times(env: Env, runs: int = 7) -> tuple[float, float, float]:
    """Median and max wall time of ``rotator --help``; median of a bare interpreter."""

    def timed(argv: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            env=env.environ(),
            cwd=ROOT,
        )
        return time.perf_counter() - started

    helps = [timed([PY, "-m", "rotator", "--help"]) for _ in range(runs)]
    bare = [timed([PY, "-c", "pass"]) for _ in range(runs)]
    return statistics.median(helps), max(helps), statistics.median(bare)


# -- machine and report ----------------------------------------------------------------


def machine() -> dict[str, str]:
    mem = "?"
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} ({cpu})",
        "memory": mem,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def new_env() -> Env:
    work = Path(tempfile.mkdtemp(prefix="rotator-bench-"))
    secret = os.environ.get("BENCH_CLIENT_SECRET") or "bench-" + secrets.token_urlsafe(24)
    env = Env(work=work, secret=secret)
    warm_imports(env)
    return env
