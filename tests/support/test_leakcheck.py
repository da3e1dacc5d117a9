"""The leak check itself must catch a leak (or every other test proves nothing)."""

from __future__ import annotations

from pathlib import Path

from tests.support import leakcheck


def test_a_registered_secret_in_captured_output_is_found(tmp_path: Path) -> None:
    value = leakcheck.register("leak-probe-value-9f8e7d", "probe secret")
    (tmp_path / "daemon.log").write_text(f'{{"event": "oops", "token": "{value}"}}\n')
    (tmp_path / "clean.log").write_text('{"event": "rotated", "token": "***"}\n')
    leaks = leakcheck.find_leaks(tmp_path)
    assert leaks == ["daemon.log: a probe secret appears in captured output"]
    assert value not in "".join(leaks)
