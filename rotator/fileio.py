"""Low-level file helpers shared by the file store, the spool and the console.

They live in the core, not in a store: the spool must not depend on a store
implementation. Each is counted in system calls, because the hot path (every
job reads its spool entry and its state) runs under many worker threads and
each call releases and retakes the GIL: no buffered layer, no ``fstat``,
``ioctl`` or ``lseek`` a plain ``open()`` would add.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from rotator.errors import ConfigError

__all__ = ["key_file", "read_fd", "read_file", "write_all"]


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


def _link_new(path: Path, data: bytes) -> bool:
    """``data`` at ``path`` whole and durable, unless ``path`` exists (False)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return True
    finally:
        temporary.unlink(missing_ok=True)


def key_file(
    path: Path, *, key_path: str, damaged: str, unwritable: Callable[[str], str] | None = None
) -> bytes:
    """A 32-byte key from its 0600 base64 file, made (and fsynced) on first use.

    Two processes starting at once agree, and neither ever reads a half-written
    key: the key is written whole to a temporary file beside ``path`` and linked
    into place (``link`` fails when ``path`` exists); the one that loses reads the
    winner's complete file. ``damaged`` and ``unwritable`` say what to do (the
    ConfigError names ``key_path``; ``unwritable`` gets the OS error's text);
    without ``unwritable`` the parent directory must exist and an OSError is the
    caller's.
    """
    raw: bytes | None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = None
    except OSError as exc:  # e.g. a file where a directory of the path should be
        if unwritable is None:
            raise
        raise ConfigError(unwritable(exc.strerror or str(exc)), path=key_path) from None
    if raw is None:
        raw = base64.b64encode(secrets.token_bytes(32)) + b"\n"
        try:
            if unwritable is not None:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _link_new(path, raw):
                return key_file(path, key_path=key_path, damaged=damaged, unwritable=unwritable)
        except OSError as exc:
            if unwritable is None:
                raise
            raise ConfigError(unwritable(exc.strerror or str(exc)), path=key_path) from None
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(damaged, path=key_path)
    return key
