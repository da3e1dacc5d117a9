"""The file store's ownership rule (issue "hardening" 8, 6b), on real files.

A sink or state file that exists and was not written by rotator is refused
(StoreNotManaged) unless the sink says ``adopt: true``, as Vault and Secrets
Manager refuse a secret without their managed-by marker. A file rotator owns
that became unreadable is rewritten from the state, with a warning; the state
itself is never rewritten from nothing.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.backends.file import FileStore, render
from rotator.backends.file.store import MARKER
from rotator.config.models import Sink
from rotator.errors import StoreConflict, StoreDamaged, StoreNotManaged
from rotator.rotation.rotator import publish
from tests.support import leakcheck

TOKEN = leakcheck.register("at-own-1a2b3c4d5e6f", "access token")
VIEW = {"access_token": TOKEN, "token_type": "Bearer", "expires_at": "2030-01-01T00:00:00Z"}
NAMES = {"json": "app.json", "token": "app.token", "env": "app.env"}
FOREIGN = {
    "resolv.conf": b"nameserver 10.0.0.2\nsearch corp.example\n",
    "an app's json": b'{\n  "db": "postgres://app@db/app",\n  "debug": "false"\n}\n',
    "a one-line token": b"someone-elses-token\n",
    "an env file": b"ACCESS_TOKEN=theirs\nTOKEN_TYPE=Bearer\nEXPIRES_AT=never\n",
    "empty": b"",
}


def store(directory: Path) -> FileStore:
    return FileStore("files", SimpleNamespace(directory=directory, mode=0o600))


def sink(fmt: str, *, adopt: bool = False) -> Sink:
    return Sink(store="files", path=NAMES[fmt], format=fmt, adopt=adopt)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["json", "token", "env"])
@pytest.mark.parametrize("what", list(FOREIGN))
def test_a_foreign_file_is_refused_and_kept(tmp_path: Path, fmt: str, what: str) -> None:
    target = tmp_path / NAMES[fmt]
    target.write_bytes(FOREIGN[what])
    files = store(tmp_path)
    # as rotation publishes: read the version first, then write against it
    with pytest.raises(StoreNotManaged, match="set adopt: true on the sink") as caught:
        publish(files, sink(fmt), VIEW)
    assert str(target) in str(caught.value)
    assert "not written by rotator" in str(caught.value)
    with pytest.raises(StoreNotManaged):  # a create-only write (a new state) too
        files.write(NAMES[fmt], VIEW, expected_version=None, fmt=fmt)
    assert target.read_bytes() == FOREIGN[what]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=80), fmt=st.sampled_from(["json", "token", "env"]))
def test_no_foreign_content_is_ever_overwritten_without_adopt(content: bytes, fmt: str) -> None:
    """Whatever a foreign file holds (even exactly what rotator would write), and
    however often rotator tries, it stays as it was."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        target = root / NAMES[fmt]
        target.write_bytes(content)
        files = store(root)
        for _ in range(2):  # a refused attempt must not make the next one pass
            for expected in (None, "use-the-read"):
                try:
                    record = files.read(NAMES[fmt], fmt=fmt)
                    version = record.version if record else None
                except StoreDamaged as exc:
                    version = exc.version
                with pytest.raises(StoreNotManaged):
                    files.write(
                        NAMES[fmt],
                        VIEW,
                        expected_version=version if expected else None,
                        fmt=fmt,
                    )
        assert target.read_bytes() == content


