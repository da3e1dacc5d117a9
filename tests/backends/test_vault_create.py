"""Creating a path in the Vault store, and whose a path is, against a real OpenBao.

A create is ONE call, the data with ``cas=0`` (issue 20: the burst against the
bare floor): no read first, no metadata after. Whose a path is comes from its
record (``written_by_rotator`` in rotator/backends/base.py; its pure properties
are in tests/backends/test_base.py). The classes tested here:

- every path another writer made, whatever this store knew of it (read before
  they made it, read after, never read), whatever custom metadata they gave it
  and whatever they put there (foreign data, a view of another account or
  provider, a state record of another account): refused, left exactly as it was;
- every record rotator writes, made by another process with no marker (a state
  record, an alert or notify record, a view of the same account): taken over by
  a process that writes the same thing, with a compare-and-set on its version;
- a create that loses to another rotator's create of the same thing: the
  contract's conflict, and nothing of theirs is touched.
"""

from __future__ import annotations

from typing import Any

import pytest

from rotator.backends.vault.client import HvacClient
from rotator.backends.vault.store import VaultStore
from rotator.errors import StoreConflict, StoreNotManaged
from rotator.state import STATE_REQUIRES
from tests.backends.conftest import token_env, unique, vault_settings
from tests.support.servers import OpenBao
from tests.support.wrappers import Counting

VIEW = {
    "access_token": "tok-create",
    "token_type": "Bearer",
    "expires_at": "2030-01-01T00:00:00Z",
    "account": "acme",
    "provider": "oauth2",
}
VIEW2 = {**VIEW, "access_token": "tok-create-2"}
STATE = {"format": "1", "requires": STATE_REQUIRES, "account": "acme", "refresh_token": "rt-1"}
STATE2 = {**STATE, "refresh_token": "rt-2"}
#: a policy with no grant on secret/metadata/ (docs/stores.md's minimal policy)
DATA_ONLY = 'path "secret/data/rotator/*" { capabilities = ["create", "read", "update"] }'


def counted_store(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> tuple[VaultStore, Counting]:
    bao.write_policy("data-only", DATA_ONLY)
    settings = vault_settings(
        bao.url,
        {"method": "token", "token": token_env(monkeypatch, bao.create_token(["data-only"]))},
    )
    client = Counting(HvacClient(settings))
    return VaultStore("vault", settings, client=client), client


def metadata(bao: OpenBao, path: str) -> dict[str, Any]:
    answer: dict[str, Any] = bao.call("GET", f"secret/metadata/rotator/{path}")["data"]
    return answer


def data(bao: OpenBao, path: str) -> dict[str, Any]:
    answer: dict[str, Any] = bao.call("GET", f"secret/data/rotator/{path}")["data"]["data"]
    return answer


@pytest.mark.parametrize("record", [VIEW, STATE], ids=["view", "state"])
def test_a_create_is_one_call_no_read_and_no_metadata(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch, record: dict[str, str]
) -> None:
    store, client = counted_store(bao, monkeypatch)
    try:
        store.renew_if_due()  # the login, before the calls counted
        client.calls.clear()
        path = f"apps/{unique()}"
        result = store.write(path, record, expected_version=None)
        assert result.changed and result.version == 1
        assert client.calls == ["write_data"]
        assert metadata(bao, path)["custom_metadata"] in (None, {})
        assert data(bao, path) == record
        # the next write goes straight to its compare-and-set
        client.calls.clear()
        assert store.write(path, {**record, "x": "2"}, expected_version=1).version == 2
        assert client.calls == ["write_data"]
    finally:
        store.close()


THEIRS = {
    "foreign data": {"x": "theirs"},
    "a token of theirs": {"access_token": "theirs", "token_type": "Bearer"},
    "a view of another account": {**VIEW, "account": "globex"},
    "a view of another provider": {**VIEW, "provider": "faxplus"},
    "a state record of another account": {**STATE, "account": "globex"},
    "a record that only looks like state": {**STATE, "requires": "myapp>=1"},
}


@pytest.mark.parametrize("known", ["never read", "read before they made it", "read after"])
@pytest.mark.parametrize("their_metadata", [None, {"owner": "team-a"}])
@pytest.mark.parametrize("theirs", list(THEIRS))
@pytest.mark.parametrize("ours", [VIEW, STATE], ids=["view", "state"])
def test_a_path_another_writer_made_is_refused_and_left_as_it_was(
    bao: OpenBao,
    monkeypatch: pytest.MonkeyPatch,
    *,
    known: str,
    their_metadata: dict[str, str] | None,
    theirs: str,
    ours: dict[str, str],
) -> None:
    their_data = THEIRS[theirs]
    store, _ = counted_store(bao, monkeypatch)
    try:
        path = f"apps/{unique()}"
        if known == "read before they made it":
            assert store.read(path) is None
        bao.call("POST", f"secret/data/rotator/{path}", {"data": their_data})
        if their_metadata is not None:
            bao.call("POST", f"secret/metadata/rotator/{path}", {"custom_metadata": their_metadata})
        if known == "read after":
            record = store.read(path)
            assert record is not None and record.version == 1
        with pytest.raises(StoreNotManaged, match="not written by rotator"):
            store.write(path, ours, expected_version=None)
        with pytest.raises(StoreNotManaged, match="adopt: true"):
            store.write(path, ours, expected_version=1)
        assert bao.kv_versions(f"rotator/{path}") == 1
        assert data(bao, path) == their_data
        assert (metadata(bao, path)["custom_metadata"] or None) == their_metadata
    finally:
        store.close()


ALERTS = {"format": "1", "requires": STATE_REQUIRES, "account": "acme", "expiry": "{}"}


@pytest.mark.parametrize(
    ("first", "second"),
    [(VIEW, VIEW2), (STATE, STATE2), (ALERTS, {**ALERTS, "expiry": "{1}"})],
    ids=["view", "state", "alert record"],
)
def test_a_record_another_rotator_wrote_is_taken_over_by_compare_and_set(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch, first: dict[str, str], second: dict[str, str]
) -> None:
    """Another process (or a restart) created the record, with no marker: a process
    writing the same thing (the same account's record, a view of the same account and
    provider) writes over it, at the version it read and no other."""
    them, _ = counted_store(bao, monkeypatch)
    store, client = counted_store(bao, monkeypatch)
    try:
        path = f"state/{unique()}"
        assert them.write(path, first, expected_version=None).version == 1
        # our create loses to theirs: the contract's conflict, theirs untouched
        with pytest.raises(StoreConflict, match="create-only write lost"):
            store.write(path, second, expected_version=None)
        assert data(bao, path) == first
        # ... and the same data: our create's lost answer, done already
        assert store.write(path, first, expected_version=None).changed is False
        record = store.read(path)
        assert record is not None and record.version == 1
        assert store.write(path, second, expected_version=1).version == 2
        # a stale version is refused by the server, whoever owns the path
        with pytest.raises(StoreConflict):
            them.write(path, first, expected_version=1)
        assert data(bao, path) == second
        assert metadata(bao, path)["custom_metadata"] in (None, {})
        assert "write_metadata" not in client.calls
    finally:
        them.close()
        store.close()
