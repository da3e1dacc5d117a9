"""Proof: a vendor never sees more than its configured rate, even after a restart
with every account overdue, and a 429 with Retry-After quiets the whole host.

A real daemon process (``rotator run``) against the OAuth2 emulator, which
enforces a rate of its own (as a vendor does: over it, 429 + Retry-After) and
records when each token request arrived and which refresh token it spent.
Every account's state says it is overdue, with its access token expiring at a
different time (some already expired), so the start must spread them, most
urgent first, at the configured rate.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.rotation.accounts import build_accounts
from rotator.secrets import Secret
from rotator.state import AccountState
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.proc import DaemonProcess, wait_for
from tests.support.rig import CLIENT_ID, SECRET, Rig, report

#: the configured limit, and the emulator's own (one more at once: network jitter)
PER_SECOND, BURST, CONCURRENCY = 4, 2, 2
ACCOUNTS = 24
WORKERS = 4  # tests.support.rig's server.workers


def overdue_rig(tmp_path: Path, server: OAuth2Emulator) -> tuple[Rig, dict[str, str]]:
    """Accounts whose tokens expire in a shuffled order; returns the rig and
    refresh token -> account."""
    rig = Rig(tmp_path, server, accounts=tuple(f"p{i:02d}" for i in range(ACCOUNTS)))
    rig.defaults = {
        **rig.defaults,
        "rate_limit": f"{{per_second: {PER_SECOND}, burst: {BURST}, concurrency: {CONCURRENCY}}}",
    }
    rig.write()
    now = datetime.now(UTC)
    owner: dict[str, str] = {}
    with rig.opened() as (config, stores):
        for index, (name, account) in enumerate(build_accounts(config, stores).items()):
            refresh = server.issue_grant(CLIENT_ID)
            owner[refresh] = name
            # a shuffled expiry: index 7k mod 24 spreads them; the first 4 already expired
            rank = (index * 7) % ACCOUNTS
            state = AccountState(
                account=name,
                provider="oauth2",
                access_token=Secret(leakcheck.register(f"stale-access-{name}", "access token")),
                expires_at=now + timedelta(seconds=(rank - 4) * 10 + 5),
                next_refresh_at=now - timedelta(minutes=1),
                refresh_token=Secret(refresh),
            )
            account.state_store.write(account.state_path, state.to_record(), expected_version=None)
    return rig, owner


def assert_within_rate(arrivals: list[float], slack: int = 1) -> None:
    for i, j in itertools.combinations(range(len(arrivals)), 2):
        allowed = BURST + slack + PER_SECOND * (arrivals[j] - arrivals[i])
        assert j - i + 1 <= allowed, f"{j - i + 1} calls in {arrivals[j] - arrivals[i]:.3f}s"


@pytest.mark.slow
def test_a_restart_with_every_account_overdue_keeps_the_rate_most_urgent_first(
    tmp_path: Path,
) -> None:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=600.0) as server:
        server.vendor_limit(PER_SECOND, BURST + 1)
        rig, owner = overdue_rig(tmp_path, server)
        expiry = {name: s.expires_at for name, s in rig.states().items()}
        with DaemonProcess(rig.config_path) as daemon:
            wait_for(lambda: rig.rotations() == ACCOUNTS, 60, what="every overdue account")
            # the last answers' grants reach their states before the kill below
            wait_for(rig.grants_landed, 30, what="every new grant in its state")
            daemon.wait_log('"event": "overdue accounts spread"')
            out = daemon.output()
        arrivals = sorted(server.calls)
    assert '"code": "rate_limited"' not in out, "a call waited past its budget"
    assert server.over_limit == 0, "the vendor saw more than its rate"
    assert_within_rate([t for t, _ in arrivals])
    served = [owner[token] for _, token in arrivals]
    assert sorted(served) == sorted(owner.values())  # each once: no call spent twice
    ranks = sorted(expiry, key=lambda name: expiry[name])
    # nearest expiry first (the expired ones before all); jobs due at one moment race
    # for the host's gate, one per worker (the rig's 4)
    displaced = [abs(ranks.index(name) - position) for position, name in enumerate(served)]
    assert max(displaced) <= WORKERS - 1, list(zip(served, ranks, strict=True))
    rig.assert_grants_alive()
    assert server.reuse_detected == 0
    took = arrivals[-1][0] - arrivals[0][0]
    report(
        f"\npoliteness: restart with {ACCOUNTS} overdue accounts, limit {PER_SECOND}/s burst "
        f"{BURST}: served in {took:.1f}s, most urgent first (max displacement "
        f"{max(displaced)}), vendor over-limit answers 0"
    )


@pytest.mark.slow
def test_a_429_with_retry_after_quiets_the_host_for_every_account(tmp_path: Path) -> None:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=600.0) as server:
        server.vendor_limit(PER_SECOND, BURST + 1)
        rig, _ = overdue_rig(tmp_path, server)
        # the first call is told to come back in 3 s: the host, not the account, waits
        server.fail_next(1, 429, {"error": "slow_down"}, headers={"Retry-After": "3"})
        with DaemonProcess(rig.config_path) as daemon:
            wait_for(lambda: rig.rotations() == ACCOUNTS, 60, what="every overdue account")
            wait_for(rig.grants_landed, 30, what="every new grant in its state")
            out = daemon.output()
        arrivals = sorted(t for t, _ in server.calls)
    assert server.over_limit == 0
    throttled_at, rest = arrivals[0], arrivals[1:]
    # calls already sent when the 429 was answered (at most the other slot) land at
    # once; after that, nothing until the pause ends
    in_flight = [t for t in rest if t < throttled_at + 0.1]
    early = [
        round(t - throttled_at, 3) for t in rest if throttled_at + 0.1 <= t < throttled_at + 2.95
    ]
    assert len(in_flight) <= CONCURRENCY - 1 and early == [], f"calls in the pause: {early}"
    assert_within_rate(rest)
    rig.assert_grants_alive()
    assert server.reuse_detected == 0
    assert '"event": "overdue accounts spread"' in out
    report(
        f"\npoliteness: 429 Retry-After 3 on the first of {ACCOUNTS} calls: the next call "
        f"came {min(t for t in rest if t >= throttled_at + 0.1) - throttled_at:.2f}s later "
        f"({len(in_flight)} already in flight); all rotated within the rate"
    )