@pytest.mark.parametrize("fmt", ["json", "token", "env"])
def test_adopt_takes_a_file_over_for_good(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / NAMES[fmt]
    target.write_bytes(FOREIGN["resolv.conf"])
    files = store(tmp_path)
    assert publish(files, sink(fmt, adopt=True), VIEW).changed
    assert target.read_bytes() == render(VIEW, fmt)  # the consumer's bytes, nothing added
    assert (tmp_path / f".{NAMES[fmt]}.lock").read_bytes() == MARKER
    # from now on rotator owns it: a sink without adopt writes it too
    assert publish(files, sink(fmt), {**VIEW, "access_token": "at-next"}).changed


@pytest.mark.parametrize("fmt", ["json", "token", "env"])
def test_what_rotator_wrote_stays_byte_exact_and_is_its_own(tmp_path: Path, fmt: str) -> None:
    files = store(tmp_path)
    first = publish(files, sink(fmt), VIEW)
    assert (tmp_path / NAMES[fmt]).read_bytes() == render(VIEW, fmt)
    again = publish(files, sink(fmt), VIEW)
    assert not again.changed and again.version == first.version
    assert publish(files, sink(fmt), {**VIEW, "access_token": "at-own-next"}).changed


@pytest.mark.parametrize("fmt", ["json", "token", "env"])
def test_a_file_from_a_rotator_without_the_marker_is_still_its_own(
    tmp_path: Path, fmt: str
) -> None:
    """An upgrade must not strand every file (and state) an earlier rotator wrote:
    it left an empty lock file beside a file holding exactly its rendering."""
    (tmp_path / NAMES[fmt]).write_bytes(render(VIEW, fmt))
    (tmp_path / f".{NAMES[fmt]}.lock").write_bytes(b"")
    files = store(tmp_path)
    assert publish(files, sink(fmt), {**VIEW, "access_token": "at-newer"}).changed
    assert (tmp_path / f".{NAMES[fmt]}.lock").read_bytes() == MARKER


def test_a_state_file_follows_the_same_rule(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    foreign = b'{\n  "refresh_token": "not-ours"\n}\n'
    (tmp_path / "state" / "acct").write_bytes(foreign)
    files = store(tmp_path)
    record = files.read("state/acct")
    assert record is not None
    with pytest.raises(StoreNotManaged):
        files.write("state/acct", {"refresh_token": "ours"}, expected_version=record.version)
    assert (tmp_path / "state" / "acct").read_bytes() == foreign


def test_a_deleted_path_is_no_longer_rotators(tmp_path: Path) -> None:
    files = store(tmp_path)
    files.write("app.json", VIEW, expected_version=None)
    files.delete("app.json")
    (tmp_path / "app.json").write_bytes(render(VIEW, "json"))  # someone else's, now
    with pytest.raises(StoreNotManaged):
        files.write("app.json", VIEW, expected_version=None, adopt=False)


DAMAGED = {
    "json": [b'{\n  "access_token": "at-tr', b"[1, 2]\n", b"\xff\xfe{"],
    "env": [
        render(VIEW, "env") + b"EXPIRES_AT='unterminated\n",
        b'ACCESS_TOKEN="half\n',
    ],
}


@pytest.mark.parametrize(
    ("fmt", "damage"), [(fmt, damage) for fmt, cases in DAMAGED.items() for damage in cases]
)
def test_an_unreadable_sink_rotator_owns_is_rewritten_with_a_warning(
    tmp_path: Path, fmt: str, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    files = store(tmp_path)
    publish(files, sink(fmt), VIEW)
    (tmp_path / NAMES[fmt]).write_bytes(damage)
    with pytest.raises(StoreDamaged):
        files.read(NAMES[fmt], fmt=fmt)
    with caplog.at_level(logging.WARNING, logger="rotator.backends.file"):
        result = publish(files, sink(fmt), VIEW)
    assert result.changed
    assert (tmp_path / NAMES[fmt]).read_bytes() == render(VIEW, fmt)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    # and with a belief of its version this process holds (no read first) as well
    (tmp_path / NAMES[fmt]).write_bytes(damage)
    assert publish(files, sink(fmt), VIEW, expected=result.version).changed


@pytest.mark.parametrize("fmt", ["json", "env"])
def test_an_unreadable_foreign_file_is_refused_not_rewritten(tmp_path: Path, fmt: str) -> None:
    damage = DAMAGED[fmt][0]
    (tmp_path / NAMES[fmt]).write_bytes(damage)
    with pytest.raises(StoreNotManaged):
        publish(store(tmp_path), sink(fmt), VIEW)
    assert (tmp_path / NAMES[fmt]).read_bytes() == damage
    assert publish(store(tmp_path), sink(fmt, adopt=True), VIEW).changed


def test_damaged_state_is_never_rewritten_from_nothing(tmp_path: Path) -> None:
    """The state holds the grant: a damaged one is an error for a human to repair,
    and a writer holding an older version still loses its compare-and-set."""
    files = store(tmp_path)
    first = files.write("state/acct", {"refresh_token": "rt-kept"}, expected_version=None)
    damaged = b'{\n  "refresh_token": "rt-ke'
    (tmp_path / "state" / "acct").write_bytes(damaged)
    with pytest.raises(StoreDamaged, match="does not hold json data"):
        files.read("state/acct")
    with pytest.raises(StoreConflict):
        files.write("state/acct", {"lease_owner": "x"}, expected_version=first.version)
    assert (tmp_path / "state" / "acct").read_bytes() == damaged


def test_a_line_injected_into_an_env_sink_is_gone_after_the_next_publish(tmp_path: Path) -> None:
    files = store(tmp_path)
    publish(files, sink("env"), VIEW)
    target = tmp_path / NAMES["env"]
    target.write_bytes(target.read_bytes() + b"LD_PRELOAD=/tmp/evil.so\n")
    assert publish(files, sink("env"), VIEW).changed
    assert target.read_bytes() == render(VIEW, "env")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.binary(max_size=120), adopt=st.booleans())
def test_the_lock_file_says_exactly_one_marker_whatever_it_held(before: bytes, adopt: bool) -> None:
    """The marker overwrites the lock file's head and cuts only what is left over
    (a new lock file is empty: no cut): whatever a lock file held before, it
    holds exactly ``managed-by: rotator`` after a write, and exactly
    ``managed-by: none`` after a refusal or a delete."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        lock = root / ".app.json.lock"
        lock.write_bytes(before)
        (root / "app.json").write_bytes(b'{"db": "theirs"}\n')
        files = store(root)
        if adopt:
            files.write("app.json", VIEW, expected_version=None, adopt=True)
            assert lock.read_bytes() == MARKER
            files.delete("app.json")
            assert lock.read_bytes() == b"managed-by: none\n"
        elif before == MARKER:
            files.write("app.json", VIEW, expected_version=None, adopt=True)
            assert lock.read_bytes() == MARKER
        else:
            with pytest.raises(StoreNotManaged):
                files.write("app.json", VIEW, expected_version=None)
            assert lock.read_bytes() == b"managed-by: none\n"
            assert (root / "app.json").read_bytes() == b'{"db": "theirs"}\n'
        fresh = root / ".new.json.lock"
        files.write("new.json", VIEW, expected_version=None)
        assert fresh.read_bytes() == MARKER


# -- a lock file this write created is read only when its marker decides something ------


def _writes(other: FileStore, root: Path) -> None:
    other.write("d/app.json", {**VIEW, "by": "other"}, expected_version=None)


def _writes_and_deletes(other: FileStore, root: Path) -> None:
    other.write("d/app.json", VIEW, expected_version=None)
    other.delete("d/app.json")


def _refuses(other: FileStore, root: Path) -> None:
    (root / "d/app.json").write_bytes(b"theirs\n")
    with pytest.raises(StoreNotManaged):
        other.write("d/app.json", VIEW, expected_version=None)


#: what another writer may do with the path between this write creating the lock file
#: and taking the lock (each leaves the lock file as rotator would)
BETWEEN = {
    "nothing": lambda other, root: None,
    "it writes the path": _writes,
    "it writes and deletes the path": _writes_and_deletes,
    "it refuses a foreign file": _refuses,
    "a foreign file appears": lambda other, root: (root / "d/app.json").write_bytes(b"theirs\n"),
}


@pytest.mark.parametrize("adopt", [False, True], ids=["", "adopt"])
@pytest.mark.parametrize("between", list(BETWEEN))
def test_a_writer_that_took_a_new_lock_file_first_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, between: str, adopt: bool
) -> None:
    """A first write creates the lock file and reads its marker only when the target
    exists (nothing else to decide). Whatever another writer did in between (it takes
    the lock first): a file it wrote is never overwritten unseen, a foreign file is
    refused unless adopted, and the lock file holds exactly one marker afterwards."""
    from rotator.backends.file import locks

    (tmp_path / "d").mkdir()
    ours, other = store(tmp_path), store(tmp_path)
    real_flock = locks.fcntl.flock
    done: list[bool] = []

    def other_first(fd: int, operation: int) -> None:
        if not done:  # our lock file exists now, and we do not hold it yet
            done.append(True)
            monkeypatch.setattr(locks.fcntl, "flock", real_flock)
            BETWEEN[between](other, tmp_path)
        real_flock(fd, operation)

    monkeypatch.setattr(locks.fcntl, "flock", other_first)
    target, lock = tmp_path / "d/app.json", tmp_path / "d/.app.json.lock"
    before = target.read_bytes() if target.exists() else None
    outcome: type[Exception] | None = None
    try:
        ours.write("d/app.json", VIEW, expected_version=None, adopt=adopt)
    except (StoreConflict, StoreNotManaged) as exc:
        outcome = type(exc)
    assert done
    foreign = between in ("it refuses a foreign file", "a foreign file appears")
    if between == "it writes the path" and not adopt:
        assert outcome is StoreConflict
        assert b'"by": "other"' in target.read_bytes()
    elif foreign and not adopt:
        assert outcome is StoreNotManaged
        assert target.read_bytes() == b"theirs\n"
    else:
        assert outcome is None
        assert target.read_bytes() == render(VIEW, "json")
    expected_marker = b"managed-by: none\n" if outcome is StoreNotManaged else MARKER
    assert lock.read_bytes() == expected_marker
    assert before is None
