"""rotator.fileio.key_file: the one way the spool key and the console key are made and read."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from rotator.errors import ConfigError
from rotator.fileio import key_file


def test_a_key_is_made_once_0600_and_read_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = key_file(path, key_path="server.x", damaged="damaged")
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_file(path, key_path="server.x", damaged="damaged") == first


@pytest.mark.parametrize("content", [b"", b"not base64!\n", b"c2hvcnQ=\n"])
def test_a_damaged_key_file_is_refused_naming_the_key(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        key_file(path, key_path="server.x", damaged="it is damaged: restore it")
    assert "it is damaged: restore it" in str(refused.value)
    assert "server.x" in str(refused.value)


def test_an_unwritable_directory_is_a_config_error_only_when_asked(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "sub" / "k.key"  # a file stands where a directory should be
    with pytest.raises(ConfigError) as refused:
        key_file(path, key_path="server.y", damaged="d", unwritable=lambda e: f"cannot: {e}")
    assert "cannot: " in str(refused.value) and "server.y" in str(refused.value)
    with pytest.raises(OSError):
        key_file(path, key_path="server.y", damaged="d")
    assert not os.path.exists(path)


def _race(paths: list[str], barrier: Any, out: Any) -> None:
    for round_, path in enumerate(paths):
        barrier.wait()  # every racer at the start line of this round's key file
        try:
            out.put((round_, key_file(Path(path), key_path="server.x", damaged="damaged").hex()))
        except Exception as exc:  # the failure is the test's finding
            out.put((round_, f"{type(exc).__name__}: {exc}"))


ROUNDS = 15
RACERS = 6


def test_processes_starting_together_all_read_one_whole_key(tmp_path: Path) -> None:
    # replicas sharing a spool directory start at once: none may read the key file
    # half-written (it was created empty, then written: a racer read b"" as "damaged").
    # The racers are forked once and race through every round's fresh file together,
    # lined up by a barrier before each: ROUNDS races of RACERS processes, as with a
    # fork per racer per round (90 forks of the test process took ~10 s).
    context = multiprocessing.get_context("fork")
    paths = [tmp_path / f"r{round_}" / "spool.key" for round_ in range(ROUNDS)]
    for path in paths:
        path.parent.mkdir()
    barrier, out = context.Barrier(RACERS), context.Queue()
    racers = [
        context.Process(target=_race, args=([str(p) for p in paths], barrier, out))
        for _ in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    results = [out.get(timeout=60) for _ in range(ROUNDS * RACERS)]
    for racer in racers:
        racer.join(30)
        assert racer.exitcode == 0
    for round_, path in enumerate(paths):
        keys = {key for r, key in results if r == round_}
        assert len(keys) == 1 and len(next(iter(keys))) == 64, (round_, keys)
        assert sorted(p.name for p in path.parent.iterdir()) == ["spool.key"]  # no leftovers
