"""Creating a path in the Vault store, against a real OpenBao: the data with
``cas=0`` first, the ``managed-by`` marker after.

A create makes two calls and no read (issue 20: the burst against the bare
floor), and it can no longer claim a path someone else made: the marker is
written only once the server's create-only write proved the path ours. The
class of paths tested is every path another writer made, whatever this store
knew of it (read before they made it, read after, never read) and whatever
custom metadata they gave it: refused, and left exactly as they left it.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from rotator.backends.vault.client import HvacClient
from rotator.backends.vault.store import VaultStore
from rotator.errors import StoreConflict, StoreNotManaged, StoreUnavailable
from tests.backends.conftest import token_env, unique, vault_settings
from tests.support.servers import OpenBao
from tests.support.wrappers import Counting

VIEW = {"access_token": "tok-create", "token_type": "Bearer", "expires_at": "2030-01-01T00:00:00Z"}
VIEW2 = {**VIEW, "access_token": "tok-create-2"}


def counted_store(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> tuple[VaultStore, Counting]:
    settings = vault_settings(
        bao.url, {"method": "token", "token": token_env(monkeypatch, bao.create_token(["rotator"]))}
    )
    client = Counting(HvacClient(settings))
    return VaultStore("vault", settings, client=client), client


def metadata(bao: OpenBao, path: str) -> dict[str, Any]:
    answer: dict[str, Any] = bao.call("GET", f"secret/metadata/rotator/{path}")["data"]
    return answer


def data(bao: OpenBao, path: str) -> dict[str, Any]:
    answer: dict[str, Any] = bao.call("GET", f"secret/data/rotator/{path}")["data"]["data"]
    return answer


def test_a_create_makes_two_calls_and_no_read(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, client = counted_store(bao, monkeypatch)
    try:
        store.renew_if_due()  # the login, before the calls counted
        client.calls.clear()
        path = f"apps/{unique()}"
        result = store.write(path, VIEW, expected_version=None)
        assert result.changed and result.version == 1
        assert client.calls == ["write_data", "write_metadata"]
        assert metadata(bao, path)["custom_metadata"] == {"managed-by": "rotator"}
        assert data(bao, path) == VIEW
        # the next write goes straight to its compare-and-set
        client.calls.clear()
        assert store.write(path, VIEW2, expected_version=1).version == 2
        assert client.calls == ["write_data"]
    finally:
        store.close()


@pytest.mark.parametrize("known", ["never read", "read before they made it", "read after"])
@pytest.mark.parametrize("their_metadata", [None, {"owner": "team-a"}])
def test_a_path_another_writer_made_is_refused_and_left_as_it_was(
    bao: OpenBao,
    monkeypatch: pytest.MonkeyPatch,
    known: str,
    their_metadata: dict[str, str] | None,
) -> None:
    store, _ = counted_store(bao, monkeypatch)
    try:
        path = f"apps/{unique()}"
        if known == "read before they made it":
            assert store.read(path) is None
        bao.call("POST", f"secret/data/rotator/{path}", {"data": {"x": "theirs"}})
        if their_metadata is not None:
            bao.call("POST", f"secret/metadata/rotator/{path}", {"custom_metadata": their_metadata})
        if known == "read after":
            record = store.read(path)
            assert record is not None and record.version == 1
        if their_metadata is None:
            # unmarked and bare, as another rotator's between its create and its marker:
            # a lost create (the contract's conflict), and the write after it refuses
            with pytest.raises(StoreConflict):
                store.write(path, VIEW, expected_version=None)
        else:
            with pytest.raises(StoreNotManaged, match="adopt: true"):
                store.write(path, VIEW, expected_version=None)
        with pytest.raises(StoreNotManaged, match="adopt: true"):
            store.write(path, VIEW, expected_version=1)
        assert bao.kv_versions(f"rotator/{path}") == 1
        assert data(bao, path) == {"x": "theirs"}
        assert (metadata(bao, path)["custom_metadata"] or None) == their_metadata
    finally:
        store.close()


class MarkerFails(Counting):
    """The real client, whose next ``write_metadata`` calls fail as a dropped
    connection would (the data write before them went through)."""

    def __init__(self, inner: Any, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        method = super().__getattr__(name)
        if name != "write_metadata":
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise requests.exceptions.ConnectionError("connection dropped")
            return method(*args, **kwargs)

        return call


def test_a_create_whose_marker_failed_is_still_ours_in_this_process(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = vault_settings(
        bao.url, {"method": "token", "token": token_env(monkeypatch, bao.create_token(["rotator"]))}
    )
    client = MarkerFails(HvacClient(settings), failures=1)
    store = VaultStore("vault", settings, client=client)
    try:
        path = f"apps/{unique()}"
        with pytest.raises(StoreUnavailable):
            store.write(path, VIEW, expected_version=None)
        assert metadata(bao, path)["custom_metadata"] in (None, {})  # data in, no marker
        # the retried create (the grant keeper's) finds its own data: marked, nothing written
        again = store.write(path, VIEW, expected_version=None)
        assert not again.changed and again.version == 1
        assert metadata(bao, path)["custom_metadata"] == {"managed-by": "rotator"}

        # a failed marker followed by a rotation: the next write marks it and goes on
        other = f"apps/{unique()}"
        client.failures = 1
        with pytest.raises(StoreUnavailable):
            store.write(other, VIEW, expected_version=None)
        record = store.read(other)
        assert record is not None and record.version == 1
        assert store.write(other, VIEW2, expected_version=1).version == 2
        assert metadata(bao, other)["custom_metadata"] == {"managed-by": "rotator"}
    finally:
        store.close()


def test_a_process_that_stopped_before_its_marker_is_healed_by_the_same_data(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotator killed between its create and its marker left its data unmarked; a
    new process publishing the same view (the state's token) takes it back. Any other
    data at an unmarked path stays refused."""
    path = f"apps/{unique()}"
    bao.call("POST", f"secret/data/rotator/{path}", {"options": {"cas": 0}, "data": VIEW})
    store, _ = counted_store(bao, monkeypatch)
    try:
        record = store.read(path)
        assert record is not None and record.version == 1
        with pytest.raises(StoreNotManaged):
            store.write(path, VIEW2, expected_version=1)  # not what it holds: not proven ours
        assert metadata(bao, path)["custom_metadata"] in (None, {})
        same = store.write(path, VIEW, expected_version=1)
        assert not same.changed and same.version == 1
        assert metadata(bao, path)["custom_metadata"] == {"managed-by": "rotator"}
        assert store.write(path, VIEW2, expected_version=1).version == 2
        # the same data at a later version is no proof: someone wrote it since
        later = f"apps/{unique()}"
        bao.call("POST", f"secret/data/rotator/{later}", {"data": {"x": "theirs"}})
        bao.call("POST", f"secret/data/rotator/{later}", {"data": VIEW})
        with pytest.raises(StoreNotManaged):
            store.write(later, VIEW, expected_version=2)
        assert bao.kv_versions(f"rotator/{later}") == 2
    finally:
        store.close()


