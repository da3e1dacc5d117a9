"""What a replica does with the accounts it takes over from another.

Its gained share goes through the start's plan: spread, most urgent first.

The survivor is a real ``rotator run``; the replica it outlives is a bare
member in a process of its own (it joins the group on a real ``redis-server``,
heartbeats and owns its share, and rotates nothing, so its accounts stay
untouched until it dies). Its accounts are made overdue, with expiries in the
reverse order of their names, and it is killed with SIGKILL: no goodbye, the
heartbeat just stops. After the membership timeout the survivor gains them and
must call the vendor for them as its start would: one after the other at the
host's rate, the nearest expiry first, not all at once in name order (a
trigger per account, the way a gained share used to be run).

And replicas lease every grant: the replica that lost an account may still be
rotating it when the new owner first looks, and only a lease in the state tells
the new owner to wait (a client-credentials grant takes none in one process).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.http import HttpClients
from rotator.rotation.accounts import build_accounts
from rotator.rotation.rotator import Outcome, Rotator
from rotator.secrets import Secret
from rotator.state import AccountState
from tests.fakes.oauth2 import emulator
from tests.support.proc import DaemonProcess, env_for, wait_for
from tests.support.rig import CLIENT_ID, SECRET, Rig
from tests.support.servers import RedisServer

#: seconds between two calls to the vendor host: the plan's gap and the gate's rate
GAP = 2.0
MEMBERSHIP_TIMEOUT = 2.0
WATCH_INTERVAL = 0.25

#: the member that dies: joins, reports its share once it took one in a group of two, idles
VICTIM = """
import json, sys, time
from rotator.config.models import CoordinationSettings
from rotator.service.coordination import Replica

settings = CoordinationSettings.model_validate(json.loads(sys.argv[1]))
names = json.loads(sys.argv[2])
replica = Replica(settings, accounts=lambda: names, on_change=lambda change: None)
told = False
while True:
    replica.step()
    if len(replica.members) == 2 and replica.owned and not told:  # its share taken
        print("owned:", json.dumps(sorted(replica.owned)), flush=True)
        told = True
    time.sleep(0.1)
"""


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def seed(rig: Rig, names: list[str], *, overdue: dict[str, datetime]) -> dict[str, str]:
    """Every account a valid grant and token; those in ``overdue`` due since a minute,
    expiring at the given time, the others due in an hour. Returns refresh token -> account."""
    now = datetime.now(UTC)
    due_late, due_later = timedelta(minutes=-1), timedelta(hours=1)
    tokens = {}
    with rig.opened() as (config, stores):
        accounts = build_accounts(config, stores)
        for name in names:
            account = accounts[name]
            refresh = rig.server.issue_grant(CLIENT_ID)
            tokens[refresh] = name
            expires = overdue.get(name, now + timedelta(hours=2))
            state = AccountState(
                account=name,
                provider="oauth2",
                refresh_token=Secret(refresh),
                access_token=Secret(f"seeded-access-{name}"),
                expires_at=expires,
                next_refresh_at=now + (due_late if name in overdue else due_later),
            )
            record = account.state_store.read(account.state_path)
            account.state_store.write(
                account.state_path,
                state.to_record(),
                expected_version=record.version if record else None,
            )
    return tokens


def share(daemon: DaemonProcess) -> tuple[int, int]:
    """(members, owned) from the daemon's last "share of the accounts" line."""
    found = (0, 0)
    for line in daemon.output().splitlines():
        if '"share of the accounts"' in line:
            event = json.loads(line)
            found = (event["members"], event["owned"])
    return found


