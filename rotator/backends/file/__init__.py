"""The file store (``rotator.backends.file:FileStore``): see :mod:`.store`."""

from __future__ import annotations

from rotator.backends.file.formats import render
from rotator.backends.file.store import FileStore

__all__ = ["FileStore", "render"]
