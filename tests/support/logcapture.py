"""Capture the daemon's structured log lines in a test, whatever structlog has cached.

``structlog.testing.capture_logs`` swaps the processors of *new* loggers only:
rotator configures ``cache_logger_on_first_use``, so a module logger that
another test already used keeps writing past it, and the capture comes back
empty depending on test order (a reload test failed in full runs, passed
alone). The session routes every line through the stdlib root logger as JSON
(tests/conftest.py), so a root handler that decodes those lines sees them all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog

__all__ = ["captured_logs", "keep_test_logging"]


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = json.loads(record.getMessage())
        except ValueError:
            return
        if isinstance(entry, dict):
            # the key structlog.testing.capture_logs uses, for the same assertions
            entry.setdefault("log_level", entry.get("level"))
            self.entries.append(entry)


@contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every JSON log line written inside the block, decoded, in order."""
    collector = _Collector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield collector.entries
    finally:
        root.removeHandler(collector)


@pytest.fixture(autouse=True)
def keep_test_logging() -> Iterator[None]:
    """``main()`` configures logging for the process; give the suite's capture back
    after it. Autouse where imported (a module that runs ``main()`` in-process)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
