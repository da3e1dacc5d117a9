"""Proof: failures are retried or stopped as they deserve, and never cost the grant.

- transient (a timeout, 5xx, 429 with ``Retry-After``): retried with capped
  exponential backoff; ``Retry-After`` is a floor;
- permanent (``invalid_client``, another 4xx, a dead grant): not retried, marked
  failed in the state and in ``rotator status``; a SIGHUP reload or a manual
  ``rotator refresh`` resumes;
- a vendor outage leaves the last valid token in the sinks, and the state says
  when it runs out;
- a sink that fails (a real fault: a directory under a regular file, a stopped
  OpenBao) blocks neither the other sinks nor the state write.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support.proc import DaemonProcess, run_rotator, wait_for
from tests.support.rig import CLIENT_ID, SECRET, Rig, report
from tests.support.servers import OpenBao

FAST = {
    "refresh_share": "0.5",
    "jitter": "0.1",
    "retry_initial": "1s",
    "retry_max": "2s",
    "timeout": "1s",
    "lease_ttl": "10s",
}


def events(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    out = []
    for line in daemon.output().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def moment(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))


def status(rig: Rig) -> dict[str, Any]:
    proc = run_rotator(["status", "-c", str(rig.config_path), "--json"], env=rig.env)
    row: dict[str, Any] = json.loads(proc.stdout)["accounts"][0]
    return row


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    # A lost answer (the timeout case) is the in-flight window: the vendor's grace
    # period covers it (see tests/proofs/test_crash.py).
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=4.0, reuse_grace=10.0) as srv:
        yield srv


@pytest.mark.slow
def test_transient_failures_retry_with_backoff(tmp_path: Path, server: OAuth2Emulator) -> None:
    server.access_ttl = 30.0  # no expiry deadline pulls the retries in
    rig = Rig(tmp_path, server, accounts=("flaky",), defaults=FAST)
    rig.seed_all()
    server.answer_delay = 2.5  # the vendor rotates, but answers after our 1 s timeout
    with DaemonProcess(rig.config_path) as daemon:
        daemon.wait_log('"error": "timeout')
        server.answer_delay = 0.0
        # then 5xx twice, then 429 with Retry-After: 3, then the vendor is back
        server.fail_next(2, 503, {"error": "temporarily_unavailable"})
        server.fail_next(1, 429, {"error": "slow_down"}, headers={"Retry-After": "3"})
        daemon.wait_log('"event": "rotated"', timeout=40)
        assert daemon.stop() == 0
        failed = events(daemon, "rotation failed")
        rotated = events(daemon, "rotated")
    assert [f["outcome"] for f in failed] == ["transient_error"] * 4
    assert [f["consecutive_failures"] for f in failed] == [1, 2, 3, 4]
    assert "did not answer within 1s" in failed[0]["error"]
    assert "503" in failed[1]["error"] and "429" in failed[3]["error"]
    # capped exponential backoff with jitter: 1 s, 2 s, then capped at retry_max (2 s);
    # each wait is between half and all of it, plus the call itself
    gaps = [(moment(b) - moment(a)).total_seconds() for a, b in itertools.pairwise(failed)]
    assert 0.5 <= gaps[0] < 1.9
    assert 1.0 <= gaps[1] < 2.9
    assert 1.0 <= gaps[2] < 2.9
    # Retry-After: 3 beats the 2 s cap
    assert (moment(rotated[0]) - moment(failed[3])).total_seconds() >= 3.0
    rig.assert_grants_alive()
    assert server.reuse_detected == 0
    # the timed-out call had rotated at the vendor: its grace period covered the retry
    assert server.grace_reuses == 1
    report(f"\ntransient: 4 failures retried, backoff gaps {[round(g, 1) for g in gaps]} s")


@pytest.mark.slow
def test_permanent_failures_stop_until_reload_or_manual_refresh(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    rig = Rig(tmp_path, server, accounts=("acct",), defaults=FAST)
    rig.seed_all()
    config = str(rig.config_path)

    def marked_failed() -> None:
        row = status(rig)
        assert row["failed"] is True and row["last_error"]
        assert "FAILED" in run_rotator(["status", "-c", config]).stdout

    with DaemonProcess(rig.config_path) as daemon:
        daemon.wait_log('"event": "rotated"')

        def fails_permanently(count: int) -> None:
            daemon.wait_log('"outcome": "permanent_error"', count=count)
            calls = server.token_calls
            marked_failed()
            # a transient failure would be retried within retry_max (2 s); this is not
            time.sleep(3.0)
            assert server.token_calls == calls

        # invalid_client: a reload (the operator fixed the secret) resumes
        server.fail_next(1, 401, {"error": "invalid_client", "error_description": "bad secret"})
        fails_permanently(1)
        daemon.signal(signal.SIGHUP)
        daemon.wait_log('"event": "rotated"', count=2)
        assert status(rig)["failed"] is False

        # a dead grant (revoked at the vendor): seed a new one, then refresh by hand
        state = rig.states()["acct"]
        assert state.refresh_token is not None
        dead = server.grant_for(state.refresh_token.reveal())
        assert dead is not None
        dead.revoked = True
        fails_permanently(2)
        assert "rotator import acct" in events(daemon, "rotation failed")[-1]["fix"]
        fresh = server.issue_grant(CLIENT_ID)
        assert run_rotator(["import", "-c", config, "acct"], stdin=fresh).returncode == 0
        assert run_rotator(["refresh", "-c", config, "acct"]).returncode == 0
        assert status(rig)["failed"] is False

        # another 4xx, met by a manual refresh: marked failed; the next one resumes
        server.fail_next(1, 400, {"error": "invalid_scope"})
        refused = run_rotator(["refresh", "-c", config, "acct"])
        assert refused.returncode == 1 and "invalid_scope" in refused.stderr
        marked_failed()
        assert run_rotator(["refresh", "-c", config, "acct"]).returncode == 0
        assert status(rig)["failed"] is False
        assert daemon.stop() == 0
    rig.assert_grants_alive()
    assert server.reuse_detected == 0


@pytest.mark.slow
def test_vendor_outage_keeps_the_last_token_and_says_when_it_runs_out(
    tmp_path: Path, server: OAuth2Emulator
) -> None:
    server.access_ttl = 8.0
    rig = Rig(tmp_path, server, accounts=("out",), defaults=FAST)
    rig.seed_all()
    with DaemonProcess(rig.config_path) as daemon:
        daemon.wait_log('"event": "rotated"')
        server.fail_next(10_000, 503, {"error": "temporarily_unavailable"})
        last = rig.sink_token("out")
        expires_at = rig.states()["out"].expires_at
        assert last is not None and expires_at is not None
        daemon.wait_log('"event": "rotation failed"', count=2)
        # the sink keeps the last valid token; the state says when it runs out
        assert rig.sink_token("out") == last and server.access_valid(last)
        row = status(rig)
        assert row["consecutive_failures"] >= 2 and "503" in row["last_error"]
        assert row["access_token_expires_at"] == expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        failure = events(daemon, "rotation failed")[-1]
        assert failure["token_expires_at"] == row["access_token_expires_at"]
        with server.lock:
            server.failures.clear()  # the vendor is back
        wait_for(lambda: rig.sink_token("out") != last, 20, what="a new token after the outage")
        assert daemon.stop() == 0
    assert status(rig)["consecutive_failures"] == 0
    rig.assert_grants_alive()


@pytest.fixture(params=["directory under a file", "stopped OpenBao"])
def broken_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    if request.param == "directory under a file":
        blocker = tmp_path / "blocker"
        blocker.write_text("a regular file where the sink's directory should be\n")
        yield f"broken: {{type: file, directory: {blocker / 'out'}}}", {}
        return
    with OpenBao() as bao:
        token = bao.root_token
        url = bao.url
    # stopped by now: connection refused on every call
    yield (
        f"broken: {{type: vault, url: {url}, timeout: 2s, "
        "auth: {method: token, token: 'env:BROKEN_BAO_TOKEN'}}",
        {"BROKEN_BAO_TOKEN": token},
    )


@pytest.mark.slow
def test_a_failing_sink_blocks_neither_the_others_nor_the_state(
    tmp_path: Path, server: OAuth2Emulator, broken_store: tuple[str, dict[str, str]]
) -> None:
    store_line, env = broken_store
    rig = Rig(
        tmp_path,
        server,
        accounts=("pub",),
        defaults=FAST,
        stores_extra=(store_line,),
        sinks_extra=("{{store: broken, path: apps/{name}}}",),
    )
    rig.seed_all()
    seen: set[str] = set()

    def three_tokens() -> bool:
        token = rig.sink_token("pub")
        if token:
            seen.add(token)
        return len(seen) >= 3

    with DaemonProcess(rig.config_path, env=env) as daemon:
        wait_for(three_tokens, 30, what="three rotations published to the good sink")
        assert daemon.stop() == 0
        failures = events(daemon, "publish failed")
    assert failures and all(f["sink"] == "broken:apps/pub" for f in failures)
    rig.assert_grants_alive()
    state = rig.states()["pub"]
    assert state.access_token is not None
    token = rig.sink_token("pub")
    assert token == state.access_token.reveal()
    proc = run_rotator(["refresh", "-c", str(rig.config_path), "pub"], env=env)
    assert proc.returncode == 1 and "failed 1" in proc.stdout
    report(
        f"\nfailing sink ({store_line.split('type: ')[1].split(',')[0]}): {len(failures)} "
        f"publish failures, {len(seen)} tokens published to the good sink"
    )
