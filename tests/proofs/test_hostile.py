"""Proof: hostile or broken peers cannot hang the daemon, flood it or widen its files.

- a vendor answer over 256 KiB is refused and nothing is written;
- every HTTP call ends within its timeout, also against a vendor that trickles
  its answer a byte at a time, and a store that accepts and never answers;
- ``tls_verify: false`` is logged as a warning at start;
- files and directories the daemon creates are 0600/0700 whatever the umask;
  a ``file:`` secret readable by other users draws a warning;
- SIGHUP with a hostile configuration (``timeout: .inf``, huge numbers, deep
  nesting, an alias bomb, binary garbage, a vanished file, a directory) is
  refused with its reason, and the daemon keeps rotating on the running one.

(Property tests over token responses and configuration files live in
tests/test_tokens.py, tests/config/test_loading.py and tests/config/test_hostile.py.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.tokens import MAX_RESPONSE_BYTES
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.proc import DaemonProcess, run_rotator, wait_for
from tests.support.rig import CLIENT_ID, SECRET, Rig

FAST = {"timeout": "1s", "lease_ttl": "10s", "retry_initial": "1s", "retry_max": "2s"}


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=30.0) as srv:
        yield srv


def test_an_oversized_answer_is_refused_and_nothing_is_written(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    rig = Rig(tmp_path, server, accounts=("big",), defaults=FAST)
    rig.seed_all()
    huge = leakcheck.register("access-huge-" + "x" * 32, "access token")
    body = {"access_token": huge, "token_type": "bearer", "expires_in": 60}
    body["padding"] = "y" * (MAX_RESPONSE_BYTES + 1)
    server.fail_next(1, 200, body)
    before = rig.states()["big"]
    proc = run_rotator(["refresh", "-c", str(rig.config_path), "big"])
    assert proc.returncode == 1
    assert f"more than {MAX_RESPONSE_BYTES} bytes" in proc.stderr
    after = rig.states()["big"]
    assert after.refresh_token == before.refresh_token and after.access_token is None
    assert rig.sink_token("big") is None
    assert not (rig.out / "big.token").exists()


class _Trickler:
    """An HTTP server that answers 200 with a token response one byte at a time."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/oauth/token"
        self.stop = threading.Event()
        self.answers_completed = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # the listening socket is gone
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        body = json.dumps({"access_token": "t" * 64, "token_type": "bearer"}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        try:
            conn.recv(65536)
            conn.sendall(head.encode() + b"\r\n\r\n")
            for byte in body:
                if self.stop.wait(self.interval):
                    return
                conn.sendall(bytes([byte]))
            self.answers_completed += 1
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(5)
        self.sock.close()


def test_a_vendor_trickling_its_answer_cannot_outlast_the_timeout(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    trickler = _Trickler(interval=0.3)  # each read gets a byte well within 1 s
    try:
        rig = Rig(tmp_path, server, accounts=("slow",), defaults=FAST, token_url=trickler.url)
        rig.seed_all()
        proc = run_rotator(["refresh", "-c", str(rig.config_path), "slow"], timeout=60)
        # the answer takes ~30 s to trickle out (a byte per 0.3 s): the command gave
        # up on it (the call's 1 s deadline) before a single answer was complete
        completed = trickler.answers_completed
    finally:
        trickler.close()
    assert proc.returncode == 1
    assert "did not answer within 1s" in proc.stderr
    assert completed == 0
    assert rig.sink_token("slow") is None


class _BlackHole:
    """Accepts TCP connections and never answers (a hung store)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


def test_a_store_that_never_answers_times_out_and_blocks_nothing(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    hole = _BlackHole()
    try:
        rig = Rig(
            tmp_path,
            server,
            accounts=("hung",),
            defaults=FAST,
            stores_extra=(
                f"hole: {{type: vault, url: {hole.url}, timeout: 1s, "
                "auth: {method: token, token: 'env:HOLE_TOKEN'}}",
            ),
            sinks_extra=("{{store: hole, path: apps/{name}}}",),
        )
        rig.seed_all()
        proc = run_rotator(
            ["refresh", "-c", str(rig.config_path), "hung"],
            env={"HOLE_TOKEN": leakcheck.register("hole-token-123456", "vault token")},
            timeout=60,  # a store call without its 1 s timeout would hang past this
        )
    finally:
        hole.close()
    assert proc.returncode == 1 and "failed 1" in proc.stdout
    token = rig.sink_token("hung")
    assert token is not None and server.access_valid(token)
    rig.assert_grants_alive()


def test_tls_verify_off_is_a_warning_at_start(tmp_path: Path, server: OAuth2Emulator) -> None:
    rig = Rig(tmp_path, server, accounts=("insecure", "fine"))
    rig.account_extra = ()
    text = rig.write().read_text()
    marker = "  insecure:\n    provider: oauth2\n"
    rig.config_path.write_text(text.replace(marker, marker + "    tls_verify: false\n"))
    rig.seed_all()
    with DaemonProcess(rig.config_path) as daemon:
        daemon.wait_log("TLS verification is off for this account")
        assert daemon.stop() == 0
        warnings = [
            json.loads(line)
            for line in daemon.output().splitlines()
            if "TLS verification is off" in line
        ]
    assert [w["account"] for w in warnings] == ["insecure"]
    assert warnings[0]["level"] == "warning" and "ca_bundle" in warnings[0]["fix"]


def test_created_files_are_private_whatever_the_umask(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    rig = Rig(tmp_path, server, accounts=("p0", "p1"))
    rig.seed_all()
    (tmp_path / "client-secret").chmod(0o644)  # readable by others: warned about
    old = os.umask(0)  # the daemon inherits the loosest umask
    try:
        daemon = DaemonProcess(rig.config_path)
    finally:
        os.umask(old)
    with daemon:
        wait_for(lambda: rig.sink_token("p0") and rig.sink_token("p1"), 20, what="both sinks")
        assert daemon.stop() == 0
        out = daemon.output()
    assert "secret file readable by other users" in out and "chmod 600" in out
    created = 0
    for top in (rig.out, tmp_path / "spool"):
        for path in [top, *top.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
            created += 1
    for path in (tmp_path / "state").rglob("*"):  # the state store's files
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path}: {oct(mode)}"
    assert created >= 5


HOSTILE_CONFIGS: dict[str, bytes | None] = {
    # None: the file vanished; b"<dir>": a directory where the file was
    "infinite timeout": b"accounts:\n  x:\n    provider: oauth2\n    timeout: .inf\n",
    "huge number": b"server: {workers: 1" + b"0" * 5000 + b"}\n",
    "huge duration": b"server: {shutdown_grace: 99999999999999999999999999d}\n",
    "deep nesting": b"server: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
    "alias bomb": b"".join(
        f"l{n}: &l{n} [{', '.join([f'*l{n - 1}' if n else '[lol]'] * 9)}]\n".encode()
        for n in range(9)
    ),
    "binary garbage": bytes(range(256)) * 64,
    "not a mapping": b"- just\n- a list\n",
    "vanished": None,
    "a directory": b"<dir>",
}


@pytest.mark.slow
def test_sighup_with_hostile_configurations_keeps_the_daemon_rotating(
    tmp_path: Path,
) -> None:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=2.0) as server:
        rig = Rig(tmp_path, server, accounts=("steady",))
        rig.seed_all()
        good = rig.config_path.read_bytes()
        with DaemonProcess(rig.config_path) as daemon:
            daemon.wait_log('"event": "rotated"')
            for n, (name, content) in enumerate(HOSTILE_CONFIGS.items(), start=1):
                if rig.config_path.is_dir():
                    rig.config_path.rmdir()
                else:
                    rig.config_path.unlink(missing_ok=True)
                if content == b"<dir>":
                    rig.config_path.mkdir()
                elif content is not None:
                    rig.config_path.write_bytes(content)
                before = rig.rotations()
                daemon.signal(signal.SIGHUP)
                daemon.wait_log("reload refused", count=n)
                assert daemon.proc.poll() is None, f"{name}: the daemon died"
                # still rotating on the running configuration
                wait_for(lambda b=before: rig.rotations() > b, 20, what=f"a rotation after {name}")
            if rig.config_path.is_dir():
                rig.config_path.rmdir()
            rig.config_path.write_bytes(good)
            daemon.signal(signal.SIGHUP)
            daemon.wait_log('"event": "reloaded"')
            assert daemon.stop() == 0
            out = daemon.output()
        refusals = [json.loads(line) for line in out.splitlines() if "reload refused" in line]
        assert len(refusals) == len(HOSTILE_CONFIGS)
        for refusal in refusals:
            assert refusal["level"] == "error" and refusal["error"]
            assert len(refusal["error"]) <= 300  # bounded, whatever the file held
        assert "Traceback" not in out
        rig.assert_grants_alive()
        assert server.reuse_detected == 0
