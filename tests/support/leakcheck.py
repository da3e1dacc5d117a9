"""The suite-wide check that no secret reaches a log line or printed output.

Tests (and the emulators in tests/fakes) call :func:`register` with every
credential they create or that a vendor emulator issues. Everything rotator
prints in the suite is captured under :data:`LOG_DIR`: subprocess output (see
tests/support/proc.py) and in-process log lines (see conftest.py). At the end of the
session conftest.py scans all of it for every registered value and fails the
run if one is found, naming the file and the kind of secret, never the value.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

__all__ = ["LOG_DIR", "find_leaks", "log_file", "register"]

_lock = threading.Lock()
_known: dict[str, str] = {}

LOG_DIR = Path(os.environ.get("ROTATOR_TEST_LOG_DIR") or tempfile.mkdtemp(prefix="rotator-logs-"))
os.environ["ROTATOR_TEST_LOG_DIR"] = str(LOG_DIR)


def register(value: str, kind: str = "secret") -> str:
    """Remember a secret value the suite used; returns it for convenience."""
    if value and len(value) >= 6:
        with _lock:
            _known[value] = kind
    return value


def log_file(name: str) -> Path:
    """A fresh file under LOG_DIR for captured output."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    fd, path = tempfile.mkstemp(prefix=f"{safe}-", suffix=".log", dir=LOG_DIR)
    os.close(fd)
    return Path(path)


# Every registered value is at least this long (register() ignores shorter ones), so a
# value can only appear where its last _GRAM characters appear (the last, not the first:
# tokens share prefixes such as ``access-``, their ends are random).
_GRAM = 6
# Text is cut into chunks this long to index it, so the index of a large log stays small.
_CHUNK = 1 << 18


def _grams(text: str) -> set[str]:
    """Every _GRAM-character substring of ``text``, a chunk at a time."""
    grams: set[str] = set()
    for start in range(0, max(len(text) - _GRAM + 1, 0), _CHUNK):
        end = min(start + _CHUNK, len(text) - _GRAM + 1)
        grams.update({text[i : i + _GRAM] for i in range(start, end)})
    return grams


def find_leaks(directory: Path | None = None) -> list[str]:
    """One line per (file, kind) where a registered secret appears.

    A full suite registers thousands of values (every token an emulator issues) and
    captures hundreds of files: searching each file for each value took half a minute
    at the end of every run. Instead each file's substrings of the shortest value's
    length are indexed once, and only the values whose last characters occur are searched for.
    """
    with _lock:
        known = dict(_known)
    by_suffix: dict[str, list[str]] = {}
    for value in known:
        by_suffix.setdefault(value[-_GRAM:], []).append(value)
    suffixes = set(by_suffix)
    order = {value: index for index, value in enumerate(known)}
    found: list[str] = []
    for path in sorted((directory or LOG_DIR).rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        hits = {
            value
            for suffix in suffixes & _grams(text)
            for value in by_suffix[suffix]
            if value in text
        }
        # registration order, as before: the report is stable from run to run
        found.extend(
            f"{path.name}: a {known[value]} appears in captured output"
            for value in sorted(hits, key=order.__getitem__)
        )
    return found