@pytest.mark.parametrize(
    ("requires", "ours"),
    [("rotator>=0.1.0", True), ("rotator>=9.9", True), ("", False), ("myapp>=1", False)],
)
def test_a_state_record_whose_marker_a_policy_refused_is_taken_back_by_the_next_process(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch, requires: str, ours: bool
) -> None:
    """docs/troubleshooting.md, "The Vault policy is too narrow": an import under a
    policy without metadata update created the state unmarked; with the policy fixed, a
    new process writes its own state there (other data than the first one). A record
    that says rotator wrote it (``requires: rotator>=X``) is rotator's; anything else
    at an unmarked path stays refused and untouched."""
    path = f"state/{unique()}"
    first = {"format": "1", "account": "idp-api", "refresh_token": "rt-first"}
    if requires:
        first["requires"] = requires
    bao.call("POST", f"secret/data/rotator/{path}", {"options": {"cas": 0}, "data": first})
    store, _ = counted_store(bao, monkeypatch)
    try:
        second = {**first, "refresh_token": "rt-second"}
        if ours:
            assert store.write(path, second, expected_version=1).version == 2
            assert metadata(bao, path)["custom_metadata"] == {"managed-by": "rotator"}
            assert data(bao, path)["refresh_token"] == "rt-second"
        else:
            with pytest.raises(StoreNotManaged):
                store.write(path, second, expected_version=1)
            assert metadata(bao, path)["custom_metadata"] in (None, {})
            assert data(bao, path) == first
    finally:
        store.close()
