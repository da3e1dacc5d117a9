"""Alert tests never sleep (every retry pause goes through rotator.waits); ``store``
is a file state store of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator import waits
from rotator.backends.file import FileStore
from rotator.config.models import FileStoreSettings


@pytest.fixture(autouse=True)
def _no_waiting() -> Iterator[None]:
    before = waits.is_testing()  # a suite-wide switch set elsewhere stays as it was
    waits.set_testing(True)
    yield
    waits.set_testing(before)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore("files", FileStoreSettings(type="file", directory=tmp_path / "state"))
