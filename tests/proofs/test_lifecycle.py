"""Proof: stopping and waking up never cost a grant.

- SIGTERM while a rotation is in flight: scheduling stops, the rotation
  finishes within ``server.shutdown_grace``, its state and sinks land, exit 0.
- After a suspend (the scheduler frozen past the accounts' refresh points, as a
  laptop lid or a paused VM does), overdue accounts are refreshed once, at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rotator.rotation.rotator import Observer, RotationResult
from rotator.service.app import build_daemon
from tests.fakes.oauth2 import emulator
from tests.support.proc import DaemonProcess, wait_for
from tests.support.rig import CLIENT_ID, SECRET, Rig, report


@pytest.mark.slow
def test_sigterm_lets_the_rotation_in_flight_finish(tmp_path: Path) -> None:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=4.0) as server:
        rig = Rig(tmp_path, server, accounts=("term",))
        rig.seed_all()
        with DaemonProcess(rig.config_path) as daemon:
            daemon.wait_log('"event": "rotated"')
            before = rig.sink_token("term")
            # the call in flight issues a token that outlives the checks after the stop
            # (its due time is the first token's, 4 s: about 2 s from here)
            server.access_ttl = 300.0
            server.delay = 2.0  # the next call (due in ~2 s) is in flight for 2 s
            wait_for(lambda: server.in_flight == 1, 20, what="a vendor call in flight")
            refreshes = rig.rotations()
            stopped_at = time.monotonic()
            assert daemon.stop(timeout=10) == 0  # shutdown_grace is 5 s
            took = time.monotonic() - stopped_at
            out = daemon.output()
        assert '"reason": "SIGTERM"' in out and '"clean": true' in out
        assert rig.rotations() == refreshes + 1
        # the rotation finished: state and sinks hold its result
        rig.assert_grants_alive()
        after = rig.sink_token("term")
        assert after is not None and after != before and server.access_valid(after)
        state = rig.states()["term"]
        assert state.access_token is not None and state.access_token.reveal() == after
        assert rig.spooled() == {}
        report(f"\nSIGTERM with a rotation in flight: exit 0 after {took:.1f}s")


class _Recorder(Observer):
    def __init__(self) -> None:
        self.results: list[tuple[float, RotationResult]] = []

    def after_rotation(self, result: RotationResult) -> None:
        self.results.append((time.time(), result))


@pytest.mark.slow
def test_after_a_suspend_overdue_accounts_refresh_once_at_once(tmp_path: Path) -> None:
    """Judged against the accounts' own schedule, not a wall-clock bound: each overdue
    account is refreshed once, and before any new token is due again."""
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=6.0) as server:
        rig = Rig(tmp_path, server, accounts=("s0", "s1", "s2"))
        rig.seed_all()
        recorder = _Recorder()
        daemon = build_daemon(str(rig.config_path), observers=[recorder])
        daemon.start()
        try:
            wait_for(
                lambda: (
                    {r.account for _, r in recorder.results if r.result == "success"}
                    == {"s0", "s1", "s2"}
                ),
                20,
                what="the first rotation of each, state written",
            )
            daemon.scheduler.pause()  # suspended: nothing runs, time goes on
            planned = {name: s.next_refresh_at for name, s in rig.states().items()}
            latest = max(p for p in planned.values() if p is not None)
            wait_for(
                lambda: time.time() > latest.timestamp(),
                10,
                what="every refresh point to pass",
            )
            before = rig.rotations()
            resumed = time.time()
            daemon.scheduler.resume()
            wait_for(lambda: rig.rotations() == before + 3, 10, what="the overdue refreshes")
            # the vendor answered all three; their new states are read once each rotation
            # is done (state written), or a state read in between still shows the old point
            wait_for(
                lambda: (
                    {r.account for t, r in recorder.results if t >= resumed and r.ok}
                    == set(planned)
                ),
                10,
                what="the overdue rotations done, state written",
            )
            due_again = {name: s.next_refresh_at for name, s in rig.states().items()}
            first_due = min(d for d in due_again.values() if d is not None)
            # the schedule's own quiet moment: until the first new token is due
            wait_for(lambda: time.time() > first_due.timestamp(), 10, what="a refresh point")
        finally:
            daemon.stop()
        ran = [(t, r) for t, r in recorder.results if t >= resumed]
        per_account = {
            name: [r.result for t, r in ran if r.account == name and t < first_due.timestamp()]
            for name in planned
        }
        # once: one success each before any new token came due; at once: all of
        # them done before the earliest new refresh point
        assert all(results == ["success"] for results in per_account.values()), per_account
        refreshed_at = [t for t, r in ran if r.result == "success"][:3]
        assert len(refreshed_at) == 3 and max(refreshed_at) < first_due.timestamp()
        rig.assert_grants_alive()
        assert server.reuse_detected == 0
        report(
            f"\nsuspend: 3 overdue accounts refreshed once, "
            f"{max(refreshed_at) - resumed:.2f}s after the resume"
        )
