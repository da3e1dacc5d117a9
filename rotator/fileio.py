"""Low-level file helpers shared by the file store and the spool.

They live in the core, not in a store: the spool must not depend on a store
implementation. Each is counted in system calls, because the hot path (every
job reads its spool entry and its state) runs under many worker threads and
each call releases and retakes the GIL: no buffered layer, no ``fstat``,
``ioctl`` or ``lseek`` a plain ``open()`` would add.
"""

from __future__ import annotations

import os

__all__ = ["read_fd", "read_file", "write_all"]


def read_fd(fd: int) -> bytes:
    """Everything left to read on ``fd`` (one ``read`` for a small file, plus the EOF one)."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_file(path: str) -> bytes:
    """The whole file, with three system calls for a small one (FileNotFoundError if none)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def write_all(fd: int, content: bytes) -> None:
    """Write all of ``content`` (``os.write`` may write less than asked)."""
    view = memoryview(content)
    while view:
        written = os.write(fd, view)
        view = view[written:]
