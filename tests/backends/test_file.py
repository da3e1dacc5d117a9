"""The file store (rotator/backends/file.py): atomic, private, compare-and-set."""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.backends.base import ValidationStatus, WriteResult
from rotator.backends.file import FileStore, render
from rotator.backends.file.store import MARKER
from rotator.errors import StoreConflict, StoreDamaged, StoreError, StoreNotManaged
from tests.support import leakcheck

TOKEN = leakcheck.register("at-file-5e6f7a8b9c0d", "access token")
VIEW = {
    "access_token": TOKEN,
    "token_type": "Bearer",
    "expires_at": "2026-03-01T13:00:00Z",
    "account": "idp-api",
    "provider": "oauth2",
}


def store(directory: Path, mode: int = 0o600) -> FileStore:
    return FileStore("files", SimpleNamespace(directory=directory, mode=mode))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_then_read(tmp_path: Path) -> None:
    files = store(tmp_path)
    result = files.write("a/b/idp.json", VIEW, expected_version=None)
    assert result.changed
    record = files.read("a/b/idp.json")
    assert record is not None
    assert dict(record.data) == VIEW
    assert record.version == result.version


def test_read_missing_is_none(tmp_path: Path) -> None:
    assert store(tmp_path).read("nothing.json") is None


def test_files_are_0600_and_directories_0700(tmp_path: Path) -> None:
    root = tmp_path / "store"
    files = store(root)
    old = os.umask(0o022)
    try:
        files.write("apps/fax/idp.json", VIEW, expected_version=None)
    finally:
        os.umask(old)
    assert mode_of(root / "apps/fax/idp.json") == 0o600
    assert mode_of(root / "apps/fax") == 0o700
    assert mode_of(root / "apps") == 0o700


def test_configured_mode_is_applied_whatever_the_umask(tmp_path: Path) -> None:
    files = store(tmp_path, mode=0o640)
    old = os.umask(0o077)
    try:
        files.write("idp.token", VIEW, expected_version=None, fmt="token")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "idp.token") == 0o640


def test_atomic_replace_leaves_no_temp_file(tmp_path: Path) -> None:
    files = store(tmp_path)
    first = files.write("idp.json", VIEW, expected_version=None)
    inode = (tmp_path / "idp.json").stat().st_ino
    files.write("idp.json", {**VIEW, "expires_at": "x"}, expected_version=first.version)
    # A rename, not an in-place rewrite: readers see the old file or the new one.
    assert (tmp_path / "idp.json").stat().st_ino != inode
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    assert {p.name for p in tmp_path.iterdir()} == {"idp.json", ".idp.json.lock"}


def test_json_format_exactly() -> None:
    text = render(VIEW, "json").decode()
    assert text.endswith("}\n")
    assert json.loads(text) == VIEW
    assert list(json.loads(text)) == list(VIEW)  # key order as given


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=6))
def test_json_rendering_is_json_dumps_indent_2(data: dict[str, str]) -> None:
    """The fast renderer writes exactly what json.dumps(indent=2) would (same bytes, so
    files written by earlier versions compare equal and are not rewritten)."""
    expected = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    assert render(data, "json") == expected.encode()


def test_a_directory_removed_behind_the_store_is_created_again(tmp_path: Path) -> None:
    import shutil

    files = store(tmp_path / "root")
    files.write("apps/idp.json", VIEW, expected_version=None)
    shutil.rmtree(tmp_path / "root")
    assert files.write("apps/idp.json", VIEW, expected_version=None).changed
    assert mode_of(tmp_path / "root" / "apps") == 0o700
    assert json.loads((tmp_path / "root/apps/idp.json").read_text()) == VIEW


def test_token_format_exactly(tmp_path: Path) -> None:
    assert render(VIEW, "token") == (TOKEN + "\n").encode()
    files = store(tmp_path)
    files.write("idp.token", VIEW, expected_version=None, fmt="token")
    assert (tmp_path / "idp.token").read_bytes() == (TOKEN + "\n").encode()
    record = files.read("idp.token", fmt="token")
    assert record is not None
    assert dict(record.data) == {"access_token": TOKEN}


def test_env_format_exactly(tmp_path: Path) -> None:
    expected = f"ACCESS_TOKEN={TOKEN}\nTOKEN_TYPE=Bearer\nEXPIRES_AT=2026-03-01T13:00:00Z\n"
    assert render(VIEW, "env").decode() == expected
    files = store(tmp_path)
    files.write("idp.env", VIEW, expected_version=None, fmt="env")
    record = files.read("idp.env", fmt="env")
    assert record is not None
    assert dict(record.data) == {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_at": "2026-03-01T13:00:00Z",
    }


