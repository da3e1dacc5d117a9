"""Rule 1 and rule 2 held at their edges, in process, each by a test that fails when broken.

Real OAuth2 emulator over HTTP, real file stores, a real encrypted spool. Faults
are injected by wrapping the real state store (a write that fails, a writer that
slips in between a read and the lease) and by a full tmpfs (tests/rotation/
test_full_disk.py); no store is mocked.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator import waits
from rotator.backends.base import SecretStore
from rotator.errors import StoreUnavailable
from rotator.rotation.accounts import Account
from rotator.rotation.grants import Pending
from rotator.rotation.lease import default_owner, owner_is_dead
from rotator.rotation.rotator import Outcome, Rotator
from rotator.rotation.spool import Spool
from rotator.secrets import Secret
from rotator.state import AccountState
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.rotation.test_rotator import ACCOUNT, CLIENT_ID, SECRET, World, make_world
from tests.support.wrappers import PassThroughStore

_HOME = default_owner().rpartition("/")[0]


class Faulty(PassThroughStore):
    """The real state store, with a fault injected before chosen writes."""

    def __init__(
        self,
        inner: SecretStore,
        #: called before each write with (its number from 1, the data); may raise
        before_write: Callable[[int, Mapping[str, str]], None] = lambda n, data: None,
    ) -> None:
        super().__init__(inner)
        self.before_write = before_write
        self.writes = 0

    def on_write(self, path: str, data: Mapping[str, str]) -> None:
        self.writes += 1
        self.before_write(self.writes, data)


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=600) as idp:
        yield idp


@pytest.fixture
def world(
    tmp_path: Path, server: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setenv("ROTATION_TEST_SECRET", SECRET)
    waits.set_testing()
    built = make_world(tmp_path, server)
    try:
        yield built
    finally:
        waits.set_testing(False)
        built.rotator.http.close()


def with_faulty_state(
    world: World, before_write: Callable[[int, Mapping[str, str]], None], **changes: object
) -> tuple[Rotator, Faulty]:
    """The world's rotator with a spool and a state store that misbehaves as told."""
    account = world.account
    faulty = Faulty(account.state_store, before_write)
    spool = Spool.open(world.tmp / "spool")
    settings: dict[str, object] = {"state_write_delays": (0.5, 1, 2), **changes}
    rotator = replace(
        world.rotator,
        accounts={ACCOUNT: replace(account, state_store=faulty)},
        spool=spool,
        **settings,  # type: ignore[arg-type]
    )
    return rotator, faulty


def spooled_refresh(rotator: Rotator, account: Account) -> str | None:
    assert rotator.spool is not None
    entry = rotator.spool.get(account.spool_key)
    return entry.record.get("refresh_token") if entry is not None else None


# -- the write-ahead spool -----------------------------------------------------------------


def test_the_spool_holds_the_grant_from_the_vendor_answer_to_the_state_write(
    world: World,
) -> None:
    """Every state write of a new grant finds that grant already in the spool; a store
    that stays down leaves it there (and in memory), and the next run lands it
    without asking the vendor again."""
    world.seed()
    seen: list[tuple[str | None, str | None]] = []
    down = [True]

    def check(number: int, data: Mapping[str, str]) -> None:
        if number == 1:
            return  # the lease
        seen.append(
            (data.get("refresh_token"), spooled_refresh(rotator, rotator.accounts[ACCOUNT]))
        )
        if down[0]:
            raise StoreUnavailable("the state store is down (injected)")

    rotator, _ = with_faulty_state(world, check)
    account = rotator.accounts[ACCOUNT]
    result = rotator.rotate(ACCOUNT)
    assert result.result == Outcome.TRANSIENT
    assert len(seen) == 4  # the first write and its three retries
    assert all(written == spooled and spooled is not None for written, spooled in seen)
    new_refresh = seen[0][0]
    assert new_refresh is not None
    grant = world.server.grant_for(new_refresh)
    assert grant is not None and grant.current_refresh == new_refresh
    assert spooled_refresh(rotator, account) == new_refresh
    held = rotator.grants.pending(account, world.state())
    assert held is not None and held.state.refresh_token == Secret(new_refresh)
    assert result.next_run == world.clock.now + timedelta(seconds=2)  # the last delay

    down[0] = False
    landed = rotator.rotate(ACCOUNT)
    assert landed.result == Outcome.SUCCESS
    assert world.server.token_calls == 1  # landed, not rotated again
    assert world.state().refresh_token == Secret(new_refresh)
    assert spooled_refresh(rotator, account) is None
    assert not list(rotator.spool.directory.glob("*.reserve"))  # type: ignore[union-attr]


