"""File store faults: typed store errors, never a raw OSError, never a file outside the store.

A raw OSError escaped the rotation's state-write retry (which handles
StoreError) and crashed the job; `rotator refresh` printed a traceback. A
symbolic link below the store's directory made it write tokens and locks
elsewhere (issue "hardening" 12). Everything here runs on real files, real
links, and as root: the permission cases run in a child that drops to nobody
(setpriv) or on a read-only bind mount, because root ignores file modes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rotator
from rotator.backends.base import ValidationStatus
from rotator.backends.file import FileStore
from rotator.backends.file import store as file_store
from rotator.config.models import FileStoreSettings
from rotator.errors import StoreError, StorePermissionError, StoreUnavailable
from tests.support import leakcheck

TOKEN = leakcheck.register("at-faults-9f8e7d6c5b4a", "access token")
VIEW = {"access_token": TOKEN, "token_type": "Bearer", "expires_at": "2030-01-01T00:00:00Z"}


def store(directory: Path) -> FileStore:
    return FileStore("files", SimpleNamespace(directory=directory, mode=0o600))


def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every entry below ``directory`` (links by target, files by contents)."""
    seen: dict[str, bytes | str] = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        if path.is_symlink():
            seen[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            seen[key] = path.read_bytes()
        else:
            seen[key] = "dir"
    return seen


def test_a_lock_file_that_cannot_be_opened_is_store_unavailable(tmp_path: Path) -> None:
    files = FileStore("files", FileStoreSettings(type="file", directory=tmp_path))
    (tmp_path / ".acct.lock").mkdir()  # something else where the lock file goes
    with pytest.raises(StoreUnavailable, match=r"cannot lock .*\.acct\.lock"):
        files.write("acct", {"access_token": "x"}, expected_version=None)


# -- paths are checked at run time ---------------------------------------------------

BAD_PATHS = {
    "absolute": "/etc/passwd",
    "parent": "../escape.json",
    "parent inside": "a/../../b",
    "percent-encoded parent": "%2e%2e/escape.json",
    "percent-encoded, upper case": "a/%2E%2E/%2e%2E/b",
    "percent-encoded slash": "%2fetc/passwd",
    "NUL": "a\x00b.json",
    "percent-encoded NUL": "a%00b.json",
    "newline": "a\nb.json",
    "escape": "a\x1b[31m.json",
    "DEL": "a\x7f.json",
    "empty": "",
    "dot": ".",
    "slashes only": "//",
    "another path's lock file": "a/.b.json.lock",
    "a temp file": ".b.json.tmp-1-ab-0",
}


@pytest.mark.parametrize("bad", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_a_path_leaving_the_store_or_unprintable_is_refused(tmp_path: Path, bad: str) -> None:
    files = store(tmp_path / "store")
    operations: list[Callable[[], object]] = [
        lambda: files.write(bad, VIEW, expected_version=None),
        lambda: files.read(bad),
        lambda: files.delete(bad),
    ]
    for operation in operations:
        with pytest.raises(StoreError) as caught:
            operation()
        message = str(caught.value)
        assert any(rule in message for rule in ("stay inside it", "control", "lock or temp"))
        assert "\x00" not in message and "\n" not in message  # shown escaped
    assert sorted(os.listdir(tmp_path)) == []  # not even the store's directory


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.lists(
        st.sampled_from(["a", "..", ".", "", "%2e%2e", "%2f", "%00", "\x00", "\n", "b.json"])
        | st.text(max_size=6),
        min_size=1,
        max_size=4,
    ).map("/".join)
)
def test_any_path_lands_inside_the_store_or_is_a_store_error(path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        files = store(root)
        try:
            files.write(path, VIEW, expected_version=None)
            record = files.read(path)
            assert record is not None and dict(record.data) == VIEW
        except StoreError:
            pass
        assert os.listdir(tmp) in ([], ["store"])


# -- no symbolic link is followed ------------------------------------------------------

TARGET = "a/b/c.json"
#: where a link can sit on the way to TARGET
LINK_AT = ["a", "a/b", "a/b/c.json", "a/b/.c.json.lock"]
OPERATIONS: dict[str, Callable[[FileStore], object]] = {
    "read": lambda files: files.read(TARGET),
    "write": lambda files: files.write(TARGET, VIEW, expected_version=None),
    "adopt": lambda files: files.write(TARGET, VIEW, expected_version=None, adopt=True),
    "delete": lambda files: files.delete(TARGET),
}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "b").mkdir(parents=True)
    (elsewhere / "c.json").write_text("{}\n")
    (elsewhere / ".c.json.lock").write_text("")
    return elsewhere


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("at", LINK_AT)
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-real-place", "dangling"])
def test_a_link_anywhere_on_the_path_is_refused(
    tmp_path: Path, outside: Path, operation: str, at: str, dangling: bool
) -> None:
    root = tmp_path / "store"
    (root / at).parent.mkdir(parents=True, exist_ok=True)
    name = Path(at).name
    pointee = outside / ("missing" if dangling else {"a": "", "b": "b"}.get(name, name))
    (root / at).symlink_to(pointee)
    before = snapshot(outside)
    files = store(root)
    if operation == "read" and at.endswith(".lock"):
        assert files.read(TARGET) is None  # a read takes no lock: nothing followed either
    else:
        with pytest.raises(StoreError, match="symbolic link") as caught:
            OPERATIONS[operation](files)
        assert "follows no symbolic link inside its directory" in str(caught.value)
        assert str(root / at) in str(caught.value)
    assert snapshot(outside) == before
    assert not (outside / "missing").exists()


#: the shallow paths: a file directly in the directory is read with one open, the first
#: level below it is reached with one open (paths.Tree._first_level); a link there
#: must be refused as on the walk
SHALLOW = [("c.json", "c.json"), ("b/c.json", "b"), ("b/c.json", "b/c.json")]


@pytest.mark.parametrize("operation", ["read", "write", "adopt", "delete"])
@pytest.mark.parametrize(
    "where",
    [(target, at, dangling) for target, at in SHALLOW for dangling in (False, True)],
    ids=lambda where: f"{where[1]}{'-dangling' if where[2] else ''}",
)
def test_a_link_on_a_shallow_path_is_refused(
    tmp_path: Path, outside: Path, operation: str, where: tuple[str, str, bool]
) -> None:
    target, at, dangling = where
    root = tmp_path / "store"
    (root / at).parent.mkdir(parents=True, exist_ok=True)
    name = Path(at).name
    pointee = outside / ("missing" if dangling else name)
    (root / at).symlink_to(pointee)
    before = snapshot(outside)
    files = store(root)
    run = {
        "read": lambda: files.read(target),
        "write": lambda: files.write(target, VIEW, expected_version=None),
        "adopt": lambda: files.write(target, VIEW, expected_version=None, adopt=True),
        "delete": lambda: files.delete(target),
    }[operation]
    with pytest.raises(StoreError, match="symbolic link") as caught:
        run()
    assert str(root / at) in str(caught.value)
    assert snapshot(outside) == before
    assert not (outside / "missing").exists()


@pytest.mark.parametrize("target", ["c.json", "b/c.json"])
def test_a_shallow_path_reads_as_the_walk_reads_it(tmp_path: Path, target: str) -> None:
    """Missing directory, missing level, missing file: nothing (no error); a file or a
    FIFO where a directory goes: the walk's typed error; a FIFO as the file: empty."""
    files = store(tmp_path / "store")
    assert files.read(target) is None  # the configured directory does not exist
    (tmp_path / "store").mkdir()
    assert files.read(target) is None
    files.write(target, VIEW, expected_version=None)
    record = files.read(target)
    assert record is not None and dict(record.data) == VIEW
    (tmp_path / "store" / target).unlink()
    os.mkfifo(tmp_path / "store" / target)
    with pytest.raises(StoreError, match="does not hold json"):
        files.read(target)  # the FIFO read as empty, never blocked
    shutil.rmtree(tmp_path / "store")
    (tmp_path / "store").write_text("not a directory\n")
    with pytest.raises(StoreUnavailable, match="Not a directory"):
        files.read(target)


def test_a_link_inside_the_store_is_refused_too(tmp_path: Path) -> None:
    files = store(tmp_path)
    files.write("real/acct.json", VIEW, expected_version=None)
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with pytest.raises(StoreError, match="symbolic link"):
        files.read("alias/acct.json")


def test_a_temp_file_name_taken_by_a_link_is_refused(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(file_store._tmp, "tag", "fixed")
    monkeypatch.setattr(file_store, "_tmp_seq", itertools.count())
    (tmp_path / ".acct.json.tmp-fixed-0").symlink_to(outside / "missing")
    with pytest.raises(StoreError, match="symbolic link"):
        store(tmp_path).write("acct.json", VIEW, expected_version=None)
    assert not (outside / "missing").exists()
    assert not (tmp_path / "acct.json").exists()


def test_the_configured_directory_itself_may_be_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    files = store(tmp_path / "via")
    files.write("apps/acct.json", VIEW, expected_version=None)
    assert json.loads((tmp_path / "real/apps/acct.json").read_text()) == VIEW


# -- permissions, as root --------------------------------------------------------------

NOBODY = 65534
_CHILD = """
import json, os, sys
from types import SimpleNamespace
from rotator.backends.file import FileStore
from rotator.errors import StoreError
files = FileStore("files", SimpleNamespace(directory=sys.argv[1], mode=0o600))
view = {"access_token": "at-child", "token_type": "Bearer", "expires_at": "x"}
out = {"euid": os.geteuid()}
try:
    out["result"] = repr(eval(sys.argv[2]))
except StoreError as exc:
    out["error"] = type(exc).__name__
    out["message"] = str(exc)
print(json.dumps(out))
"""


def as_nobody(directory: Path, expression: str) -> dict[str, object]:
    """Run ``expression`` on a FileStore over ``directory`` in a child that is nobody."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("dropping privileges needs root and setpriv (util-linux)")
    tree = str(Path(rotator.__file__).resolve().parents[1])
    drop = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    child = subprocess.run(
        [*drop, sys.executable, "-c", _CHILD, str(directory), expression],
        env={"PYTHONPATH": tree, "PYTHONDONTWRITEBYTECODE": "1", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    answer: dict[str, object] = json.loads(child.stdout)
    assert answer["euid"] == NOBODY  # the case really ran without root's override
    return answer


@pytest.fixture
def roots_dir() -> Iterator[Path]:
    """A directory owned by root, 0755: nobody may enter and read, not write."""
    made = Path(tempfile.mkdtemp(prefix="rotator-perm-"))
    made.chmod(0o755)
    yield made
    shutil.rmtree(made)


def test_writing_where_the_user_may_not_is_a_permission_error(roots_dir: Path) -> None:
    answer = as_nobody(roots_dir, "files.write('acct.json', view, expected_version=None)")
    assert answer["error"] == "StorePermissionError"
    assert str(roots_dir) in str(answer["message"])
    assert "at-child" not in str(answer["message"])
    assert os.listdir(roots_dir) == []


def test_creating_a_directory_where_the_user_may_not_is_a_permission_error(
    roots_dir: Path,
) -> None:
    answer = as_nobody(roots_dir, "files.write('apps/acct.json', view, expected_version=None)")
    assert answer["error"] == "StorePermissionError"
    assert "cannot create the directory" in str(answer["message"])


def test_a_lock_file_the_user_may_not_write_is_a_permission_error(roots_dir: Path) -> None:
    store(roots_dir).write("acct.json", VIEW, expected_version=None)
    (roots_dir / "acct.json").chmod(0o644)  # readable, so only the lock stands in the way
    answer = as_nobody(roots_dir, "files.write('acct.json', view, expected_version=None)")
    assert answer["error"] == "StorePermissionError"
    assert ".acct.json.lock" in str(answer["message"])


def test_reading_a_file_the_user_may_not_read_is_a_permission_error(roots_dir: Path) -> None:
    store(roots_dir).write("acct.json", VIEW, expected_version=None)  # 0600, root's
    answer = as_nobody(roots_dir, "files.read('acct.json')")
    assert answer["error"] == "StorePermissionError"
    assert "cannot read" in str(answer["message"])


def test_validate_reports_a_directory_the_user_may_not_write(roots_dir: Path) -> None:
    answer = as_nobody(roots_dir, "files.validate()")
    assert "ValidationStatus.ERROR" in str(answer["result"])
    assert "not writable by this user" in str(answer["result"])


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a directory, the same directory bind-mounted read-only)."""
    source, view = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    view.mkdir()
    for argv in (["mount", "--bind", source, view], ["mount", "-o", "remount,bind,ro", view]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", view], capture_output=True, check=False)
            pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
    try:
        yield source, view
    finally:
        subprocess.run(["umount", view], check=True)


def test_a_read_only_file_system_is_a_permission_error(read_only_mount: tuple[Path, Path]) -> None:
    source, view = read_only_mount
    first = store(source).write("apps/acct.json", VIEW, expected_version=None)
    reader = store(view)
    record = reader.read("apps/acct.json")  # reading is allowed ...
    assert record is not None and record.version == first.version
    with pytest.raises(StorePermissionError, match="read-only file system"):  # ... writing not
        reader.write(
            "apps/acct.json", {**VIEW, "access_token": "x"}, expected_version=first.version
        )
    with pytest.raises(StorePermissionError):
        reader.write("new.json", VIEW, expected_version=None)
    assert reader.validate().status is ValidationStatus.ERROR
    after = store(source).read("apps/acct.json")
    assert after is not None and after.version == first.version


# -- special files where the store's files go -------------------------------------------


def test_a_fifo_where_the_file_goes_neither_blocks_nor_is_followed(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "acct.json")
    files = store(tmp_path)
    with pytest.raises(StoreError):  # read as empty: not json
        files.read("acct.json")
    with pytest.raises(StoreError, match="not written by rotator"):
        files.write("acct.json", VIEW, expected_version=None)


def test_a_fifo_where_the_lock_goes_is_a_store_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".acct.json.lock")
    with pytest.raises(StoreError, match=r"cannot lock .*\.acct\.json\.lock"):
        store(tmp_path).write("acct.json", VIEW, expected_version=None)
