"""The daemon as a process: metrics, health, sd_notify and alerts wired in."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from rotator.service.monitor import _LatestFirst
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.net import free_port
from tests.support.proc import DaemonProcess, run_rotator, wait_for

SECRET = leakcheck.register("monitor-client-secret-4711", "client secret")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


class NotifySocket:
    """The datagram socket systemd would listen on; collects what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                return
            self.messages.append(dict(line.split("=", 1) for line in data.split("\n")))

    def wait(self, key: str, value: str | None = None, *, after: int = 0) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            self._drain()
            for message in self.messages[after:]:
                if key in message and (value is None or message[key] == value):
                    return message
            return None

        return wait_for(found, timeout=30, what=f"sd_notify {key}={value}")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    # the refresh token lives two days: inside the 3-day threshold from the first rotation
    with emulator(clients={"app": SECRET}, access_ttl=600.0, refresh_ttl=2 * 86400.0) as srv:
        yield srv


def write_config(tmp: Path, url: str, port: int, alert_out: Path) -> Path:
    secret_file = tmp / "client-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    script = (
        "import sys, pathlib; "
        f"p = pathlib.Path({str(alert_out)!r}); "
        "p.open('a').write(sys.stdin.read().strip() + chr(10))"
    )
    lines = [
        f"server: {{listen: 127.0.0.1:{port}, workers: 2, shutdown_grace: 5s,"
        f" spool_dir: {tmp / 'spool'}}}",
        "stores:",
        f"  files: {{type: file, directory: {tmp / 'files'}}}",
        "alerts:",
        "  channels:",
        f"    - {{type: command, argv: [{sys.executable}, -c, {json.dumps(script)}]}}",
        "accounts:",
    ]
    for name in ("alpha", "beta"):
        lines += [
            f"  {name}:",
            "    provider: oauth2",
            f"    token_url: {url}",
            "    client_id: app",
            f"    client_secret: file:{secret_file}",
            f"    sinks: [{{store: files, path: {name}.json}}]",
        ]
    path = tmp / "rotator.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def alerts_in(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_daemon_serves_metrics_health_and_notifies_systemd(
    tmp_path: Path, server: OAuth2Emulator, notify: NotifySocket
) -> None:
    port = free_port()
    alert_out = tmp_path / "alerts.jsonl"
    config = write_config(tmp_path, server.url, port, alert_out)
    # alpha holds a grant; beta was never seeded, so its grant is dead from the start
    seeded = run_rotator(["import", "-c", str(config), "alpha"], stdin=server.issue_grant("app"))
    assert seeded.returncode == 0, seeded.stderr
    base = f"http://127.0.0.1:{port}"
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}
    with DaemonProcess(config, env=env) as daemon:
        ready = notify.wait("READY", "1")
        assert ready["STATUS"].startswith("2 accounts, ")
        notify.wait("STATUS", "2 accounts, 1 failing")
        notify.wait("WATCHDOG", "1")

        assert get(f"{base}/healthz") == (200, "ok: scheduler running\n")
        assert get(f"{base}/readyz") == (200, "ok: 2 accounts, stores validated\n")

        def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            status, text = get(f"{base}/metrics")
            if status != 200:
                return None
            got = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            return got if ("rotator_account_ready", (("account", "beta"),)) in got else None

        got = wait_for(scraped, what="metrics for both accounts")
        now = time.time()
        alpha, beta = (("account", "alpha"),), (("account", "beta"),)
        assert got[("rotator_account_ready", alpha)] == 1
        assert got[("rotator_account_ready", beta)] == 0
        assert now < got[("rotator_access_token_expiry_timestamp_seconds", alpha)] < now + 700
        refresh_end = got[("rotator_refresh_token_expiry_timestamp_seconds", alpha)]
        assert now + 2 * 86400 - 120 < refresh_end < now + 2 * 86400 + 5
        rotations = (("account", "alpha"), ("result", "success"))
        assert got[("rotator_rotations_total", rotations)] >= 1
        assert got[("rotator_rotation_duration_seconds_count", ())] >= 2
        assert [k for k in got if k[0] == "rotator_build_info"]

        # the refresh-token and dead-grant alerts went out through the command channel
        sent = wait_for(
            lambda: len(alerts_in(alert_out)) >= 2 and alerts_in(alert_out),
            what="two alerts on the command channel",
        )
        by_account = {a["account"]: a for a in sent}
        assert by_account["alpha"]["kind"] == "refresh_token_expiry"
        assert str(by_account["alpha"]["summary"]).startswith(
            "refresh token of alpha expires in 2 days"
        )
        assert by_account["beta"]["kind"] == "dead"
        assert by_account["beta"]["severity"] == "critical"
        got = wait_for(scraped, what="metrics")
        assert got[("rotator_alerts_sent_total", (("channel", "command"), ("kind", "dead")))] == 1

        # SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again; nothing re-sent
        mark = len(notify.messages)
        daemon.signal(signal.SIGHUP)
        reloading = notify.wait("RELOADING", "1", after=mark)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify.wait("READY", "1", after=mark)
        daemon.wait_log('"event": "reloaded"')

        mark = len(notify.messages)
        assert daemon.stop() == 0
        notify.wait("STOPPING", "1", after=mark)
    assert len(alerts_in(alert_out)) == 2
    assert get(f"{base}/healthz")[0] == 0  # the server is gone with the process


