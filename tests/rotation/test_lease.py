"""The lease rule (rotator/rotation/lease.py): a lease write only where a refresh token
can be spent twice.

Real emulator over HTTP, real file stores wrapped to count the state writes. For
every kind of grant and every outcome of the vendor call, the number of state
writes is one (the landing or the failure record) plus one lease write exactly
when the state holds a refresh token; and a lease another worker holds is
respected by both kinds, with no vendor call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.backends.base import SecretStore, WriteResult
from rotator.backends.file import FileStore
from rotator.config import parse_config
from rotator.http import HttpClients
from rotator.rotation.accounts import build_accounts
from rotator.rotation.rotator import Outcome, Rotator
from rotator.secrets import Secret
from rotator.state import AccountState
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.wrappers import PassThroughStore

CLIENT_ID = "svc"
SECRET = leakcheck.register("lease-rule-secret-9f8e7d6c", "client secret")
ACCOUNT = "acct"


class StateWrites(PassThroughStore):
    """The real state store, noting each write's expected version (None: a create)."""

    def __init__(self, inner: FileStore) -> None:
        super().__init__(inner)
        self.writes: list[dict[str, str]] = []

    def wrote(self, path: str, data: Mapping[str, str], result: WriteResult | None) -> None:
        if result is not None:
            self.writes.append(dict(data))


@dataclass
class World:
    server: OAuth2Emulator
    rotator: Rotator
    state_store: StateWrites

    def state(self) -> AccountState:
        return self.rotator.read_state(self.rotator.accounts[ACCOUNT])[0]

    def seed(self, state: AccountState) -> None:
        account = self.rotator.accounts[ACCOUNT]
        current = account.state_store.read(account.state_path)
        account.state_store.write(
            account.state_path,
            state.to_record(),
            expected_version=current.version if current else None,
        )
        self.state_store.writes.clear()


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    with emulator(clients={CLIENT_ID: SECRET}, access_ttl=600) as idp:
        yield idp


def _world(tmp: Path, server: OAuth2Emulator, grant: str) -> World:
    raw = {
        "stores": {
            "files": {"type": "file", "directory": str(tmp / "state")},
            "out": {"type": "file", "directory": str(tmp / "out")},
        },
        "defaults": {"state": {"store": "files"}},
        "accounts": {
            ACCOUNT: {
                "provider": "oauth2",
                "grant": grant,
                "token_url": server.url,
                "client_id": CLIENT_ID,
                "client_secret": "env:LEASE_RULE_SECRET",
                "retry_initial": "2s",
                "sinks": [{"store": "out", "path": "acct.json"}],
            }
        },
    }
    config = parse_config(json.dumps(raw))
    state_store = StateWrites(FileStore("files", config.stores["files"]))
    stores: dict[str, SecretStore] = {
        "files": state_store,
        "out": FileStore("out", config.stores["out"]),
    }
    rotator = Rotator(
        accounts=build_accounts(config, stores),
        http=HttpClients(max_connections=2),
        owner="worker-a",
        rand=lambda: 0.0,
        state_write_delays=(0.01,),
    )
    return World(server, rotator, state_store)


#: (grant, holds a refresh token): the two sides of the rule
KINDS = [("client_credentials", False), ("refresh_token", True)]


#: a refresh_token grant always starts from a seeded grant; client credentials may not
CASES = [
    (grant, holds, answer)
    for grant, holds in KINDS
    for answer in ("success", "transient", "no state yet")
    if not (holds and answer == "no state yet")
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_a_lease_is_written_only_for_a_grant_with_a_refresh_token(
    tmp_path: Path,
    server: OAuth2Emulator,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, bool, str],
) -> None:
    grant, holds_refresh, answer = case
    monkeypatch.setenv("LEASE_RULE_SECRET", SECRET)
    world = _world(tmp_path, server, grant)
    try:
        if answer != "no state yet":
            refresh = Secret(server.issue_grant(CLIENT_ID)) if holds_refresh else None
            world.seed(AccountState(account=ACCOUNT, provider="oauth2", refresh_token=refresh))
        if answer == "transient":
            server.fail_next(1, 503, {"error": "temporarily_unavailable"})
        result = world.rotator.rotate(ACCOUNT, force=True)
        assert server.token_calls == 1
        expected = Outcome.TRANSIENT if answer == "transient" else Outcome.SUCCESS
        assert result.result == expected
        writes = world.state_store.writes
        leases = [w for w in writes if w.get("lease_owner")]
        assert len(leases) == (1 if holds_refresh else 0), writes
        assert len(writes) == len(leases) + 1  # the landing or the failure record
        state = world.state()
        assert state.lease_owner == "" and state.lease_until is None
        assert state.last_attempt_at is not None  # recorded by the one write too
        if answer == "transient":
            assert state.consecutive_failures == 1
        else:
            assert state.access_token is not None
    finally:
        world.rotator.http.close()


@pytest.mark.parametrize(("grant", "holds_refresh"), KINDS)
def test_a_lease_held_by_another_worker_is_respected_by_every_grant(
    tmp_path: Path,
    server: OAuth2Emulator,
    monkeypatch: pytest.MonkeyPatch,
    grant: str,
    holds_refresh: bool,
) -> None:
    monkeypatch.setenv("LEASE_RULE_SECRET", SECRET)
    world = _world(tmp_path, server, grant)
    try:
        refresh = Secret(server.issue_grant(CLIENT_ID)) if holds_refresh else None
        until = datetime.now(UTC) + timedelta(minutes=1)
        world.seed(
            AccountState(
                account=ACCOUNT,
                provider="oauth2",
                refresh_token=refresh,
                lease_owner="worker-b",
                lease_until=until,
            )
        )
        result = world.rotator.rotate(ACCOUNT, force=True)
        assert result.result == Outcome.BUSY
        assert server.token_calls == 0
        assert world.state_store.writes == []
        assert world.state().lease_owner == "worker-b"
    finally:
        world.rotator.http.close()


def test_a_state_that_moved_on_meanwhile_is_not_put_back(
    tmp_path: Path, server: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a lease, two processes may both ask for an access token: the second
    landing compares the version it read, sees the other's write, and the store ends
    with a whole state (one of the two tokens, both valid), never a mix."""
    monkeypatch.setenv("LEASE_RULE_SECRET", SECRET)
    world = _world(tmp_path, server, "client_credentials")
    try:
        world.seed(AccountState(account=ACCOUNT, provider="oauth2"))
        account = world.rotator.accounts[ACCOUNT]
        real_refresh = account.provider.refresh

        def other_process_lands_first(*args: object, **kwargs: object) -> object:
            tokens = real_refresh(*args, **kwargs)  # type: ignore[arg-type]
            other = Rotator(
                accounts={ACCOUNT: account},
                http=world.rotator.http,
                owner="process-b",
                state_write_delays=(0.01,),
            )
            monkeypatch.setattr(account.provider, "refresh", real_refresh)
            assert other.rotate(ACCOUNT, force=True).result == Outcome.SUCCESS
            return tokens

        monkeypatch.setattr(account.provider, "refresh", other_process_lands_first)
        result = world.rotator.rotate(ACCOUNT, force=True)
        assert result.result == Outcome.SUCCESS
        assert server.token_calls == 2
        state = world.state()
        assert state.access_token is not None and state.lease_owner == ""
        sink = json.loads((tmp_path / "out" / "acct.json").read_text())
        assert sink["access_token"] == state.access_token.reveal()
    finally:
        world.rotator.http.close()
