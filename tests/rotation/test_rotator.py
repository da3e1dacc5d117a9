"""One rotation, in process (rotator/rotation.py): real emulator over HTTP, real file stores."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.backends.base import Record, SecretStore, WriteResult
from rotator.backends.file import FileStore
from rotator.config import Config, parse_config
from rotator.errors import LeaseHeld
from rotator.http import HttpClients
from rotator.politeness import Politeness
from rotator.rotation.accounts import Account, build_accounts
from rotator.rotation.rotator import Outcome, RotationResult, Rotator
from rotator.secrets import Secret
from rotator.state import AccountState
from rotator.tokens import TokenSet
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.wrappers import PassThroughStore

CLIENT_ID = "svc"
SECRET = leakcheck.register("rotation-secret-4b5c6d7e", "client secret")
ACCOUNT = "idp"


class Clock:
    """An injected clock: real time at the start, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Recording(PassThroughStore):
    """A real store that notes the order of writes (to prove state-before-sinks)."""

    def __init__(self, inner: FileStore, log: list[str]) -> None:
        super().__init__(inner)
        self.log = log
        self.reads: list[str] = []

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        self.reads.append(path)
        return super().read(path, fmt=fmt)

    def wrote(self, path: str, data: Mapping[str, str], result: WriteResult | None) -> None:
        done = "conflict" if result is None else "written" if result.changed else "unchanged"
        self.log.append(f"{self.name}:{path}:{done}")


@dataclass
class World:
    tmp: Path
    server: OAuth2Emulator
    config: Config
    rotator: Rotator
    clock: Clock
    writes: list[str]

    @property
    def account(self) -> Account:
        return self.rotator.accounts[ACCOUNT]

    def state(self) -> AccountState:
        return self.rotator.read_state(self.account)[0]

    def seed(self, **fields: Any) -> str:
        refresh = self.server.issue_grant(CLIENT_ID)
        state = AccountState(
            account=ACCOUNT, provider="oauth2", refresh_token=Secret(refresh), **fields
        )
        current = self.account.state_store.read(self.account.state_path)
        self.account.state_store.write(
            self.account.state_path,
            state.to_record(),
            expected_version=current.version if current else None,
        )
        return refresh

    def sink_json(self) -> dict[str, str]:
        loaded: dict[str, str] = json.loads((self.tmp / "out" / "idp.json").read_text())
        return loaded


def make_world(tmp: Path, server: OAuth2Emulator, *, broken_sink: bool = False) -> World:
    blocker = tmp / "blocker"
    blocker.write_text("a regular file where a directory should be\n")
    sinks = [
        {"store": "out", "path": "idp.json"},
        {"store": "out", "path": "idp.token", "format": "token"},
    ]
    if broken_sink:
        sinks.insert(0, {"store": "broken", "path": "idp.json"})
    raw = {
        "stores": {
            "files": {"type": "file", "directory": str(tmp / "state")},
            "out": {"type": "file", "directory": str(tmp / "out")},
            "broken": {"type": "file", "directory": str(blocker / "sub")},
        },
        "defaults": {"state": {"store": "files"}},
        "accounts": {
            ACCOUNT: {
                "provider": "oauth2",
                "token_url": server.url,
                "client_id": CLIENT_ID,
                "client_secret": "env:ROTATION_TEST_SECRET",
                "jitter": 0,
                "refresh_share": 0.5,
                "retry_initial": "2s",
                "retry_max": "1m",
                "sinks": sinks,
            }
        },
    }
    config = parse_config(json.dumps(raw))
    writes: list[str] = []
    stores: dict[str, SecretStore] = {
        name: Recording(FileStore(name, settings), writes)
        for name, settings in config.stores.items()
    }
    clock = Clock()
    rotator = Rotator(
        accounts=build_accounts(config, stores),
        # the hosts' gate on the test's clock: a vendor's pause passes when the test says
        http=HttpClients(
            max_connections=2, politeness=Politeness(clock=lambda: clock().timestamp())
        ),
        owner="worker-a",
        clock=clock,
        rand=lambda: 0.0,
        state_write_delays=(0.01,),
    )
    return World(tmp, server, config, rotator, clock, writes)


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=600) as idp:
        yield idp


