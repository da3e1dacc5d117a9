"""The SecretStore contract (rotator/backends/base.py), run against every store:
the file store on a temp dir, Vault on a real OpenBao server, AWS on moto."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rotator.backends.aws import AwsStore
from rotator.backends.base import SecretStore
from rotator.backends.file import FileStore
from rotator.backends.vault.store import VaultStore
from rotator.config.models import FileStoreSettings
from rotator.errors import (
    StoreAuthError,
    StoreConflict,
    StorePermissionError,
    StoreUnavailable,
)
from tests.backends.conftest import (
    MotoIam,
    aws_settings,
    token_env,
    unique,
    vault_settings,
)
from tests.support import leakcheck
from tests.support.servers import MotoServer, OpenBao, free_port


@dataclass
class Harness:
    kind: str
    store: SecretStore
    #: something that changes exactly when the store writes a new version, read
    #: from the server itself (KV version count, Secrets Manager version count,
    #: the file's inode: a new file is renamed into place per write)
    fingerprint: Callable[[str], object]
    #: a store of this kind whose credentials are refused (None: no credentials)
    bad_auth: Callable[[], SecretStore] | None
    #: a store of this kind that cannot reach its server (None: nothing to reach)
    down: Callable[[], SecretStore] | None
    #: (a store allowed to write, a function making one that may only read) on the
    #: same server; the reader is made after the writer has written
    read_only: Callable[[], tuple[SecretStore, Callable[[], SecretStore]]] | None


def _file_harness(tmp_path: Path, cleanup: Callable[[Callable[[], object]], None]) -> Harness:
    settings = FileStoreSettings(type="file", directory=tmp_path / "store")
    store = FileStore("files", settings)

    def fingerprint(path: str) -> object:
        try:
            return os.stat(settings.directory / path).st_ino
        except FileNotFoundError:
            return None

    def read_only() -> tuple[SecretStore, Callable[[], SecretStore]]:
        ro_settings = FileStoreSettings(type="file", directory=tmp_path / "ro")
        if os.geteuid() != 0:

            def reader() -> SecretStore:
                ro_settings.directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
                return FileStore("files", ro_settings)

            return FileStore("files", ro_settings), reader
        # root ignores file modes: the reader sees the directory through a read-only
        # bind mount (tests/backends/test_file_faults.py also drops root with setpriv)
        view = tmp_path / "ro-view"
        ro_settings.directory.mkdir()
        view.mkdir()
        for argv in (
            ["mount", "--bind", ro_settings.directory, view],
            ["mount", "-o", "remount,bind,ro", view],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", view], capture_output=True, check=False)
                pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
        cleanup(lambda: subprocess.run(["umount", view], check=True))
        view_settings = FileStoreSettings(type="file", directory=view)
        return FileStore("files", ro_settings), lambda: FileStore("files", view_settings)

    return Harness("file", store, fingerprint, None, None, read_only)


def _vault_harness(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> Harness:
    def make(token: str, url: str = bao.url) -> SecretStore:
        return VaultStore(
            "vault",
            vault_settings(url, {"method": "token", "token": token_env(monkeypatch, token)}),
        )

    store = make(bao.create_token(["rotator", "rotator-tests"]))

    def fingerprint(path: str) -> object:
        return bao.kv_versions(f"rotator/{path}")

    def bad_auth() -> SecretStore:
        return make(leakcheck.register("s.not-a-real-token-" + unique(), "bogus vault token"))

    def down() -> SecretStore:
        return make(bao.create_token(["rotator"]), url=f"http://127.0.0.1:{free_port()}")

    def read_only() -> tuple[SecretStore, Callable[[], SecretStore]]:
        return store, lambda: make(bao.create_token(["consumer"]))

    return Harness("vault", store, fingerprint, bad_auth, down, read_only)


def _aws_harness(moto: MotoServer, moto_iam: MotoIam, monkeypatch: pytest.MonkeyPatch) -> Harness:
    store = AwsStore("aws", aws_settings(moto.endpoint_url))
    consumer = moto.client()

    def fingerprint(path: str) -> object:
        try:
            answer = consumer.list_secret_version_ids(
                SecretId=f"rotator/{path}", IncludeDeprecated=True
            )
        except consumer.exceptions.ResourceNotFoundException:
            return 0
        return len(answer["Versions"])

    def as_user(key_id: str, secret: str, endpoint: str) -> SecretStore:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        return AwsStore("aws", aws_settings(endpoint))

    def bad_auth() -> SecretStore:
        bogus = leakcheck.register("bogus-" + unique() + unique(), "bogus aws secret key")
        return as_user("AKIANOTAREALKEY00000", bogus, moto_iam.server.endpoint_url)

    def down() -> SecretStore:
        return AwsStore("aws", aws_settings(f"http://127.0.0.1:{free_port()}"))

    def read_only() -> tuple[SecretStore, Callable[[], SecretStore]]:
        endpoint = moto_iam.server.endpoint_url
        writer = as_user(moto_iam.writer.access_key_id, moto_iam.writer.secret_access_key, endpoint)
        reader = moto_iam.reader
        return writer, lambda: as_user(reader.access_key_id, reader.secret_access_key, endpoint)

    return Harness("aws", store, fingerprint, bad_auth, down, read_only)


@pytest.fixture(params=["file", "vault", "aws"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    if request.param == "file":
        made = _file_harness(tmp_path, request.addfinalizer)
    elif request.param == "vault":
        made = _vault_harness(request.getfixturevalue("bao"), monkeypatch)
    else:
        request.getfixturevalue("aws_env")
        made = _aws_harness(
            request.getfixturevalue("moto"), request.getfixturevalue("moto_iam"), monkeypatch
        )
    yield made
    made.store.close()


#: a consumer view as rotator writes it (providers/base.py base_view): a Vault store
#: knows it for rotator's by its account and provider (backends/base.py)
VIEW = {
    "access_token": "tok-one",
    "token_type": "Bearer",
    "expires_at": "2030-01-01T00:00:00Z",
    "account": "acme",
    "provider": "oauth2",
}
VIEW2 = {**VIEW, "access_token": "tok-two"}


def test_read_of_a_missing_path_is_none(harness: Harness) -> None:
    assert harness.store.read(f"apps/{unique()}") is None


def test_round_trip(harness: Harness) -> None:
    path = f"apps/{unique()}"
    created = harness.store.write(path, VIEW, expected_version=None)
    assert created.changed
    record = harness.store.read(path)
    assert record is not None
    assert dict(record.data) == VIEW
    assert record.version == created.version

    updated = harness.store.write(path, VIEW2, expected_version=created.version)
    assert updated.changed
    assert updated.version != created.version
    again = harness.store.read(path)
    assert again is not None
    assert dict(again.data) == VIEW2
    assert again.version == updated.version


def test_create_only_write_conflicts_when_the_path_exists(harness: Harness) -> None:
    path = f"apps/{unique()}"
    harness.store.write(path, VIEW, expected_version=None)
    with pytest.raises(StoreConflict):
        harness.store.write(path, VIEW2, expected_version=None)
    record = harness.store.read(path)
    assert record is not None and dict(record.data) == VIEW


def test_concurrent_creators_one_wins_the_other_conflicts(harness: Harness) -> None:
    """Two replicas creating the same path at once (an alert claim, a first state):
    exactly one write lands and the other is a compare-and-set conflict, never an
    ownership refusal or anything else."""
    rounds = 30 if harness.kind == "file" else 5
    for _ in range(rounds):
        assert sorted(_race_to_create(harness.store, f"apps/{unique()}")) == [
            "conflict",
            "written",
        ]


def _race_to_create(store: SecretStore, path: str) -> list[str]:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def create(view: dict[str, str]) -> None:
        barrier.wait()
        try:
            store.write(path, view, expected_version=None)
            outcomes.append("written")
        except StoreConflict:
            outcomes.append("conflict")
        except Exception as exc:  # the assertion names it
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=create, args=(v,)) for v in (VIEW, VIEW2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_stale_version_conflicts(harness: Harness) -> None:
    path = f"apps/{unique()}"
    first = harness.store.write(path, VIEW, expected_version=None)
    second = harness.store.write(path, VIEW2, expected_version=first.version)
    with pytest.raises(StoreConflict):
        harness.store.write(
            path, {**VIEW, "access_token": "tok-three"}, expected_version=first.version
        )
    record = harness.store.read(path)
    assert record is not None
    assert dict(record.data) == VIEW2 and record.version == second.version


def test_unchanged_write_is_a_no_op(harness: Harness) -> None:
    path = f"apps/{unique()}"
    first = harness.store.write(path, VIEW, expected_version=None)
    before = harness.fingerprint(path)
    assert before not in (None, 0)
    again = harness.store.write(path, dict(VIEW), expected_version=first.version)
    assert again == type(again)(first.version, changed=False)
    assert harness.fingerprint(path) == before
    changed = harness.store.write(path, VIEW2, expected_version=first.version)
    assert changed.changed
    assert harness.fingerprint(path) != before


def test_delete(harness: Harness) -> None:
    path = f"apps/{unique()}"
    harness.store.write(path, VIEW, expected_version=None)
    harness.store.delete(path)
    assert harness.store.read(path) is None
    harness.store.delete(path)  # deleting what is not there is fine
    assert harness.store.write(path, VIEW, expected_version=None).changed


def test_auth_failure_is_typed(harness: Harness) -> None:
    if harness.bad_auth is None:
        pytest.skip(f"the {harness.kind} store has no credentials")
    store = harness.bad_auth()
    try:
        with pytest.raises(StoreAuthError) as caught:
            store.read(f"apps/{unique()}")
        assert caught.value.store == harness.kind
    finally:
        store.close()


def test_server_down_is_unavailable(harness: Harness) -> None:
    if harness.down is None:
        pytest.skip(f"the {harness.kind} store has no server")
    store = harness.down()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.read(f"apps/{unique()}")
        assert caught.value.transient
        with pytest.raises(StoreUnavailable):
            store.write(f"apps/{unique()}", VIEW, expected_version=None)
    finally:
        store.close()


def test_permission_denied_is_typed(harness: Harness) -> None:
    if harness.read_only is None:
        pytest.skip(f"the {harness.kind} store has no policy")
    path = f"apps/{unique()}"
    writer, make_reader = harness.read_only()
    reader = None
    try:
        first = writer.write(path, VIEW, expected_version=None)
        reader = make_reader()
        record = reader.read(path)  # reading is allowed ...
        assert record is not None and dict(record.data) == VIEW
        with pytest.raises(StorePermissionError):  # ... writing is not
            reader.write(path, VIEW2, expected_version=record.version)
        after = writer.read(path)
        assert after is not None and dict(after.data) == VIEW and after.version == first.version
    finally:
        writer.close()
        if reader is not None:
            reader.close()
