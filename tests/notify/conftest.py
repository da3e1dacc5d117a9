"""Notify tests never sleep between webhook attempts (rotator.waits); ``store`` is a file
state store of their own, ``receiver`` a verifying webhook receiver whose URL and secret
are in the environment as HOOK_URL and HOOK_SECRET."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator import waits
from rotator.backends.file import FileStore
from rotator.config.models import FileStoreSettings
from tests.notify.kit import HOOK_SECRET, Receiver


@pytest.fixture(autouse=True)
def _no_waiting() -> Iterator[None]:
    before = waits.is_testing()
    waits.set_testing(True)
    yield
    waits.set_testing(before)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore("files", FileStoreSettings(type="file", directory=tmp_path / "state"))


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    r = Receiver()
    monkeypatch.setenv("HOOK_URL", r.url)
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    yield r
    r.close()