@pytest.fixture
def world(
    tmp_path: Path, server: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setenv("ROTATION_TEST_SECRET", SECRET)
    built = make_world(tmp_path, server)
    try:
        yield built
    finally:
        built.rotator.http.close()


def test_one_rotation_writes_state_first_then_publishes(world: World) -> None:
    seeded = world.seed()
    seen: list[RotationResult] = []

    class Watcher:
        def after_rotation(self, result: RotationResult) -> None:
            seen.append(result)

    world.rotator.observers.append(Watcher())
    world.writes.clear()  # the seed
    result = world.rotator.rotate(ACCOUNT)

    assert result.result == Outcome.SUCCESS
    assert (result.sinks_written, result.sinks_unchanged, result.sinks_failed) == (2, 0, 0)
    assert seen == [result]
    assert world.server.token_calls == 1
    # Lease, then the new state, and only then the sinks.
    assert world.writes == [
        "files:state/idp:written",
        "files:state/idp:written",
        "out:idp.json:written",
        "out:idp.token:written",
    ]
    state = world.state()
    assert state.refresh_token is not None
    assert state.refresh_token.reveal() != seeded
    assert world.server.grant_for(state.refresh_token.reveal()) is not None
    assert state.lease_owner == ""
    assert state.consecutive_failures == 0
    assert state.last_success_at == world.clock.now
    assert state.expires_at == world.clock.now + timedelta(seconds=600)
    assert state.next_refresh_at == world.clock.now + timedelta(seconds=300)
    assert result.next_run == state.next_refresh_at
    # The consumer view (DESIGN.md): json fields and the bare token file.
    assert state.access_token is not None
    access = state.access_token.reveal()
    assert world.server.access_valid(access)
    assert world.sink_json() == {
        "access_token": access,
        "token_type": "Bearer",
        "expires_at": state.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "account": ACCOUNT,
        "provider": "oauth2",
    }
    assert (world.tmp / "out" / "idp.token").read_text() == access + "\n"


def test_not_due_does_not_call_the_vendor_and_keeps_sinks_in_step(world: World) -> None:
    world.seed()
    first = world.rotator.rotate(ACCOUNT)
    assert first.result == Outcome.SUCCESS
    world.clock.advance(timedelta(seconds=60))
    again = world.rotator.rotate(ACCOUNT)
    assert again.result == Outcome.NOT_DUE
    assert world.server.token_calls == 1
    assert (again.sinks_written, again.sinks_unchanged) == (0, 2)
    # A consumer's file that went missing is put back without a refresh.
    (world.tmp / "out" / "idp.token").unlink()
    restored = world.rotator.rotate(ACCOUNT)
    assert restored.result == Outcome.NOT_DUE
    assert restored.sinks_written == 1
    assert world.server.token_calls == 1
    # Once due, it refreshes.
    world.clock.advance(timedelta(seconds=300))
    assert world.rotator.rotate(ACCOUNT).result == Outcome.SUCCESS
    assert world.server.token_calls == 2


def test_sinks_are_written_without_a_read_against_the_last_publish(world: World) -> None:
    """A first token's sinks are created and later ones written against the version
    this process left them at, with no read first; a sink changed behind its back
    costs one lost compare-and-set and a read, then gets the view back."""
    world.seed()
    out = world.account.sinks[0][0]
    assert isinstance(out, Recording)
    assert world.rotator.rotate(ACCOUNT).result == Outcome.SUCCESS
    world.clock.advance(timedelta(seconds=300))
    assert world.rotator.rotate(ACCOUNT).result == Outcome.SUCCESS
    assert out.reads == []
    (world.tmp / "out" / "idp.json").write_text('{"access_token": "put there by hand"}\n')
    world.writes.clear()
    again = world.rotator.rotate(ACCOUNT)
    assert again.result == Outcome.NOT_DUE
    assert (again.sinks_written, again.sinks_unchanged) == (1, 1)
    assert out.reads == ["idp.json"]
    assert world.writes == [
        "out:idp.json:conflict",
        "out:idp.json:written",
        "out:idp.token:unchanged",
    ]
    state = world.state()
    assert state.access_token is not None
    assert world.sink_json()["access_token"] == state.access_token.reveal()


def test_invalid_grant_with_unchanged_state_fails_with_a_fix(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.seed()
    world.server.fail_next(
        1, 400, {"error": "invalid_grant", "error_description": "Token is not active"}
    )
    with caplog.at_level(logging.ERROR):
        result = world.rotator.rotate(ACCOUNT)
    assert result.result == Outcome.PERMANENT
    assert result.error is not None
    state = world.state()
    assert state.failed
    assert state.last_error_code == "invalid_grant"
    assert "Token is not active" in state.last_error
    assert state.lease_owner == ""
    assert f"rotator authorize {ACCOUNT}" in caplog.text
    assert f"rotator import {ACCOUNT}" in caplog.text
    assert not (world.tmp / "out" / "idp.json").exists()  # nothing published

    # Failed accounts wait for a human: the next job does not call the vendor.
    calls = world.server.token_calls
    waiting = world.rotator.rotate(ACCOUNT)
    assert waiting.result == Outcome.FAILED
    assert world.server.token_calls == calls
    # A reload (retry_failed) or `rotator refresh` (force) tries again.
    retried = world.rotator.rotate(ACCOUNT, retry_failed=True)
    assert retried.result == Outcome.SUCCESS
    assert not world.state().failed
    world.server.fail_next(1, 400, {"error": "invalid_grant"})
    assert world.rotator.rotate(ACCOUNT, force=True).result == Outcome.PERMANENT
    assert world.rotator.rotate(ACCOUNT, force=True).result == Outcome.SUCCESS


def test_invalid_grant_after_another_worker_rotated_adopts(world: World) -> None:
    world.seed()
    # Worker B sees worker A's lease as expired (its clock is past it) and rotates
    # while A is on its way to the vendor with the refresh token B just spent.
    other = Rotator(
        accounts=world.rotator.accounts,
        http=world.rotator.http,
        owner="worker-b",
        clock=lambda: world.clock.now + timedelta(minutes=5),
        rand=lambda: 0.0,
    )
    account = world.account
    real = account.provider
    other_results: list[RotationResult] = []

    class Interleaved:
        name = real.name
        settings_model = real.settings_model
        needs_seed = True

        def refresh(self, state: AccountState, client: Any, now: datetime) -> TokenSet:
            other_results.append(other.rotate(ACCOUNT, force=True))
            return real.refresh(state, client, now)

        def consumer_view(self, tokens: TokenSet) -> dict[str, str]:
            return real.consumer_view(tokens)

    world.rotator.accounts = {ACCOUNT: replace(account, provider=Interleaved())}  # type: ignore[arg-type]
    result = world.rotator.rotate(ACCOUNT)

    assert [r.result for r in other_results] == [Outcome.SUCCESS]
    assert result.result == Outcome.ADOPTED
    state = world.state()
    assert not state.failed
    assert state.consecutive_failures == 0
    b_state = other_results[0].state
    assert b_state is not None and b_state.access_token is not None
    assert state.refresh_token == b_state.refresh_token
    assert world.sink_json()["access_token"] == b_state.access_token.reveal()
    # The strict vendor saw the spent token come back (what the lease prevents).
    assert world.server.reuse_detected == 1


def test_transient_error_counts_and_plans_a_retry(world: World) -> None:
    seeded = world.seed()
    world.server.fail_next(1, 503, "<html>maintenance</html>", content_type="text/html")
    result = world.rotator.rotate(ACCOUNT)
    assert result.result == Outcome.TRANSIENT
    state = world.state()
    assert state.consecutive_failures == 1
    assert state.last_error_code == "http_503"
    assert not state.failed
    assert state.lease_owner == ""
    assert state.refresh_token == Secret(seeded)  # the grant was not spent
    # rand 0: half of retry_initial (2s).
    assert result.next_run == world.clock.now + timedelta(seconds=1)
    assert state.next_refresh_at == result.next_run

    world.server.fail_next(1, 429, {"error": "slow_down"}, headers={"Retry-After": "30"})
    world.clock.advance(timedelta(seconds=1))
    second = world.rotator.rotate(ACCOUNT)
    assert second.result == Outcome.TRANSIENT
    assert world.state().consecutive_failures == 2
    assert second.next_run == world.clock.now + timedelta(seconds=30)  # Retry-After floor

    world.clock.advance(timedelta(seconds=30))
    assert world.rotator.rotate(ACCOUNT).result == Outcome.SUCCESS
    assert world.state().consecutive_failures == 0
    assert world.state().last_error == ""


def test_lease_held_by_another_worker_is_busy_without_a_vendor_call(world: World) -> None:
    until = world.clock.now + timedelta(seconds=90)
    world.seed(lease_owner="worker-b", lease_until=until)
    result = world.rotator.rotate(ACCOUNT, force=True)
    assert result.result == Outcome.BUSY
    assert isinstance(result.error, LeaseHeld)
    assert result.next_run == until + timedelta(seconds=1)
    assert world.server.token_calls == 0
    assert world.state().lease_owner == "worker-b"  # untouched
    # Once the lease has run out, it is ours to take.
    world.clock.advance(timedelta(seconds=91))
    assert world.rotator.rotate(ACCOUNT).result == Outcome.SUCCESS
    assert world.server.token_calls == 1


def test_broken_sink_blocks_neither_the_others_nor_the_state(
    tmp_path: Path, server: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATION_TEST_SECRET", SECRET)
    world = make_world(tmp_path, server, broken_sink=True)
    try:
        seeded = world.seed()
        result = world.rotator.rotate(ACCOUNT)
        assert result.result == Outcome.SUCCESS
        assert (result.sinks_written, result.sinks_failed) == (2, 1)
        state = world.state()
        assert state.refresh_token is not None and state.refresh_token != Secret(seeded)
        assert state.access_token is not None
        assert world.sink_json()["access_token"] == state.access_token.reveal()
        # Come back soon for the sink that missed it, well before the refresh point.
        assert result.next_run is not None
        assert result.next_run <= world.clock.now + timedelta(seconds=2)
        assert state.next_refresh_at is not None and result.next_run < state.next_refresh_at
        # The retry does not refresh again: it only publishes.
        retry = world.rotator.rotate(ACCOUNT)
        assert retry.result == Outcome.NOT_DUE
        assert server.token_calls == 1
    finally:
        world.rotator.http.close()


class Overlapping(PassThroughStore):
    """A slow state read that counts its readers: two runs of one account that are
    not excluded would both be inside it at once."""

    def __init__(self, inner: SecretStore) -> None:
        super().__init__(inner)
        self.inside = 0
        self.most = 0
        self._count = threading.Lock()

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        with self._count:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            time.sleep(0.05)  # long enough for the other thread to arrive
            return super().read(path, fmt=fmt)
        finally:
            with self._count:
                self.inside -= 1


@pytest.mark.parametrize("runs", [2, 6])
def test_runs_of_one_account_exclude_each_other_and_leave_no_lock(world: World, runs: int) -> None:
    """The per-account lock lives only while runs hold it (rotator/locks.py): runs
    of one account still go one at a time, one vendor call among them, and no
    lock is left behind once they are done."""
    world.seed()
    slow = Overlapping(world.account.state_store)
    world.rotator.accounts[ACCOUNT] = replace(world.account, state_store=slow)
    barrier = threading.Barrier(runs)
    results: list[RotationResult] = []

    def run() -> None:
        barrier.wait()
        results.append(world.rotator.rotate(ACCOUNT))

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert slow.most == 1
    assert sorted(r.result for r in results) == sorted(
        [Outcome.SUCCESS] + [Outcome.NOT_DUE] * (runs - 1)
    )
    assert world.server.token_calls == 1
    assert len(world.rotator._locks) == 0
