"""The leak check itself must catch a leak (or every other test proves nothing)."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import leakcheck


def test_a_registered_secret_in_captured_output_is_found(tmp_path: Path) -> None:
    value = leakcheck.register("leak-probe-value-9f8e7d", "probe secret")
    (tmp_path / "daemon.log").write_text(f'{{"event": "oops", "token": "{value}"}}\n')
    (tmp_path / "clean.log").write_text('{"event": "rotated", "token": "***"}\n')
    leaks = leakcheck.find_leaks(tmp_path)
    assert leaks == ["daemon.log: a probe secret appears in captured output"]
    assert value not in "".join(leaks)


# Line ends are left out (files are read back with universal newlines), and lone
# surrogates (they cannot be written as UTF-8).
_TEXT = st.characters(exclude_characters="\r\n", exclude_categories=("Cs",))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.text(_TEXT, max_size=40),
    value=st.text(_TEXT, min_size=6, max_size=20),
    after=st.text(_TEXT, max_size=40),
    chunk=st.integers(min_value=1, max_value=16),
)
def test_a_value_is_found_wherever_it_lies_and_a_near_miss_is_not(
    tmp_path_factory: pytest.TempPathFactory, before: str, value: str, after: str, chunk: int
) -> None:
    # The scan indexes each file a chunk at a time by the values' last characters: a value
    # must be found across any chunk boundary, exactly where a plain search finds it. The
    # registry is swapped for the example's own (an arbitrary text registered for the
    # session would fail the session's scan).
    folder = tmp_path_factory.mktemp("scan")
    (folder / "hit.log").write_text(before + value + after, encoding="utf-8")
    (folder / "miss.log").write_text(before + value[:-1], encoding="utf-8")
    known = {value: "probe secret", value[::-1] + "!": "other secret"}
    with patch.object(leakcheck, "_known", known), patch.object(leakcheck, "_CHUNK", chunk):
        leaks = leakcheck.find_leaks(folder)
    plain = [
        f"{path.name}: a {kind} appears in captured output"
        for path in sorted(folder.iterdir())
        for secret, kind in known.items()
        if secret in path.read_text(encoding="utf-8")
    ]
    assert leaks == plain
    assert "hit.log: a probe secret appears in captured output" in leaks
