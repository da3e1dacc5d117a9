"""One state read per account per start, against a real OpenBao (issue 20).

The start's look hands what it read to the account's first run
(``StartPlan.look``, ``Account.hand_off``). The class of defect: a belief
handed on goes stale (another process writes the state between the look and the
run) and the run overwrites that state, or spends a refresh token twice. Each
way a stale belief can reach a run is tested with a real second "process" (its
own rotator and store objects) writing in between, against the strict emulator
(a refresh token spent twice revokes the grant):

- a state the look read, handed to a run that follows at once, which has
  become due (the run's clock is later): the lease's compare-and-set refuses;
- an absent state handed to an overdue account's run, with a grant another
  process imported in between: no vendor call, the run adopts what is stored;
- an absent state, a client-credentials account another process rotated in
  between: one extra vendor call (documented), and the state is written on top
  by compare-and-set, never blind.

And the gain: a burst of new accounts costs one KV read and two KV writes per
account (state create, sink create), where it cost two reads and four writes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config import load_config
from rotator.politeness import Politeness
from rotator.rotation.rotator import Outcome, Rotator
from rotator.secrets import Secret
from rotator.service.app import build_rotator
from rotator.service.listing import unlisted
from rotator.service.scheduling import StartPlan
from rotator.state import AccountState
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.servers import OpenBao
from tests.support.wrappers import Counting

CLIENT_ID = "app"
CLIENT_SECRET = leakcheck.register("handoff-cl!ent-" + secrets.token_hex(6), "client secret")
TOKEN_ENV = "ROTATOR_HANDOFF_VAULT_TOKEN"


@dataclass
class Setup:
    config: Path
    server: OAuth2Emulator
    bao: OpenBao
    prefix: str

    def rotator(self) -> Rotator:
        """A rotator of its own: another process, as far as the stores can tell."""
        return build_rotator(load_config(str(self.config)))

    def kv_versions(self, path: str) -> int:
        return self.bao.kv_versions(f"{self.prefix}/{path}")


@pytest.fixture
def setup(bao: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv(TOKEN_ENV, bao.root_token)
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    secret_file.chmod(0o600)
    prefix = f"handoff-{secrets.token_hex(4)}"
    auth = f"{{method: token, token: 'env:{TOKEN_ENV}'}}"
    accounts = "\n".join(
        f"  {name}: {{grant: {grant}, sinks: [{{store: bao, path: sinks/{name}}}]}}"
        for name, grant in [("rt", "refresh_token"), ("cc", "client_credentials")]
        + [(f"new{i}", "client_credentials") for i in range(20)]
    )
    with emulator(clients={CLIENT_ID: CLIENT_SECRET}) as server:
        config = tmp_path / "rotator.yaml"
        config.write_text(
            f"""\
server: {{spool_dir: {tmp_path / "spool"}}}
stores:
  bao: {{type: vault, url: {bao.url}, prefix: {prefix}, auth: {auth}}}
defaults:
  provider: oauth2
  token_url: {server.url}
  client_id: {CLIENT_ID}
  client_secret: file:{secret_file}
  state: {{store: bao}}