def test_a_stop_during_the_state_write_retries_returns_at_once(world: World) -> None:
    """The retry wait holds the account's lock; a stop (SIGTERM) must end it at once,
    keeping the grant in memory and spool."""
    waits.set_testing(False)
    world.seed()
    failing = threading.Event()

    def down(number: int, data: Mapping[str, str]) -> None:
        if number > 1:
            failing.set()
            raise StoreUnavailable("the state store is down (injected)")

    rotator, _ = with_faulty_state(world, down, state_write_delays=(30.0, 30.0))
    outcome: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcome.append(rotator.rotate(ACCOUNT).result))
    worker.start()
    assert failing.wait(10)
    time.sleep(0.1)  # into the 30 s wait
    stopped = time.monotonic()
    rotator.waiter.stop()
    worker.join(5)
    assert not worker.is_alive()
    assert time.monotonic() - stopped < 1.0
    assert outcome == [Outcome.TRANSIENT]
    account = rotator.accounts[ACCOUNT]
    held = rotator.grants.pending(account, world.state())
    assert held is not None and held.state.refresh_token is not None
    assert spooled_refresh(rotator, account) == held.state.refresh_token.reveal()


def test_the_daemon_stop_ends_the_rotator_waits(tmp_path: Path) -> None:
    from rotator.service.app import build_daemon
    from tests.support.rig import Rig

    with emulator(clients={CLIENT_ID: SECRET}) as idp:
        rig = Rig(tmp_path, idp, accounts=("a0",))
        with rig.opened():
            daemon = build_daemon(str(rig.config_path))
            assert not daemon.rotator.waiter.stopped
            daemon.stop("test")
            assert daemon.rotator.waiter.stopped
            daemon.rotator.http.close()


# -- the lease ---------------------------------------------------------------------------


def test_a_lost_lease_compare_and_set_is_busy_without_a_vendor_call(world: World) -> None:
    """Another worker writes between our read and our lease: the lease write loses its
    compare-and-set, and that answers busy; it never raises, never calls the vendor."""
    world.seed()

    def other_worker_first(number: int, data: Mapping[str, str]) -> None:
        if number == 1:
            world.seed(lease_owner="worker-b", lease_until=world.clock.now + timedelta(minutes=1))

    rotator, _ = with_faulty_state(world, other_worker_first)
    result = rotator.rotate(ACCOUNT, force=True)
    assert result.result == Outcome.BUSY
    assert result.next_run == world.clock.now + timedelta(seconds=1)
    assert world.server.token_calls == 0
    assert world.state().lease_owner == "worker-b"
    assert not list((world.tmp / "spool").glob("*.reserve"))  # the room is given back


def test_owner_is_dead_only_for_a_gone_local_pid() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not owner_is_dead(f"{_HOME}/{child.pid}:abcd1234")
    finally:
        child.kill()
        child.wait()
    assert owner_is_dead(f"{_HOME}/{child.pid}:abcd1234")
    assert not owner_is_dead(default_owner())  # ourselves
    assert not owner_is_dead(f"{_HOME}/1:abcd1234")  # init: alive
    assert not owner_is_dead(f"other-host/pid:[1]/{child.pid}:abcd1234")
    assert not owner_is_dead(f"{_HOME}/{child.pid}")  # an older owner format


@given(st.text())
def test_owner_is_dead_never_for_a_foreign_or_malformed_owner(owner: str) -> None:
    if owner.startswith(_HOME + "/"):
        return
    assert not owner_is_dead(owner)


# -- a grant that cannot be landed -----------------------------------------------------------

UNEXPECTED: list[BaseException] = [
    UnicodeEncodeError("utf-8", "AT-\ud800x", 3, 4, "surrogates not allowed"),
    ValueError("a store that chokes"),
    TypeError("a store that chokes"),
    KeyError("a store that chokes"),
    RuntimeError("a store that chokes"),
    OSError(28, "No space left on device"),
]


