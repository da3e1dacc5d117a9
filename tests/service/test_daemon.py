"""The daemon as a process: rotations, SIGTERM, SIGHUP reload, restart without refresh."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.proc import DaemonProcess, run_rotator, wait_for

SECRET = leakcheck.register("s3cr3t-p+ss:w/rd%-daemon", "client secret")


def write_config(
    tmp: Path, url: str, *, accounts: tuple[str, ...] = ("alpha", "beta"), extra: str = ""
) -> Path:
    secret_file = tmp / "client-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    body = [
        f"server: {{workers: 4, shutdown_grace: 5s, spool_dir: {tmp / 'spool'}}}",
        "stores:",
        f"  files: {{type: file, directory: {tmp / 'out'}}}",
        f"  state: {{type: file, directory: {tmp / 'state'}}}",
        "defaults:",
        "  state: {store: state}",
        "  min_lifetime: 1s",  # the emulator's tokens live seconds
        "  refresh_share: 0.5",
        "  jitter: 0.1",
        "  retry_initial: 1s",
        "  retry_max: 2s",
        "accounts:",
    ]
    for name in accounts:
        body += [
            f"  {name}:",
            "    provider: oauth2",
            f"    token_url: {url}",
            "    client_id: app",
            f"    client_secret: file:{secret_file}",
            "    sinks:",
            f"      - {{store: files, path: {name}.json}}",
            f"      - {{store: files, path: {name}.token, format: token}}",
        ]
    path = tmp / "rotator.yaml"
    path.write_text("\n".join(body) + "\n" + extra)
    return path


def seed(config: Path, account: str, server: OAuth2Emulator) -> None:
    proc = run_rotator(["import", "-c", str(config), account], stdin=server.issue_grant("app"))
    assert proc.returncode == 0, proc.stderr


def read_state(tmp: Path, account: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((tmp / "state" / "state" / account).read_text())
    return data


@contextmanager
def alpha_running(tmp: Path, server: OAuth2Emulator) -> Iterator[tuple[Path, DaemonProcess]]:
    """One seeded account, ``alpha``, and a daemon that has rotated it once."""
    config = write_config(tmp, server.url, accounts=("alpha",))
    seed(config, "alpha", server)
    with DaemonProcess(config) as daemon:
        daemon.wait_log('"event": "rotated"')
        yield config, daemon


@pytest.fixture
def server() -> object:
    with emulator(clients={"app": SECRET}, access_ttl=2.0) as srv:
        yield srv


def test_run_rotates_two_accounts_and_stops_cleanly(tmp_path: Path, server: OAuth2Emulator) -> None:
    config = write_config(tmp_path, server.url)
    for name in ("alpha", "beta"):
        seed(config, name, server)
    with DaemonProcess(config) as daemon:
        seen: dict[str, set[str]] = {"alpha": set(), "beta": set()}

        def rotated_thrice() -> bool:
            for name, tokens in seen.items():
                token_file = tmp_path / "out" / f"{name}.token"
                if token_file.exists():
                    tokens.add(token_file.read_text())
            return all(len(tokens) >= 3 for tokens in seen.values())

        wait_for(rotated_thrice, timeout=30, interval=0.02, what="three rotations per account")
        assert daemon.stop() == 0
        out = daemon.output()
    assert '"event": "stopped"' in out
    assert server.reuse_detected == 0
    for name in ("alpha", "beta"):
        view = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert set(view) == {"access_token", "token_type", "expires_at", "account", "provider"}
        assert view["account"] == name
        assert (tmp_path / "out" / f"{name}.token").read_text() == view["access_token"] + "\n"
        assert (tmp_path / "out" / f"{name}.json").stat().st_mode & 0o777 == 0o600
        state = read_state(tmp_path, name)
        assert "lease_owner" not in state
        grant = server.grant_for(state["refresh_token"])
        assert grant is not None and not grant.revoked
        assert grant.current_refresh == state["refresh_token"]
        assert grant.refreshes >= 3
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_the_daemon_process_dumps_no_core(tmp_path: Path, server: OAuth2Emulator) -> None:
    """A core of the daemon would hold its tokens and client secret."""
    with alpha_running(tmp_path, server) as (_config, daemon):
        limits = Path(f"/proc/{daemon.pid}/limits").read_text()
        [core] = [line for line in limits.splitlines() if line.startswith("Max core file size")]
        assert core.split()[4:6] == ["0", "0"], core
        # PR_GET_DUMPABLE, read by the daemon itself (as root /proc shows no difference)
        daemon.wait_log('"event": "core dumps off"')
        assert daemon.stop() == 0
        assert '"dumpable": false' in daemon.output()


def test_restart_keeps_the_stored_schedule(tmp_path: Path) -> None:
    with emulator(clients={"app": SECRET}, access_ttl=600.0) as server:
        config = write_config(tmp_path, server.url)
        for name in ("alpha", "beta"):
            seed(config, name, server)
        with DaemonProcess(config) as daemon:
            daemon.wait_log('"event": "rotated"', count=2)
            assert daemon.stop() == 0
        calls = server.token_calls
        with DaemonProcess(config) as daemon:
            daemon.wait_log('"event": "started"')
            # Both accounts hold a fresh token: a restart must not refresh them.
            wait_for((tmp_path / "out" / "alpha.json").exists, 5)
            assert daemon.stop() == 0
            assert '"event": "rotated"' not in daemon.output()
        assert server.token_calls == calls


def test_sighup_reloads_accounts_and_keeps_running_config_when_bad(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    with alpha_running(tmp_path, server) as (config, daemon):
        # A bad configuration is refused; the running one stays.
        config.write_text(config.read_text().replace("provider: oauth2", "provider: oauth3"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reload refused")
        assert daemon.proc.poll() is None
        # Adding an account is picked up without a restart.
        write_config(tmp_path, server.url, accounts=("alpha", "gamma"))
        seed(config, "gamma", server)
        daemon.signal(signal.SIGHUP)
        daemon.wait_log('"event": "reloaded"')
        wait_for((tmp_path / "out" / "gamma.token").exists, 15, what="gamma published")
        # Removing it stops its schedule.
        write_config(tmp_path, server.url, accounts=("alpha",))
        daemon.signal(signal.SIGHUP)
        daemon.wait_log('"event": "reloaded"', count=2)
        assert daemon.stop() == 0
        assert "oauth3" in daemon.output()
    assert server.reuse_detected == 0


def test_refresh_and_status_commands(tmp_path: Path, server: OAuth2Emulator) -> None:
    config = write_config(tmp_path, server.url, accounts=("alpha",))
    seed(config, "alpha", server)
    proc = run_rotator(["refresh", "-c", str(config), "alpha"])
    assert proc.returncode == 0, proc.stderr
    assert "alpha: rotated" in proc.stdout
    token = (tmp_path / "out" / "alpha.token").read_text().strip()
    assert server.access_valid(token)
    status = run_rotator(["status", "-c", str(config), "--json"])
    assert status.returncode == 0
    rows = json.loads(status.stdout)["accounts"]
    assert rows[0]["account"] == "alpha" and rows[0]["failed"] is False
    assert token not in status.stdout
    table = run_rotator(["status", "-c", str(config)])
    assert "alpha" in table.stdout and "OK" in table.stdout
    missing = run_rotator(["refresh", "-c", str(config), "nope"])
    assert missing.returncode == 2 and "accounts: alpha" in missing.stderr


def test_dead_grant_is_marked_failed_with_the_fix(tmp_path: Path, server: OAuth2Emulator) -> None:
    config = write_config(tmp_path, server.url, accounts=("alpha",))
    proc = run_rotator(["import", "-c", str(config), "alpha"], stdin="not-a-real-grant-123\n")
    assert proc.returncode == 0
    refresh = run_rotator(["refresh", "-c", str(config), "alpha"])
    assert refresh.returncode == 1
    assert "invalid_grant" in refresh.stderr
    state = read_state(tmp_path, "alpha")
    assert state["failed"] == "true"
    status = run_rotator(["status", "-c", str(config)])
    assert "FAILED" in status.stdout
    # Seeding a new grant clears the failure.
    seed(config, "alpha", server)
    assert run_rotator(["refresh", "-c", str(config), "alpha"]).returncode == 0
    assert "failed" not in read_state(tmp_path, "alpha")


def test_import_refuses_empty_input(tmp_path: Path, server: OAuth2Emulator) -> None:
    config = write_config(tmp_path, server.url, accounts=("alpha",))
    proc = run_rotator(["import", "-c", str(config), "alpha"], stdin="\n")
    assert proc.returncode == 2
    assert "refresh token" in proc.stderr


def test_help_everywhere() -> None:
    for args in ([], ["run"], ["check"], ["status"], ["refresh"], ["import"], ["demo"]):
        proc = run_rotator([*args, "--help"])
        assert proc.returncode == 0, args
        assert "usage: rotator" in proc.stdout


def test_missing_config_exits_2(tmp_path: Path) -> None:
    proc = run_rotator(["run", "-c", str(tmp_path / "none.yaml")])
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    env_proc = run_rotator(["check"], env={"ROTATOR_CONFIG": str(tmp_path / "x.yaml")})
    assert env_proc.returncode == 2 and "x.yaml" in env_proc.stderr


def test_import_records_when_the_grant_was_authorized(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    config = write_config(tmp_path, server.url, accounts=("alpha",))
    grant = server.issue_grant("app")
    bad = run_rotator(
        ["import", "-c", str(config), "alpha", "--authorized-at", "yesterday"], stdin=grant
    )
    assert bad.returncode == 2 and "--authorized-at 'yesterday'" in bad.stderr
    good = run_rotator(
        ["import", "-c", str(config), "alpha", "--authorized-at", "2026-11-01T10:00:00Z"],
        stdin=grant,
    )
    assert good.returncode == 0, good.stderr
    assert read_state(tmp_path, "alpha")["authorized_at"] == "2026-11-01T10:00:00Z"


def test_reload_keeps_unchanged_stores_and_replaces_changed_ones(tmp_path: Path) -> None:
    from rotator.service.app import build_daemon

    with emulator(clients={"app": SECRET}) as server:
        config = write_config(tmp_path, server.url, accounts=("alpha",))
        daemon = build_daemon(str(config))
        before = dict(daemon.stores)
        assert daemon.reload()
        assert daemon.stores["files"] is before["files"]
        assert daemon.stores["state"] is before["state"]
        config.write_text(config.read_text().replace(str(tmp_path / "out"), str(tmp_path / "o2")))
        assert daemon.reload()
        assert daemon.stores["files"] is not before["files"]
        assert daemon.stores["state"] is before["state"]
        assert daemon.rotator.accounts["alpha"].sinks[0][0] is daemon.stores["files"]
        daemon.stop()


def test_the_tick_runs_while_every_worker_is_busy(tmp_path: Path) -> None:
    """A burst queues thousands of rotations in the worker pool; the 30 s tick has a
    thread of its own, so it still runs (APScheduler would skip it with a warning)."""
    import threading
    from datetime import UTC, datetime

    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES

    from rotator.service.app import build_daemon
    from rotator.service.daemon import _TICK

    config = write_config(tmp_path, "http://127.0.0.1:9/token", accounts=("alpha",))
    daemon = build_daemon(str(config))
    daemon.start()
    release = threading.Event()
    seen: list[tuple[str, int]] = []
    ran = threading.Event()

    def listen(event: object) -> None:
        seen.append((event.job_id, event.code))  # type: ignore[attr-defined]
        if event.job_id == _TICK:  # type: ignore[attr-defined]
            ran.set()

    try:
        for n in range(daemon.config.server.workers + 2):  # every worker, and a queue
            daemon.scheduler.add_job(release.wait, "date", id=f"busy-{n}", args=[20])
        daemon.scheduler.add_listener(listen, EVENT_JOB_EXECUTED | EVENT_JOB_MAX_INSTANCES)
        daemon.scheduler.get_job(_TICK).modify(next_run_time=datetime.now(UTC))
        daemon.scheduler.wakeup()
        assert ran.wait(10), seen
        assert (_TICK, EVENT_JOB_EXECUTED) in seen
    finally:
        release.set()
        daemon.stop("test")


def _signal_thread(pid: int, tid: int, signum: int) -> None:
    """tgkill(2): the kernel may hand a process's signal to any of its threads."""
    import ctypes
    import os

    numbers = {"x86_64": 234, "aarch64": 131}
    machine = os.uname().machine
    if machine not in numbers:
        pytest.skip(f"no tgkill syscall number for {machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(numbers[machine], pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill {pid}/{tid}")