def test_a_dead_replicas_overdue_accounts_are_spread_most_urgent_first(
    tmp_path: Path, redis: RedisServer
) -> None:
    names = [f"t{i:02d}" for i in range(12)]
    settings = {
        "url": redis.url,
        "group": "takeover",
        "membership_timeout": f"{MEMBERSHIP_TIMEOUT:g}s",
        "watch_interval": f"{WATCH_INTERVAL:g}s",
    }
    coordination = "coordination: " + json.dumps(settings)
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=3600, reuse_grace=0) as server:
        rig = Rig(tmp_path, server, accounts=tuple(names), server_extra=coordination)
        # one vendor host for every account, one call per GAP seconds
        rig.defaults = {**rig.defaults, "rate_limit": f"{{per_second: {1 / GAP:g}, burst: 1}}"}
        rig.write()
        seed(rig, names, overdue={})
        victim = subprocess.Popen(
            [sys.executable, "-c", VICTIM, json.dumps(settings), json.dumps(names)],
            stdout=subprocess.PIPE,
            env=env_for(),
            text=True,
        )
        try:
            with DaemonProcess(rig.config_path, env=rig.env) as survivor:
                assert victim.stdout is not None
                line = ""
                while not line.startswith("owned: "):  # its own log lines come first
                    line = victim.stdout.readline()
                    assert line, "the victim exited"
                theirs = json.loads(line.removeprefix("owned: "))
                wait_for(lambda: share(survivor) == (2, len(names) - len(theirs)), timeout=30)
                assert 2 <= len(theirs) <= len(names) - 2, theirs  # a real split of 12
                # the victim's accounts overdue; the later the name, the nearer its expiry
                now = datetime.now(UTC)
                expiries = {
                    name: now + timedelta(minutes=30 - i) for i, name in enumerate(sorted(theirs))
                }
                tokens = seed(rig, theirs, overdue=expiries)
                assert server.calls == [], "a vendor call before the takeover"
                victim.kill()  # SIGKILL: no goodbye to the group
                victim.wait(timeout=10)
                wait_for(
                    lambda: len(server.calls) >= len(theirs),
                    timeout=MEMBERSHIP_TIMEOUT + 10 + GAP * len(theirs),
                    what="the dead replica's accounts rotated by the survivor",
                )
                assert share(survivor) == (1, len(names))
                spread = '"overdue accounts spread"' in survivor.output()
                calls = server.calls[: len(theirs)]
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait(timeout=10)
    called = [tokens.get(token, "?") for _, token in calls]
    assert called == sorted(theirs, key=expiries.__getitem__), "not the nearest expiry first"
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(calls)]
    # spread at the host's rate (a little early is the gate's tolerance)
    assert min(gaps) >= GAP * 0.8, gaps
    assert server.reuse_detected == 0
    assert spread, "the gained share was not planned as the start plans"


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
def test_an_account_still_rotating_at_its_old_owner_is_busy_for_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grant: str
) -> None:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=3600, reuse_grace=0) as server:
        rig = Rig(tmp_path, server, accounts=("a0",), account_extra=(f"grant: {grant}",))
        if grant == "refresh_token":
            rig.seed_all()
        with rig.opened() as (config, stores):
            accounts = build_accounts(config, stores)
            http = HttpClients(max_connections=2)
            old, new = (
                Rotator(accounts=accounts, http=http, owner=owner, lease_every_grant=True)
                for owner in ("replica-old", "replica-new")
            )
            account = accounts["a0"]
            vendor = account.provider.refresh
            looked: list[Outcome] = []

            def new_owner_looks_meanwhile(*args: object, **kwargs: object) -> object:
                looked.append(new.rotate("a0").result)  # while the old owner is at the vendor
                return vendor(*args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(account.provider, "refresh", new_owner_looks_meanwhile)
            try:
                assert old.rotate("a0").result == Outcome.SUCCESS
                assert looked == [Outcome.BUSY]
                monkeypatch.setattr(account.provider, "refresh", vendor)
                assert new.rotate("a0").result == Outcome.NOT_DUE  # its next look: done
            finally:
                http.close()
        assert server.token_calls == 1
        assert server.reuse_detected == 0
