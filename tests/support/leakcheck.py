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


def find_leaks(directory: Path | None = None) -> list[str]:
    """One line per (file, kind) where a registered secret appears."""
    with _lock:
        known = dict(_known)
    found: list[str] = []
    for path in sorted((directory or LOG_DIR).rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for value, kind in known.items():
            if value in text:
                found.append(f"{path.name}: a {kind} appears in captured output")
    return found