def test_a_taken_port_stops_the_start_with_exit_code_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, "http://127.0.0.1:9/token", port, tmp_path / "a.jsonl")
        proc = run_rotator(["run", "-c", str(config)], timeout=30)
    assert proc.returncode == 1
    assert f"server.listen: cannot listen on 127.0.0.1:{port}" in proc.stderr


def seed_expiring_grants(tmp_path: Path, names: tuple[str, ...]) -> datetime:
    """States whose refresh tokens expire in 6 days 10 hours (past the 7-day alert)."""
    from rotator.backends.file import FileStore
    from rotator.config.models import FileStoreSettings
    from rotator.secrets import Secret
    from rotator.state import AccountState

    now = datetime.now(UTC).replace(microsecond=0)
    store = FileStore("files", FileStoreSettings(type="file", directory=tmp_path / "files"))
    access = leakcheck.register("sweep-access-token-0001", "access token")
    refresh = leakcheck.register("sweep-refresh-token-0001", "refresh token")
    for name in names:
        store.write(
            f"state/{name}",
            AccountState(
                account=name,
                provider="oauth2",
                access_token=Secret(access),
                issued_at=now,
                expires_at=now + timedelta(hours=1),
                refresh_token=Secret(refresh),
                refresh_expires_at=now + timedelta(days=6, hours=10),
                next_refresh_at=now + timedelta(minutes=40),
            ).to_record(),
            expected_version=None,
        )
    return now