def test_signals_delivered_to_a_worker_thread_are_handled(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    # CI saw a daemon ignore SIGTERM for 30 s: the kernel gave the signal to a worker
    # thread, and the main thread, blocked without a timeout, never ran the handler.
    with alpha_running(tmp_path, server) as (_config, daemon):
        tasks = Path(f"/proc/{daemon.pid}/task")
        workers = sorted(int(t.name) for t in tasks.iterdir() if int(t.name) != daemon.pid)
        assert workers, "the daemon runs worker threads"
        _signal_thread(daemon.pid, workers[-1], signal.SIGHUP)
        daemon.wait_log('"event": "reloaded"', timeout=10)
        _signal_thread(daemon.pid, workers[0], signal.SIGTERM)
        assert daemon.proc.wait(timeout=10) == 0
        assert '"reason": "SIGTERM"' in daemon.output()


def test_a_job_due_after_the_tick_leaves_the_scheduler_asleep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a job wakes the scheduler's thread only for a job due before the next
    tick: the thread looks at its jobs at least once per tick, so a later next run
    (minutes away, as a rotation's usually is) needs no hand-off to it."""
    from datetime import UTC, datetime, timedelta

    from apscheduler.schedulers.blocking import BlockingScheduler

    from rotator.service.app import build_daemon
    from rotator.service.daemon import _TICK_SECONDS

    wakeups: list[str] = []
    wakeup = BlockingScheduler.wakeup

    def counted(self: BlockingScheduler) -> None:
        wakeups.append("wakeup")
        wakeup(self)

    monkeypatch.setattr(BlockingScheduler, "wakeup", counted)
    config = write_config(tmp_path, "http://127.0.0.1:9/token", accounts=())
    daemon = build_daemon(str(config))
    daemon.start()
    scheduler = daemon.scheduler
    try:
        woken = len(wakeups)
        far = datetime.now(UTC) + timedelta(seconds=_TICK_SECONDS + 60)
        scheduler.add_job_after_tick(lambda: None, "date", run_date=far, id="asleep")
        # a rotation's next run an hour away: added without waking the scheduler
        daemon._schedule("later", datetime.now(UTC) + timedelta(hours=1))
        assert len(wakeups) == woken, "the scheduler was woken"
        assert scheduler.get_job("asleep") is not None
        assert scheduler.get_job("later") is not None
        # one due before the tick wakes it, and it runs what is due
        daemon._schedule("gone", datetime.now(UTC))
        assert len(wakeups) == woken + 1
        wait_for(lambda: scheduler.get_job("gone") is None, timeout=10, what="the due job")
        assert scheduler.get_job("later") is not None
    finally:
        daemon.stop("test")


def test_a_daemon_loads_only_the_modules_its_configuration_needs(tmp_path: Path) -> None:
    """Start-up time is mostly imports: the stores, providers, alert channels and the
    spool's cipher a configuration does not use are not imported (file stores and an
    OAuth2 client here, no alert channels, no refresh token to spool yet)."""
    import subprocess
    import sys

    config = write_config(tmp_path, "http://127.0.0.1:9/token")
    unused = [
        "boto3",
        "hvac",
        "cryptography",
        "smtplib",
        "urllib.request",
        "rotator.providers.faxplus",
        "rotator.providers.bifit",
        "rotator.providers.faxmax.provider",
    ]
    code = (
        "import sys\n"
        "from rotator.service.app import build_daemon\n"
        f"build_daemon({str(config)!r})\n"
        f"print('loaded:', *(m for m in {unused!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["loaded:"]


def _many_accounts(tmp: Path, names: list[str], *, changed: str = "", extra: str = "") -> Path:
    """A one-worker daemon with ``names`` (refresh-token accounts never seeded: no
    vendor is called); ``changed`` gets a jitter of its own."""
    lines = [
        f"server: {{workers: 1, shutdown_grace: 5s, spool_dir: {tmp / 'spool'}}}",
        "stores:",
        f"  files: {{type: file, directory: {tmp / 'out'}}}",
        "defaults:",
        "  provider: oauth2",
        "  token_url: http://127.0.0.1:9/token",
        "  client_secret: env:UNUSED_SECRET",
        "accounts:",
    ]
    for name in names:
        jitter = ", jitter: 0.2" if name == changed else ""
        lines.append(
            f"  {name}: {{client_id: {name}, sinks: [{{store: files, path: {name}}}]{jitter}}}"
        )
    path = tmp / "rotator.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def _events(output: str) -> list[dict[str, object]]:
    events = []
    for line in output.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


#: enough accounts that one worker is at its first looks for a second or more
MANY = 20_000


def _started(daemon: DaemonProcess) -> None:
    """Back as soon as the start is logged (the shared wait backs off to seconds)."""
    deadline = time.monotonic() + 60
    while '"event": "started"' not in daemon.output():
        assert time.monotonic() < deadline, "the daemon did not start"
        time.sleep(0.01)


def test_a_reload_while_the_start_builds_its_accounts_changes_only_what_changed(
    tmp_path: Path,
) -> None:
    """The start builds each account at its first run (rotation/accounts.py): a SIGHUP
    right after the start, while the first runs build the accounts, must see the whole
    configuration, report as changed only the account whose settings changed, and the
    first runs after it look at the reloaded accounts. (On a quiet machine the looks
    may all be done before the reload lands; tests/service/test_app.py holds a reload
    over a half-built mapping without a race.)"""
    names = [f"acct-{i:05d}" for i in range(MANY)]
    # the reloaded file is written first, so the SIGHUP follows the start at once
    reloaded_text = _many_accounts(
        tmp_path, [*names[:1], *names[2:], "late"], changed=names[2]
    ).read_text()
    config = _many_accounts(tmp_path, names)
    with DaemonProcess(config, env={"UNUSED_SECRET": "x"}) as daemon:
        _started(daemon)
        config.write_text(reloaded_text)
        daemon.signal(signal.SIGHUP)
        daemon.wait_log('"event": "reloaded"', timeout=60)
        daemon.wait_log('"event": "overdue accounts spread"', timeout=120)
        assert daemon.stop() == 0
        events = _events(daemon.output())
    [reloaded] = [e for e in events if e["event"] == "reloaded"]
    assert reloaded["added"] == ["late"]
    assert reloaded["removed"] == [names[1]]
    assert reloaded["changed"] == [names[2]]
    assert reloaded["accounts"] == MANY
    [started] = [e for e in events if e["event"] == "started"]
    assert started["accounts"] == MANY
    [spread] = [e for e in events if e["event"] == "overdue accounts spread"]
    # every account the start named was looked at once, the removed one at most
    assert spread["count"] in (MANY - 1, MANY)
    assert not [e for e in events if "crashed" in str(e["event"])]
    assert events[-1]["event"] == "stopped"


def test_a_stop_while_the_start_builds_its_accounts_is_clean(tmp_path: Path) -> None:
    config = _many_accounts(tmp_path, [f"acct-{i:05d}" for i in range(MANY)])
    with DaemonProcess(config, env={"UNUSED_SECRET": "x"}) as daemon:
        _started(daemon)
        assert daemon.stop(timeout=20) == 0
        events = _events(daemon.output())
    kinds = [e["event"] for e in events]
    assert not [e for e in events if "crashed" in str(e["event"])]
    assert kinds[-1] == "stopped" and events[-1]["clean"] is True
