"""A state or spool entry written by a newer rotator is refused and left as it is.

A downgrade (or an older replica beside a newer one) meets records in a format
it does not know. Reading one by guesswork could miss a renamed refresh token
and spend an older one; rewriting it would drop what it did not understand. So
every reader refuses the account with :class:`NewerFormat` (naming both formats
and the release to upgrade to) and writes nothing: checked here for the state in
each store (the file store, a real OpenBao, moto's Secrets Manager) through
every path that reads it (a job, ``refresh``, ``import``, ``status``), and for
the spool (a newer envelope, and a current envelope holding a newer state).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.backends.base import SecretStore
from rotator.commands.rows import account_rows
from rotator.commands.seed import seed
from rotator.config import load_config
from rotator.errors import NewerFormat
from rotator.rotation.rotator import Outcome, Rotator
from rotator.secrets import Secret
from rotator.service.app import build_rotator
from rotator.state import STATE_FORMAT, AccountState
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.proc import run_rotator
from tests.support.servers import MotoServer, OpenBao

CLIENT_ID = "app"
CLIENT_SECRET = leakcheck.register("formats-cl!ent-" + secrets.token_hex(6), "client secret")
VAULT_TOKEN_ENV = "ROTATOR_FORMATS_VAULT_TOKEN"
REGION = "eu-central-1"
ACCOUNT = "idp"

# what a newer rotator might write: any fields, any format above ours, a release or not
newer_records = st.fixed_dictionaries(
    {"format": st.integers(min_value=int(STATE_FORMAT) + 1, max_value=10**8).map(str)},
    optional={
        "requires": st.one_of(
            st.from_regex(r"rotator>=[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True),
            st.text(max_size=40),
        )
    },
).flatmap(
    lambda base: st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(
            lambda key: key not in ("format", "requires")
        ),
        st.text(max_size=40),
        max_size=6,
    ).map(lambda more: {**more, **base})
)


@dataclass
class Setup:
    kind: str
    config: Path
    env: dict[str, str]
    server: OAuth2Emulator
    spool: Path

    def rotator(self) -> Rotator:
        return build_rotator(load_config(str(self.config)))

    def store(self, rotator: Rotator) -> SecretStore:
        return rotator.accounts[ACCOUNT].state_store

    @property
    def path(self) -> str:
        return f"state/{ACCOUNT}"


def _store_yaml(kind: str, tmp: Path, bao: OpenBao | None, moto: MotoServer | None) -> str:
    if kind == "file":
        return f"{{type: file, directory: {tmp / 'state'}}}"
    if kind == "vault":
        assert bao is not None
        return (
            f"{{type: vault, url: {bao.url}, prefix: formats-{secrets.token_hex(4)}, "
            f"auth: {{method: token, token: 'env:{VAULT_TOKEN_ENV}'}}}}"
        )
    assert moto is not None
    return (
        f"{{type: aws, region: {REGION}, endpoint_url: {moto.endpoint_url}, "
        f"prefix: formats-{secrets.token_hex(4)}/}}"
    )


@pytest.fixture(params=["file", "vault", "aws"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    kind = request.param
    bao: OpenBao | None = request.getfixturevalue("bao") if kind == "vault" else None
    moto: MotoServer | None = request.getfixturevalue("moto") if kind == "aws" else None
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if bao is not None:
        env[VAULT_TOKEN_ENV] = bao.root_token
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    secret_file.chmod(0o600)
    with emulator(clients={CLIENT_ID: CLIENT_SECRET}) as server:
        config = tmp_path / "rotator.yaml"
        config.write_text(
            f"""\
server: {{spool_dir: {tmp_path / "spool"}}}
stores:
  state: {_store_yaml(kind, tmp_path, bao, moto)}
  files: {{type: file, directory: {tmp_path / "tokens"}}}