def test_start_evaluates_every_account_and_the_first_sweep_waits_a_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each account's first job reads its state and alerts; a sweep at start would
    read every state a second time (10,000 reads in the benchmark's burst)."""
    from rotator.service.app import build_service
    from rotator.service.monitor import SWEEP_JOB

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    alert_out = tmp_path / "alerts.jsonl"
    config = write_config(tmp_path, "http://127.0.0.1:9/token", free_port(), alert_out)
    seed_expiring_grants(tmp_path, ("alpha", "beta"))
    service = build_service(str(config))
    daemon = service.daemon
    swept: list[str] = []
    sweep = service.monitor.sweep
    monkeypatch.setattr(service.monitor, "sweep", lambda: (swept.append("sweep"), sweep()))
    daemon.start()
    try:
        wait_for(lambda: len(alerts_in(alert_out)) == 2, timeout=20, what="alerts from the start")
        assert sorted((a["account"], a["kind"]) for a in alerts_in(alert_out)) == [
            ("alpha", "refresh_token_expiry"),
            ("beta", "refresh_token_expiry"),
        ]
        job = daemon.scheduler.get_job(SWEEP_JOB)
        waits = (job.next_run_time - datetime.now(UTC)).total_seconds()
        assert 14 * 60 < waits <= 15 * 60  # alerts.sweep: 15m
        assert swept == []
    finally:
        daemon.stop("test")


def test_the_sweep_alerts_for_an_account_that_is_never_refreshed(
    tmp_path: Path, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rotation runs (the daemon is not even started): the sweep alone alerts."""
    from rotator.service.app import build_service

    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    alert_out = tmp_path / "alerts.jsonl"
    config = write_config(tmp_path, "http://127.0.0.1:9/token", free_port(), alert_out)
    now = seed_expiring_grants(tmp_path, ("alpha", "beta"))
    service = build_service(str(config))
    daemon, monitor = service.daemon, service.monitor
    monitor.sweep()
    sent = alerts_in(alert_out)
    assert sorted((a["account"], a["kind"], a["repeat"]) for a in sent) == [
        ("alpha", "refresh_token_expiry", False),
        ("beta", "refresh_token_expiry", False),
    ]
    assert str(sent[0]["summary"]).split(" (")[0].endswith("expires in 6 days")
    monitor.sweep()
    assert len(alerts_in(alert_out)) == 2  # nothing new, nothing repeated yet

    # a day later: one reminder each; four days later: the 3-day threshold
    monitor.clock = lambda: now + timedelta(days=1, minutes=1)
    monitor.sweep()
    monitor.clock = lambda: now + timedelta(days=4)
    monitor.sweep()
    kinds = [(a["account"], a["repeat"], a["severity"]) for a in alerts_in(alert_out)[2:]]
    assert sorted(kinds) == [
        ("alpha", False, "warning"),
        ("alpha", True, "warning"),
        ("beta", False, "warning"),
        ("beta", True, "warning"),
    ]

    # a refused reload still answers READY=1 after RELOADING=1
    config.write_text("accounts: [not, a, mapping]\n")
    assert daemon.reload() is False
    notify.wait("RELOADING", "1")
    notify.wait("READY", "1")
    daemon.stop("test")
    notify.wait("STOPPING", "1")


class Gated:
    """Work that records each item and, while the gate is shut, waits at it."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, item: str) -> None:
        self.entered.set()
        self.gate.wait(10)
        if item == "bad":
            raise RuntimeError("this check broke")
        self.done.append(item)


def test_alert_checks_keep_the_newest_item_per_key_in_arrival_order() -> None:
    work = Gated()
    queue = _LatestFirst(work, name="test-checks", threads=1)
    queue.put("x", "x0")
    assert work.entered.wait(5)  # the one thread holds x0 at the gate
    for key, item in (("a", "a1"), ("b", "bad"), ("a", "a2"), ("c", "c1")):
        queue.put(key, item)
    work.gate.set()
    wait_for(lambda: len(work.done) == 3, timeout=5, what="the queued checks")
    # a2 replaced a1 in a's place; the failing check did not end the thread
    assert work.done == ["x0", "a2", "c1"]
    queue.put("d", "d1")
    wait_for(lambda: work.done[-1:] == ["d1"], timeout=5, what="a check after the failure")
    queue.close(timeout=5)


def test_closing_the_alert_checks_drops_what_waits() -> None:
    work = Gated()
    queue = _LatestFirst(work, name="test-checks", threads=1)
    queue.put("x", "x0")
    assert work.entered.wait(5)
    queue.put("y", "y0")
    [thread] = queue._threads
    queue.close(timeout=0)  # x0 is still at the gate: close does not wait for it
    assert thread.is_alive() and work.done == []
    work.gate.set()
    thread.join(10)
    assert not thread.is_alive()  # it finished x0 and ended: y0 was dropped
    assert work.done == ["x0"]
    queue.put("z", "z0")  # after close: refused quietly, no thread started for it
    assert queue._threads == [thread] and not queue._pending
    assert work.done == ["x0"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=40),
        min_size=1,
        max_size=8,
    )
)
def test_alert_checks_see_every_keys_newest_item_under_concurrent_producers(
    sequences: list[list[int]],
) -> None:
    """Producers on their own threads (a burst's workers) hand off at once: every key's
    newest item is worked, and a key's items are never worked older after newer."""
    worked: dict[str, list[int]] = {}
    lock = threading.Lock()

    def work(item: tuple[str, int]) -> None:
        with lock:
            worked.setdefault(item[0], []).append(item[1])

    queue = _LatestFirst(work, name="test-checks", gather=0.01)
    start = threading.Barrier(len(sequences))

    def produce(producer: int, keys: list[int]) -> None:
        start.wait()
        for seq, key in enumerate(keys):
            queue.put(f"{producer}-{key}", (f"{producer}-{key}", seq))

    threads = [threading.Thread(target=produce, args=(p, keys)) for p, keys in enumerate(sequences)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    newest = {f"{p}-{key}": seq for p, keys in enumerate(sequences) for seq, key in enumerate(keys)}
    wait_for(
        lambda: all(worked.get(k, [None])[-1] == v for k, v in newest.items()),
        timeout=10,
        what="every key's newest item",
    )
    queue.close(timeout=5)
    assert set(worked) == set(newest)
    for items in worked.values():
        assert items == sorted(set(items))  # never an older item after a newer one


def test_a_burst_of_hand_offs_wakes_the_alert_checks_a_few_times_not_per_item() -> None:
    """Each wake-up is a futex call and a thread switch in the rotation's worker: a
    burst's items collect while a woken thread gathers and works."""
    done: list[str] = []
    queue = _LatestFirst(done.append, name="test-checks", gather=0.05)
    wakes = 0
    notify = queue._cond.notify

    def counted(n: int = 1) -> None:
        nonlocal wakes
        wakes += 1
        notify(n)

    queue._cond.notify = counted  # type: ignore[method-assign]
    started = time.monotonic()

    def produce(producer: int) -> None:
        for i in range(150):
            queue.put(f"{producer}-{i}", f"{producer}-{i}")
            time.sleep(0.0002)  # a rotation's own I/O between hand-offs

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: len(done) == 16 * 150, timeout=10, what="every item")
    elapsed = time.monotonic() - started
    queue.close(timeout=5)
    # each of the two threads sleeps at most once per gathering pause
    assert wakes <= 2 * (elapsed / 0.05 + 1), (wakes, elapsed)
    assert wakes < 16 * 150 / 10


