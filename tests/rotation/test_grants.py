"""A rotated state never puts a spent refresh token back over a newer grant.

Regression tests for what the lease proof's shared spool exposed: the decision
to write a rotated state on top of a conflicting one, or to replay a spooled
one, follows the refresh token chain (which token the new state replaced), not
clocks. Real file store, real spool; the tokens are plain strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.backends.base import Version
from rotator.config import load_config
from rotator.http import HttpClients
from rotator.rotation.accounts import Account, build_accounts
from rotator.rotation.grants import Pending, superseded
from rotator.rotation.rotator import Outcome, Rotator
from rotator.secrets import Secret
from rotator.service.app import open_spool, open_stores
from rotator.state import AccountState
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.rig import CLIENT_ID, SECRET, Rig

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def token(name: str) -> Secret:
    return Secret(leakcheck.register(f"{name}-lineage-token-value", "refresh token"))


R0, R1, R2 = token("refresh-r0"), token("refresh-r1"), token("refresh-r2")
A1, A2 = token("access-a1"), token("access-a2")


def state(refresh: Secret, access: Secret | None, issued: datetime | None) -> AccountState:
    return AccountState(
        account="acct",
        provider="oauth2",
        refresh_token=refresh,
        access_token=access,
        issued_at=issued,
        expires_at=issued + timedelta(hours=1) if issued else None,
        next_refresh_at=issued + timedelta(minutes=40) if issued else None,
    )


S0 = state(R0, None, None)
S1 = state(R1, A1, T0)
S2 = state(R2, A2, T0 + timedelta(minutes=40))


def test_superseded_follows_the_refresh_token_chain_not_the_clock() -> None:
    assert not superseded(S0, S1, spent=R0)  # still the spent token: write ours
    assert superseded(S1, S1, spent=R0)  # ours landed
    assert superseded(S2, S1, spent=R0)  # moved on from ours
    # a newer grant with an *older* clock (another host's clock lags): still newer
    assert superseded(replace(S2, issued_at=T0 - timedelta(hours=1)), S1, spent=R0)
    # someone holds a lease on the spent token: ours still goes on top
    leased = replace(S0, lease_owner="other", lease_until=T0 + timedelta(minutes=2))
    assert not superseded(leased, S1, spent=R0)
    # a vendor that does not rotate refresh tokens: the later issue wins
    same = replace(S1, refresh_token=R0)
    assert superseded(replace(S2, refresh_token=R0), same, spent=R0)
    assert not superseded(replace(S0, issued_at=T0 - timedelta(hours=1)), same, spent=R0)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Rotator, Account, OAuth2Emulator]]:
    with emulator(clients={CLIENT_ID: SECRET}) as server:
        rig = Rig(tmp_path, server, accounts=("acct",))
        config = load_config(str(rig.config_path))
        rotator = Rotator(
            accounts=build_accounts(config, open_stores(config)),
            http=HttpClients(),
            spool=open_spool(config),
        )
        try:
            yield rotator, rotator.accounts["acct"], server
        finally:
            rotator.http.close()


def _stored(account: Account) -> AccountState:
    record = account.state_store.read(account.state_path)
    assert record is not None
    return AccountState.from_record("acct", record.data)


def _put(account: AccountState, target: Account) -> Version:
    record = target.state_store.read(target.state_path)
    return target.state_store.write(
        target.state_path, account.to_record(), expected_version=record.version if record else None
    ).version


def test_a_conflicting_write_does_not_overwrite_a_newer_grant(
    setup: tuple[Rotator, Account, OAuth2Emulator],
) -> None:
    rotator, account, _ = setup
    stale = _put(S0, account)  # the version our lease was taken on
    _put(S2, account)  # meanwhile: ours landed, and another worker rotated from it
    rotator.grants.land(account, Pending(S1, R0), stale)
    assert _stored(account).refresh_token == R2


def test_a_conflicting_write_goes_on_top_of_the_spent_token(
    setup: tuple[Rotator, Account, OAuth2Emulator],
) -> None:
    rotator, account, _ = setup
    stale = _put(S0, account)
    # our lease expired; another worker leased the same (spent) token
    _put(replace(S0, lease_owner="other", lease_until=T0), account)
    rotator.grants.land(account, Pending(S1, R0), stale)
    assert _stored(account).refresh_token == R1


def test_a_stale_spool_entry_is_dropped_and_a_live_one_replayed(
    setup: tuple[Rotator, Account, OAuth2Emulator],
) -> None:
    rotator, account, _ = setup
    assert rotator.spool is not None
    _put(S2, account)
    rotator.grants.keep(
        account, Pending(S1, R0), None
    )  # left by a process that died after landing it
    assert rotator.replay_spool() == 1
    assert _stored(account).refresh_token == R2
    assert rotator.spool.get(account.spool_key) is None
    _put(S0, account)
    rotator.grants.keep(
        account, Pending(S1, R0), None
    )  # left by a process that died before the write
    result = rotator.rotate("acct")
    assert result.result == Outcome.SUCCESS
    assert _stored(account).refresh_token == R1
    assert rotator.spool.get(account.spool_key) is None


def test_landing_a_grant_leaves_a_newer_spool_entry_of_another_process(
    setup: tuple[Rotator, Account, OAuth2Emulator],
) -> None:
    rotator, account, _ = setup
    assert rotator.spool is not None
    rotator.grants.keep(
        account, Pending(S2, R1), None
    )  # another process, sharing the spool, is further on
    rotator.grants.forget(account, Pending(S1, None))  # we landed S1 a moment ago
    entry = rotator.spool.get(account.spool_key)
    assert entry is not None and entry.record["refresh_token"] == R2.reveal()
    rotator.grants.forget(account, Pending(S2, None))
    assert rotator.spool.get(account.spool_key) is None


def test_after_the_replay_only_a_foreign_lease_sends_a_job_to_the_spool(
    setup: tuple[Rotator, Account, OAuth2Emulator],
) -> None:
    """Once the start's replay has looked, a job looks in the spool only when it may
    hold a grant: left by the replay, spooled here, or rotated by another process,
    whose lease the state then shows (here `rotator refresh`, which spooled its grant
    and could not write the state, then exited)."""
    rotator, account, _ = setup
    assert rotator.spool is not None
    assert rotator.grants.may_be_spooled(account, S0)  # before the replay: always
    assert rotator.replay_spool() == 0
    assert not rotator.grants.may_be_spooled(account, S0)
    # another process leased the spent token, rotated, spooled, and could not save
    cli = Rotator(
        accounts=rotator.accounts,
        http=rotator.http,
        spool=rotator.spool,
        owner="cli",
    )
    _put(replace(S0, lease_owner="cli", lease_until=T0 + timedelta(minutes=2)), account)
    cli.grants.keep(account, Pending(S1, R0), None)
    leased = _stored(account)
    assert rotator.grants.may_be_spooled(account, leased)
    assert rotator.rotate("acct").result == Outcome.SUCCESS  # lands the spooled grant
    assert _stored(account).refresh_token == R1
    assert rotator.spool.get(account.spool_key) is None
    # what this process spools it looks for until it lands
    rotator.grants.keep(account, Pending(S2, R1), None)
    assert rotator.grants.may_be_spooled(account, S1)
    rotator.grants.forget(account, Pending(S2, None))
    assert not rotator.grants.may_be_spooled(account, S1)