def test_env_format_quotes_unsafe_values(tmp_path: Path) -> None:
    odd = {**VIEW, "token_type": "Bearer x; rm -rf /"}
    text = render(odd, "env").decode()
    assert "TOKEN_TYPE='Bearer x; rm -rf /'\n" in text
    files = store(tmp_path)
    files.write("odd.env", odd, expected_version=None, fmt="env")
    record = files.read("odd.env", fmt="env")
    assert record is not None
    assert record.data["token_type"] == "Bearer x; rm -rf /"


def test_unchanged_write_does_not_rewrite(tmp_path: Path) -> None:
    files = store(tmp_path)
    first = files.write("idp.json", VIEW, expected_version=None)
    path = tmp_path / "idp.json"
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.stat()
    again = files.write("idp.json", VIEW, expected_version=first.version)
    after = path.stat()
    assert again == WriteResult(first.version, changed=False)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_unchanged_write_repairs_a_widened_mode(tmp_path: Path) -> None:
    files = store(tmp_path)
    first = files.write("idp.json", VIEW, expected_version=None)
    os.chmod(tmp_path / "idp.json", 0o644)
    assert not files.write("idp.json", VIEW, expected_version=first.version).changed
    assert mode_of(tmp_path / "idp.json") == 0o600


def test_compare_and_set(tmp_path: Path) -> None:
    files = store(tmp_path)
    first = files.write("idp.json", VIEW, expected_version=None)
    # Creating what exists is a conflict.
    with pytest.raises(StoreConflict, match="compare-and-set lost"):
        files.write("idp.json", VIEW, expected_version=None)
    second = files.write(
        "idp.json", {**VIEW, "expires_at": "later"}, expected_version=first.version
    )
    # A writer still holding the first version loses and changes nothing.
    with pytest.raises(StoreConflict) as caught:
        files.write("idp.json", {**VIEW, "expires_at": "stale"}, expected_version=first.version)
    assert caught.value.store == "files"
    record = files.read("idp.json")
    assert record is not None
    assert record.data["expires_at"] == "later"
    assert record.version == second.version
    # Expecting a version of a file that does not exist is a conflict too.
    with pytest.raises(StoreConflict):
        files.write("other.json", VIEW, expected_version=first.version)


def test_adopt_overwrites_a_file_rotator_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "legacy.token").write_text("old-token\n")
    files = store(tmp_path)
    with pytest.raises(StoreNotManaged, match="set adopt: true on the sink"):
        files.write("legacy.token", VIEW, expected_version=None, fmt="token")
    assert files.write("legacy.token", VIEW, expected_version=None, fmt="token", adopt=True).changed
    assert (tmp_path / "legacy.token").read_bytes() == (TOKEN + "\n").encode()


def test_delete(tmp_path: Path) -> None:
    files = store(tmp_path)
    files.write("idp.json", VIEW, expected_version=None)
    files.delete("idp.json")
    assert files.read("idp.json") is None
    files.delete("idp.json")  # deleting what is gone is fine


def test_damaged_file_is_a_store_error_without_its_contents(tmp_path: Path) -> None:
    (tmp_path / "idp.json").write_text(f"not json {TOKEN}")
    with pytest.raises(StoreDamaged, match="does not hold json data") as caught:
        store(tmp_path).read("idp.json")
    assert TOKEN not in str(caught.value)
    assert caught.value.version  # what a sink writer replaces it against
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(StoreError, match="does not hold json data"):
        store(tmp_path).read("list.json")


def test_validate_ready(tmp_path: Path) -> None:
    files = store(tmp_path / "new")
    validation = files.validate()
    assert validation.status is ValidationStatus.READY
    assert "is writable" in validation.reason
    assert [p.name for p in (tmp_path / "new").iterdir()] == []  # the probe is gone


def test_validate_error_when_the_directory_cannot_exist(tmp_path: Path) -> None:
    # Tests run as root, so permissions do not stop us: a regular file in the way does.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    validation = store(blocker / "sub").validate()
    assert validation.status is ValidationStatus.ERROR
    assert str(blocker / "sub") in validation.reason


def test_write_under_a_regular_file_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(StoreError) as caught:
        store(blocker).write("idp.json", VIEW, expected_version=None)
    assert caught.value.store == "files"
    assert TOKEN not in str(caught.value)


# -- the hot path's system calls and checks (issue 20: the burst against the floor) ----


def _reference_parts(files: FileStore, path: str) -> tuple[str, ...]:
    """Tree.parts as it was before its fast path: every path decoded and looked at."""
    from urllib.parse import unquote

    decoded = unquote(path)
    if any(unicodedata.category(c) == "Cc" for text in (path, decoded) for c in text):
        raise StoreError("control")
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    decoded_parts = [part for part in decoded.split("/") if part not in ("", ".")]
    if (
        path.startswith("/")
        or decoded.startswith("/")
        or not parts
        or ".." in parts
        or ".." in decoded_parts
    ):
        raise StoreError("climbs")
    last = parts[-1]
    if last.startswith(".") and (
        last.endswith(".lock") or ".tmp-" in last or last.startswith(".rotator-probe-")
    ):
        raise StoreError("the store's own name")
    return parts