accounts:
{accounts}
"""
        )
        yield Setup(config, server, bao, prefix)


class _Calls:
    def __init__(self) -> None:
        self.scheduled: list[str] = []

    def schedule(self, name: str, when: datetime, **kwargs: Any) -> None:
        self.scheduled.append(name)


def _plan(rotator: Rotator, names: list[str], job: Any, calls: _Calls) -> StartPlan:
    accounts = {name: rotator.accounts[name] for name in names}
    return StartPlan(accounts, Politeness(), job, calls.schedule)


def _seed(rotator: Rotator, name: str, refresh: str, *, due_in: timedelta) -> None:
    now = datetime.now(UTC)
    account = rotator.accounts[name]
    state = AccountState(
        account=name,
        provider="oauth2",
        refresh_token=Secret(refresh),
        access_token=Secret("access-" + secrets.token_hex(8)),
        issued_at=now,
        expires_at=now + timedelta(hours=2),
        next_refresh_at=now + due_in,
    )
    account.state_store.write(account.state_path, state.to_record(), expected_version=None)


def test_a_state_written_between_the_look_and_a_run_that_follows_is_not_overwritten(
    setup: Setup,
) -> None:
    """Not due at the look (the belief is handed on), due by the run's clock; another
    process rotates in between. The lease's compare-and-set on the version the look
    read refuses: no vendor call, the refresh token is spent once, nothing written."""
    other, ours = setup.rotator(), setup.rotator()
    first = setup.server.issue_grant(CLIENT_ID)
    _seed(other, "rt", first, due_in=timedelta(minutes=30))
    results = []

    def job(name: str, **kwargs: Any) -> None:
        moved = other.rotate(name, force=True)  # `rotator refresh` elsewhere
        assert moved.result is Outcome.SUCCESS
        ours.clock = lambda: datetime.now(UTC) + timedelta(hours=1)  # due for our run
        results.append(ours.rotate(name))

    calls = _Calls()
    _plan(ours, ["rt"], job, calls).first_run("rt")
    assert calls.scheduled == []  # not overdue: the run followed the look at once
    assert [r.result for r in results] == [Outcome.BUSY]
    assert setup.server.token_calls == 1  # the other's rotation only
    assert setup.server.reuse_detected == 0
    stored, version = other.accounts["rt"].read_state(fresh=True)
    assert stored.refresh_token is not None and stored.refresh_token.reveal() != first
    grant = setup.server.grant_for(stored.refresh_token.reveal())
    assert grant is not None and not grant.revoked
    assert version == setup.kv_versions("state/rt") == 3  # seed, their lease, their grant


def test_a_grant_imported_between_the_look_and_an_overdue_run_is_adopted_not_spent(
    setup: Setup,
) -> None:
    other, ours = setup.rotator(), setup.rotator()
    calls = _Calls()
    plan = _plan(ours, ["rt"], lambda name, **kw: pytest.fail("not overdue?"), calls)
    plan.first_run("rt")  # absent: overdue, its belief (absent) handed on
    assert calls.scheduled == ["rt"]
    imported = setup.server.issue_grant(CLIENT_ID)
    _seed(other, "rt", imported, due_in=timedelta(minutes=30))  # `rotator import`
    result = ours.rotate("rt")  # the planned run
    assert result.result is Outcome.ADOPTED
    assert setup.server.token_calls == 0
    stored, version = ours.accounts["rt"].read_state(fresh=True)
    assert stored.refresh_token is not None and stored.refresh_token.reveal() == imported
    assert version == 1 and setup.kv_versions("state/rt") == 1  # left exactly as imported
    grant = setup.server.grant_for(imported)
    assert grant is not None and grant.current_refresh == imported and not grant.revoked


def test_a_client_credentials_state_made_between_the_look_and_the_run_costs_one_call(
    setup: Setup,
) -> None:
    """No refresh token, nothing to spend twice: the race costs one vendor call more,
    and the run's state lands on top of the other's by compare-and-set."""
    other, ours = setup.rotator(), setup.rotator()
    calls = _Calls()
    _plan(ours, ["cc"], lambda name, **kw: None, calls).first_run("cc")
    assert calls.scheduled == ["cc"]
    assert other.rotate("cc").result is Outcome.SUCCESS
    theirs, _ = other.accounts["cc"].read_state(fresh=True)
    result = ours.rotate("cc")
    assert result.result is Outcome.SUCCESS
    assert setup.server.token_calls == 2
    stored, version = ours.accounts["cc"].read_state(fresh=True)
    assert version == 2 and setup.kv_versions("state/cc") == 2  # theirs, then ours on top
    assert stored.access_token != theirs.access_token


@pytest.mark.parametrize("may_list", [False, True], ids=["minimal policy", "with list"])
def test_a_burst_of_new_accounts_reads_each_state_once_or_not_at_all(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, may_list: bool
) -> None:
    """Per new account: the look's read (none when the policy lets the start list the
    state directory: one LIST for all), the state's create, the sink's create."""
    data = 'path "secret/data/*" { capabilities = ["create", "read", "update"] }\n'
    listing = 'path "secret/metadata/*" { capabilities = ["list"] }\n'
    setup.bao.write_policy("handoff", data + (listing if may_list else ""))
    monkeypatch.setenv(TOKEN_ENV, setup.bao.create_token(["handoff"]))
    ours = setup.rotator()
    names = [f"new{i}" for i in range(20)]
    store = ours.accounts[names[0]].state_store
    counting = Counting(store._client)  # type: ignore[attr-defined]
    store._client = counting  # type: ignore[attr-defined]
    store.auth._client = counting  # type: ignore[attr-defined]
    calls = _Calls()
    plan = _plan(ours, names, lambda name, **kw: None, calls)
    plan._unlisted = unlisted(plan._accounts)  # what start() does before the looks
    for name in names:
        plan.first_run(name)
    assert sorted(calls.scheduled) == sorted(names)
    for name in calls.scheduled:  # the planned runs
        assert ours.rotate(name).result is Outcome.SUCCESS
    kv = [c for c in counting.calls if c in KV_CALLS]
    assert kv.count("read_data") == (0 if may_list else len(names))
    assert kv.count("list_keys") == 1
    assert kv.count("write_data") == 2 * len(names)
    assert "write_metadata" not in kv
    assert setup.server.token_calls == len(names)


KV_CALLS = ("read_data", "write_data", "write_metadata", "list_keys")


def test_a_grant_imported_after_the_listing_is_adopted_not_spent(setup: Setup) -> None:
    """The listing is a belief as old as the start: a state made after it is caught
    by the run's create-only write, as an absent state handed on is."""
    other, ours = setup.rotator(), setup.rotator()
    _seed(other, "new0", "not-a-grant-" + secrets.token_hex(4), due_in=timedelta(minutes=30))
    calls = _Calls()
    plan = _plan(ours, [n for n in ours.accounts if n != "cc"], lambda n, **kw: None, calls)
    plan._unlisted = unlisted(plan._accounts)
    assert "rt" in plan._unlisted and "new0" not in plan._unlisted
    imported = setup.server.issue_grant(CLIENT_ID)
    _seed(other, "rt", imported, due_in=timedelta(minutes=30))  # after the listing
    assert plan.look(ours.accounts["rt"]) is not None  # absent by the listing: overdue
    assert ours.rotate("rt").result is Outcome.ADOPTED
    assert setup.server.token_calls == 0
    stored, version = ours.accounts["rt"].read_state(fresh=True)
    assert stored.refresh_token is not None and stored.refresh_token.reveal() == imported
    assert version == 1