def test_alert_retries_wait_through_the_daemons_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing channel's pauses go through a Waiter on the stop event: instant under
    ``set_testing()``, ended at once by a stop."""
    import rotator.service.monitor as monitor_module
    from rotator.service.app import build_service
    from rotator.waits import Waiter, set_testing

    waited: list[float] = []

    class Recording(Waiter):
        __slots__ = ()

        def sleep(self, seconds: float) -> bool:
            waited.append(seconds)
            return super().sleep(seconds)

    monkeypatch.setattr(monitor_module, "Waiter", Recording)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    attempts = tmp_path / "attempts"
    failing = f"open({str(attempts)!r}, 'a').write('x'); raise SystemExit(1)"
    config = write_config(tmp_path, "http://127.0.0.1:9/token", free_port(), tmp_path / "a")
    text = config.read_text()
    start = text.index("    - {type: command")
    end = text.index("\n", start)
    config.write_text(
        text[:start]
        + f"    - {{type: command, argv: [{sys.executable}, -c, {json.dumps(failing)}]}}"
        + text[end:]
    )
    seed_expiring_grants(tmp_path, ("alpha", "beta"))
    service = build_service(str(config))
    set_testing(True)
    try:
        service.monitor.sweep()
    finally:
        set_testing(False)
        service.daemon.stop("test")
    assert attempts.read_text() == "x" * 6  # three attempts for each account's alert
    assert waited == [1.0, 2.0, 1.0, 2.0]  # the backoff, through the waiter
    # once the daemon stops, a pause ends at once (and every later one is refused)
    waiter = Recording(service.daemon.stopping)
    assert waiter.sleep(3600) is False


def test_idle_and_slow_clients_cannot_fail_the_daemons_liveness_probe(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    """400 idle connections once held 406 threads; 34 under a task limit failed /healthz."""
    port = free_port()
    config = write_config(tmp_path, server.url, port, tmp_path / "alerts.jsonl")
    base = f"http://127.0.0.1:{port}"
    with DaemonProcess(config) as daemon:
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, what="the health server")
        tasks = Path(f"/proc/{daemon.pid}/task")
        threads_before = len(list(tasks.iterdir()))
        clients = []
        try:
            for n in range(120):  # well over the server's cap of 32
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if n % 2:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
                clients.append(sock)
            for _ in range(5):
                assert get(f"{base}/healthz") == (200, "ok: scheduler running\n")
            # the answering pool (4) may have grown; nothing per connection
            assert len(list(tasks.iterdir())) <= threads_before + 4
        finally:
            for sock in clients:
                sock.close()
        assert daemon.stop() == 0