@given(
    st.lists(
        st.sampled_from(
            ["a", "..", ".", "", "%2e%2e", "%2f", "%00", "\x00", "\n", "\x85", "b", ".b.lock"]
        )
        | st.text(max_size=6),
        min_size=1,
        max_size=4,
    ).map("/".join)
)
def test_the_path_check_fast_path_decides_as_the_full_check(path: str) -> None:
    """A printable path without '%' skips decoding and the per-character look; every
    path gets the answer the full check gives (the parts, or a refusal)."""
    files = store(Path("/nonexistent-store"))
    try:
        expected: tuple[str, ...] | None = _reference_parts(files, path)
    except StoreError:
        expected = None
    try:
        got: tuple[str, ...] | None = files._tree.parts(path)
    except StoreError:
        got = None
    assert got == expected


@pytest.mark.parametrize("new", [True, False], ids=["create-first", "open-first"])
@pytest.mark.parametrize("before", [None, b"", MARKER, b"managed-by: none\n"])
def test_the_lock_file_is_seen_as_it_was_whichever_open_comes_first(
    tmp_path: Path, new: bool, before: bytes | None
) -> None:
    """Whether the lock file existed decides the old-rotator ownership rule: both
    orders of open report it the same, and neither changes its contents."""
    files = store(tmp_path)
    lock = tmp_path / ".acct.json.lock"
    if before is not None:
        lock.write_bytes(before)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd, existed = files._locks.open_lock(dir_fd, ("acct.json",), new=new)
        os.close(fd)
    finally:
        os.close(dir_fd)
    assert existed is (before is not None)
    assert lock.read_bytes() == (before or b"")


def test_each_write_opens_its_lock_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first write (no version) creates the lock file straight away, a later one
    opens the existing one: no failing open first (each is a hand-over of the
    interpreter lock under 16 workers)."""
    opened: list[str] = []
    real_open = os.open

    def counting(path: str, *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    files = store(tmp_path)
    monkeypatch.setattr(os, "open", counting)
    first = files.write("acct.json", VIEW, expected_version=None)
    assert opened.count(".acct.json.lock") == 1
    opened.clear()
    files.write("acct.json", {**VIEW, "expires_at": "x"}, expected_version=first.version)
    assert opened.count(".acct.json.lock") == 1
    monkeypatch.undo()
    assert (tmp_path / ".acct.json.lock").read_bytes() == MARKER


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the os (and flock) calls made from now on: one system call each."""
    import fcntl

    calls: list[str] = []
    for module, names in (
        (os, ("open", "close", "read", "write", "pread", "pwrite", "ftruncate", "fchmod")),
        (os, ("fstat", "stat", "fsync", "replace", "mkdir", "unlink")),
        (fcntl, ("flock",)),
    ):
        for name in names:
            real = getattr(module, name)

            def call(
                *args: object, _real: object = real, _name: str = name, **kw: object
            ) -> object:
                calls.append(_name)
                return _real(*args, **kw)  # type: ignore[operator]

            monkeypatch.setattr(module, name, call)
    return calls


@pytest.mark.parametrize(
    "path", ["acct.json", "state/acct"], ids=["in-the-directory", "a-level-down"]
)
def test_the_system_calls_of_a_first_write_and_of_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """What each guarantee costs, counted (issue 20): a first write is the floor's six
    (temp file, write, fsync, close, rename, directory fsync) and the directory's open
    and close, the lock file's open, flock and close, the missing target's open, the
    marker and the temp file's mode: 14. The lock file it created is not read, and the
    level below the directory is reached with one open. A read of a missing file is
    one open in the directory, three a level down (the level's open and close)."""
    files = store(tmp_path)
    files.write("warm/x", VIEW, expected_version=None)  # the directory exists
    (tmp_path / "state").mkdir()
    calls = _counted(monkeypatch)
    files.write(path, VIEW, expected_version=None)
    # in order: the directory, the lock file (created), flock, the missing target, the
    # marker, the temp file, its mode, write, fsync, close, rename, the directory's
    # fsync, the lock file's close, the directory's close
    assert calls == [
        *("open", "open", "flock", "open", "pwrite", "open", "fchmod", "write", "fsync"),
        *("close", "replace", "fsync", "close", "close"),
    ]
    calls.clear()
    walk = ["open", "open", "close"] if "/" in path else ["open"]
    assert files.read(path.replace("acct", "other")) is None
    assert calls == walk
    calls.clear()
    assert files.read(path) is not None
    assert calls == [*walk, "read", "read", "close"]  # the second read sees the end
    monkeypatch.undo()
    folder, _, leaf = path.rpartition("/")
    assert (tmp_path / folder / f".{leaf}.lock").read_bytes() == MARKER