defaults: {{state: {{store: state}}}}
accounts:
  {ACCOUNT}:
    provider: oauth2
    token_url: {server.url}
    client_id: {CLIENT_ID}
    client_secret: file:{secret_file}
    sinks: [{{store: files, path: idp.token, format: token}}]
"""
        )
        yield Setup(kind, config, env, server, tmp_path / "spool")


def _seeded(setup: Setup, rotator: Rotator) -> None:
    grant = setup.server.issue_grant(CLIENT_ID)
    state = AccountState(account=ACCOUNT, provider="oauth2", refresh_token=Secret(grant))
    setup.store(rotator).write(setup.path, state.to_record(), expected_version=None)


def _assert_refused(message: str, record: dict[str, str]) -> None:
    found = record["format"]
    assert f"state format {found}, written by a newer rotator" in message
    assert f"reads state formats up to {STATE_FORMAT}" in message
    assert "leaves it as it is" in message
    wanted = record.get("requires", "")
    if wanted.startswith("rotator>=") and wanted[9:].replace(".", "").isdigit():
        assert message.endswith(f"upgrade rotator to at least {wanted[9:]}")
    else:
        assert message.endswith(f"a release that reads state format {found} (see the CHANGELOG)")


@settings(
    max_examples=12,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(newer=newer_records)
def test_a_newer_state_is_refused_everywhere_and_never_rewritten(
    setup: Setup, newer: dict[str, str]
) -> None:
    rotator = setup.rotator()
    store = setup.store(rotator)
    if store.read(setup.path) is None:
        _seeded(setup, rotator)
    current = store.read(setup.path)
    assert current is not None
    # a newer rotator rewrote the record: e.g. its refresh token under another name
    # (adopt: whatever a newer release's record says of whose it is)
    store.write(setup.path, newer, expected_version=current.version, adopt=True)
    before = store.read(setup.path)
    assert before is not None
    calls = setup.server.token_calls

    # the daemon's job, forced as `rotator refresh` forces it
    for force in (False, True):
        result = rotator.rotate(ACCOUNT, force=force)
        assert result.result is Outcome.TRANSIENT
        assert isinstance(result.error, NewerFormat)
        _assert_refused(str(result.error), newer)
    # `rotator import` would keep the other fields of what it read: refused too
    with pytest.raises(NewerFormat) as refused:
        seed(load_config(str(setup.config)), ACCOUNT, "imported-token-" + secrets.token_hex(4))
    _assert_refused(str(refused.value), newer)
    # `rotator status` names it among the states it cannot read
    rows, problems = account_rows(rotator)
    assert rows == []
    [problem] = problems
    assert problem.startswith(f"{ACCOUNT}: ")
    _assert_refused(problem, newer)

    after = store.read(setup.path)
    assert after == before  # the same data at the same version: nothing was written
    assert setup.server.token_calls == calls  # and no refresh token was spent


def test_the_commands_exit_1_naming_the_release(setup: Setup) -> None:
    rotator = setup.rotator()
    _seeded(setup, rotator)
    store = setup.store(rotator)
    current = store.read(setup.path)
    assert current is not None
    newer = {"format": "7", "requires": "rotator>=3.2.1", "grant": "elsewhere"}
    store.write(setup.path, newer, expected_version=current.version, adopt=True)
    before = store.read(setup.path)

    refreshed = run_rotator(["refresh", "-c", str(setup.config), ACCOUNT], env=setup.env)
    assert refreshed.returncode == 1
    assert "state format 7, written by a newer rotator" in refreshed.stderr
    assert "upgrade rotator to at least 3.2.1" in refreshed.stderr
    status = run_rotator(["status", "-c", str(setup.config)], env=setup.env)
    assert status.returncode == 1
    assert "upgrade rotator to at least 3.2.1" in status.stdout + status.stderr
    assert store.read(setup.path) == before
    assert setup.server.token_calls == 0


# -- the spool ---------------------------------------------------------------------------


def _spool_case(setup: Setup) -> tuple[Rotator, Path]:
    rotator = setup.rotator()
    _seeded(setup, rotator)
    assert rotator.spool is not None
    return rotator, rotator.spool.entry_path(rotator.accounts[ACCOUNT].spool_key)


def _assert_left_alone(setup: Setup, rotator: Rotator, entry: Path, blob: bytes) -> str:
    """Every reader refuses the account; the entry is byte for byte where it was."""
    state_before = setup.store(rotator).read(setup.path)
    assert rotator.replay_spool() == 0
    result = rotator.rotate(ACCOUNT, force=True)
    assert result.result is Outcome.TRANSIENT
    assert isinstance(result.error, NewerFormat)
    # a fresh process (`rotator refresh`) looks at the spool before anything else
    again = setup.rotator().rotate(ACCOUNT, force=True)
    assert str(again.error) == str(result.error)
    assert entry.read_bytes() == blob
    assert sorted(p.name for p in entry.parent.iterdir()) == sorted(["spool.key", entry.name])
    assert setup.store(rotator).read(setup.path) == state_before
    assert setup.server.token_calls == 0
    return str(result.error)


@pytest.mark.parametrize("setup", ["file"], indirect=True)
@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    number=st.integers(min_value=2, max_value=9),
    release=st.one_of(st.none(), st.from_regex(r"[0-9]\.[0-9]{1,2}\.[0-9]", fullmatch=True)),
    rest=st.binary(max_size=200),
)
def test_a_newer_spool_format_is_refused_and_left_in_place(
    setup: Setup, number: int, release: str | None, rest: bytes
) -> None:
    rotator = setup.rotator()
    if setup.store(rotator).read(setup.path) is None:
        _seeded(setup, rotator)
    assert rotator.spool is not None
    entry = rotator.spool.entry_path(rotator.accounts[ACCOUNT].spool_key)
    header = f"RSP{number}".encode() + (f"rotator>={release}\n".encode() if release else b"")
    blob = header + rest
    entry.write_bytes(blob)
    message = _assert_left_alone(setup, rotator, entry, blob)
    assert f"the spooled grant {entry} is in spool format {number}" in message
    assert "reads spool formats up to 1" in message
    if release:
        assert message.endswith(f"upgrade rotator to at least {release}")
    else:
        assert message.endswith(f"reads spool format {number} (see the CHANGELOG)")
    entry.unlink()


@pytest.mark.parametrize("setup", ["file"], indirect=True)
def test_a_spooled_newer_state_is_refused_and_left_in_place(setup: Setup) -> None:
    rotator, entry = _spool_case(setup)
    assert rotator.spool is not None
    account = rotator.accounts[ACCOUNT]
    record = {"format": "2", "requires": "rotator>=1.4.0", "grant": "moved"}
    rotator.spool.put(account.spool_key, ACCOUNT, account.state_path, record)
    message = _assert_left_alone(setup, rotator, entry, entry.read_bytes())
    assert message.startswith(f"the stored state of {ACCOUNT} is in state format 2")
    assert message.endswith("upgrade rotator to at least 1.4.0")


@pytest.mark.parametrize("setup", ["file"], indirect=True)
def test_a_newer_processes_filled_reservation_is_not_taken_for_an_empty_one(
    setup: Setup,
) -> None:
    rotator, _ = _spool_case(setup)
    assert rotator.spool is not None
    key = rotator.accounts[ACCOUNT].spool_key
    # a reservation of a process that is gone, filled by a newer rotator before it died
    reservation = rotator.spool.directory / f"{key}.999999999-abcd.reserve"
    blob = b"RSP2rotator>=2.0.0\n" + bytes(64)
    reservation.write_bytes(blob)
    [entry] = list(rotator.spool.entries())
    assert isinstance(entry.refused, NewerFormat)
    assert reservation.read_bytes() == blob
    assert rotator.replay_spool() == 0
    assert reservation.read_bytes() == blob
