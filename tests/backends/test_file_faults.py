"""File store faults surface as typed store errors, never as a raw OSError.

A raw OSError escaped the rotation's state-write retry (which handles
StoreError) and crashed the job; `rotator refresh` printed a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.backends.file import FileStore
from rotator.config.models import FileStoreSettings
from rotator.errors import StoreUnavailable


def test_a_lock_file_that_cannot_be_opened_is_store_unavailable(tmp_path: Path) -> None:
    store = FileStore("files", FileStoreSettings(type="file", directory=tmp_path))
    (tmp_path / ".acct.lock").mkdir()  # something else where the lock file goes
    with pytest.raises(StoreUnavailable, match="cannot write in"):
        store.write("acct", {"access_token": "x"}, expected_version=None)
