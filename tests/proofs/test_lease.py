"""Proof: one refresher per account, whatever runs at the same time.

Two ``rotator run`` daemons on one configuration and a loop of ``rotator
refresh`` processes all work the same accounts, against the emulator in its
strictest mode: presenting a spent refresh token revokes the whole grant, with
no grace period at all (``reuse_grace=0``). Through at least 200 rotations, the
vendor must never see a refresh token twice, every grant must be alive at the
end, and the state must hold each grant's current refresh token. Run with the
state in files (``flock`` + version) and in OpenBao (KV v2 ``cas``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.oauth2 import emulator
from tests.support.proc import DaemonProcess, run_rotator, wait_for
from tests.support.rig import CLIENT_ID, SECRET, Rig, report
from tests.support.servers import OpenBao

ROTATIONS = 200


@pytest.mark.slow
def test_two_daemons_and_manual_refreshes_never_spend_a_refresh_token_twice(
    tmp_path: Path, state_bao: OpenBao | None
) -> None:
    started = time.monotonic()
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=1.0, reuse_grace=0) as server:
        rig = Rig(tmp_path, server, accounts=tuple(f"a{i}" for i in range(6)), bao=state_bao)
        rig.seed_all()
        stop = threading.Event()
        manual: Counter[str] = Counter()

        def refresh_loop() -> None:
            turn = 0
            while not stop.is_set():
                name = rig.accounts[turn % len(rig.accounts)]
                turn += 1
                proc = run_rotator(["refresh", "-c", str(rig.config_path), name], env=rig.env)
                text = proc.stdout + proc.stderr
                if "rotated" in text:
                    manual["rotated"] += 1
                elif "another worker had just rotated" in text:
                    manual["adopted"] += 1
                elif "holds the lease" in text:
                    manual["busy"] += 1
                else:
                    manual[f"exit {proc.returncode}: {text.strip()[-300:]}"] += 1

        with (
            DaemonProcess(rig.config_path, env=rig.env) as first,
            DaemonProcess(rig.config_path, env=rig.env) as second,
        ):
            loop = threading.Thread(target=refresh_loop, name="refresh-loop")
            loop.start()
            try:
                wait_for(
                    lambda: rig.rotations() >= ROTATIONS or server.reuse_detected,
                    timeout=150,
                    interval=0.1,
                    what=f"{ROTATIONS} rotations",
                )
            finally:
                stop.set()
                loop.join(timeout=60)
            assert first.stop() == 0 and second.stop() == 0
            by_daemon = [d.output().count('"event": "rotated"') for d in (first, second)]
        rotations = rig.rotations()
        report(
            f"\nlease proof ({rig.state_kind} state): {rotations} rotations "
            f"({server.token_calls} token calls), daemons rotated {by_daemon}, "
            f"manual refresh {dict(manual)}, reuse detected {server.reuse_detected}, "
            f"{time.monotonic() - started:.1f}s"
        )
        assert server.reuse_detected == 0
        assert rotations >= ROTATIONS
        assert all(by_daemon), "both daemons must have taken part"
        assert manual["rotated"] > 0, "the manual refreshes must have taken part"
        assert not [k for k in manual if k.startswith("exit")], manual
        rig.assert_grants_alive()
        # Alive means usable: one more refresh per account succeeds. Its token lives a
        # minute: a 1 s one could expire between the refresh and the check on a loaded
        # machine (a run at load average 25 failed so, with every grant alive).
        server.access_ttl = 60.0
        for name in rig.accounts:
            proc = run_rotator(["refresh", "-c", str(rig.config_path), name], env=rig.env)
            assert proc.returncode == 0, proc.stderr
            token = rig.sink_token(name)
            assert token is not None and server.access_valid(token)
        assert server.reuse_detected == 0