@pytest.mark.parametrize("error", UNEXPECTED, ids=lambda e: type(e).__name__)
def test_a_landing_that_raises_anything_sets_the_grant_aside_and_releases_the_lease(
    world: World, error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    world.seed()

    def choke(number: int, data: Mapping[str, str]) -> None:
        if number == 2:  # the new grant's write
            raise error

    rotator, _ = with_faulty_state(world, choke)
    account = rotator.accounts[ACCOUNT]
    with caplog.at_level(logging.CRITICAL):
        result = rotator.rotate(ACCOUNT)
    assert result.result == Outcome.PERMANENT
    assert world.state().lease_owner == ""  # released
    assert rotator.grants.pending(account, world.state()) is None
    spool_dir = world.tmp / "spool"
    assert not (spool_dir / f"{account.spool_key}.grant").exists()
    aside = spool_dir / f"{account.spool_key}.grant.unlandable"
    assert aside.exists() and aside.stat().st_mode & 0o777 == 0o600
    assert b"refresh" not in aside.read_bytes()  # still encrypted
    assert "set aside" in caplog.text and ACCOUNT in caplog.text


def test_replay_sets_aside_what_cannot_land_and_lands_the_others(
    tmp_path: Path, server: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reproduction: a token holding a lone surrogate makes the file store raise
    UnicodeEncodeError. The start replays the other accounts' grants, sets that one
    aside, releases the lease its dead process left, and runs."""
    monkeypatch.setenv("ROTATION_TEST_SECRET", SECRET)
    waits.set_testing()
    world = make_world(tmp_path, server)
    try:
        world.seed()
        bad = AccountState(
            account=ACCOUNT,
            provider="oauth2",
            access_token=Secret("AT-\ud800x"),
            refresh_token=Secret("RT-\ud800x"),
            issued_at=world.clock.now,
            expires_at=world.clock.now + timedelta(minutes=10),
        )
        dead = subprocess.Popen(["true"])
        dead.wait()
        world.seed(
            lease_owner=f"{_HOME}/{dead.pid}:abcd1234",
            lease_until=world.clock.now + timedelta(minutes=5),
        )
        spent = world.state().refresh_token
        spool = Spool.open(tmp_path / "spool")
        account = world.account
        spool.put(
            account.spool_key,
            ACCOUNT,
            account.state_path,
            bad.to_record(),
            spent=spent.reveal() if spent else None,
        )
        # a second account's key, written by an account this configuration lacks: kept
        spool.put("0" * 32, "gone", "state/gone", bad.to_record())
        rotator = replace(world.rotator, spool=spool)
        assert rotator.replay_spool() == 0
        assert (tmp_path / "spool" / f"{account.spool_key}.grant.unlandable").exists()
        assert (tmp_path / "spool" / f"{'0' * 32}.grant").exists()
        assert world.state().lease_owner == ""
        assert rotator.replay_spool() == 0  # the next start does not trip over it again
        result = rotator.rotate(ACCOUNT)
        assert result.result == Outcome.SUCCESS  # the spent token was not spent here
    finally:
        waits.set_testing(False)
        world.rotator.http.close()


def test_a_spool_entry_of_an_older_version_keeps_its_lineage(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    record = {"refresh_token": "r1", "spent_refresh_token": "r0", "access_token": "a1"}
    spool.put("k" * 32, "acct", "state/acct", record)
    entry = spool.get("k" * 32)
    assert entry is not None
    assert entry.spent == "r0" and "spent_refresh_token" not in entry.record
    pending = Pending.from_entry("acct", entry)
    assert pending.spent == Secret("r0")


def test_a_reservation_filled_before_a_crash_is_replayed_and_an_empty_one_dropped(
    tmp_path: Path,
) -> None:
    spool = Spool.open(tmp_path)
    filled = spool.reserve("a" * 32)
    empty = spool.reserve("b" * 32)
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_empty = empty.path.with_name(f"{'b' * 32}.{gone.pid}-0000.reserve")
    os.replace(empty.path, dead_empty)
    # a crash between the in-place write and the rename: only the reservation holds it
    blob = spool._seal("a" * 32, "acct", "state/acct", {"refresh_token": "r1"}, "r0")
    fd = os.open(filled.path, os.O_WRONLY)
    os.ftruncate(fd, len(blob))
    os.pwrite(fd, blob, 0)
    os.close(fd)
    entries = list(spool.entries())
    assert [(e.key, e.record["refresh_token"], e.spent) for e in entries] == [
        ("a" * 32, "r1", "r0")
    ]
    assert not dead_empty.exists()


def test_a_damaged_spool_record_is_set_aside_at_replay_and_in_a_job(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.seed()
    spool = Spool.open(world.tmp / "spool")
    account = world.account
    damaged = {"refresh_token": "r1", "issued_at": "not a time", "access_token": "a1"}
    rotator = replace(world.rotator, spool=spool)
    spool.put(account.spool_key, ACCOUNT, account.state_path, damaged, spent="r0")
    with caplog.at_level(logging.CRITICAL):
        assert rotator.replay_spool() == 0
    assert (world.tmp / "spool" / f"{account.spool_key}.grant.unlandable").exists()
    # the same found by a job (another process spooled it under its lease)
    spool.put(account.spool_key, ACCOUNT, account.state_path, damaged, spent="r0")
    world.seed(lease_owner="cli", lease_until=world.clock.now - timedelta(seconds=1))
    assert rotator.rotate(ACCOUNT).result == Outcome.SUCCESS
    assert not (world.tmp / "spool" / f"{account.spool_key}.grant").exists()
    assert caplog.text.count("set aside") >= 2
