"""The lock file beside each path of the file store: compare-and-set and ownership.

``.NAME.lock`` is held with an exclusive ``flock`` while a write compares the
version and renames, so two processes on one host cannot both win. It also
carries the ownership marker (``managed-by: rotator`` once rotator wrote the
path, ``managed-by: none`` after a refusal or a delete): see the store's module.

Kept apart from the store (rotator/backends/file/store.py), which keeps the
decisions: what a marker means for an existing file, when to refuse.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass

from rotator.backends.file.paths import Tree

__all__ = ["FILE_FLAGS", "MARKER", "NOT_MANAGED", "Held", "LockFiles", "mark", "marker"]

#: what the lock file holds once rotator wrote the path (NOT_MANAGED: refused or deleted)
MARKER = b"managed-by: rotator\n"
NOT_MANAGED = b"managed-by: none\n"
FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Held:
    """One path under its lock: the directory, the lock file and what it said."""

    dir_fd: int
    name: str
    lock_fd: int
    #: the lock file existed before this call (a fresh one proves nothing)
    lock_existed: bool
    #: what the lock file held when the lock was taken; None: not read yet (only for
    #: a lock file this call created, see :func:`marker`)
    marker: bytes | None


def marker(held: Held) -> bytes:
    """What the lock file held when the lock was taken, read under the lock.

    Read even when this call created the lock file, whenever it decides
    something: a concurrent writer may have taken the lock first and marked the
    path. It decides nothing when the target is missing and the path is to be
    marked rotator's (:func:`mark`): the first write of every new path.
    """
    if held.marker is None:
        held.marker = os.pread(held.lock_fd, 64, 0)
    return held.marker


def mark(held: Held, new: bytes) -> None:
    """Make the lock file hold exactly ``new``."""
    if held.marker is None and new == MARKER:
        # a lock file this call created holds nothing, or what a writer that took the
        # lock before this one wrote: MARKER or NOT_MANAGED, never longer than MARKER.
        # Writing MARKER over it leaves exactly MARKER: nothing to read or cut.
        os.pwrite(held.lock_fd, new, 0)
        held.marker = new
        return
    before = marker(held)
    if before != new:
        os.pwrite(held.lock_fd, new, 0)
        if len(before) > len(new):  # a new lock file is empty: nothing to cut
            os.ftruncate(held.lock_fd, len(new))
        held.marker = new


class LockFiles:
    """The lock files of one store's paths."""

    def __init__(self, tree: Tree) -> None:
        self._tree = tree

    @contextlib.contextmanager
    def locked(self, parts: tuple[str, ...], *, new: bool = False) -> Iterator[Held]:
        """``parts`` under its lock, its directory walked (and created) once."""
        dir_fd = self._tree.parent(parts, create=True)
        try:
            lock_fd, existed = self.open_lock(dir_fd, parts, new=new)
            try:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX)
                    # a lock file this call created is read only when its marker decides
                    # something (marker()); one that existed is read now
                    found = os.pread(lock_fd, 64, 0) if existed else None
                except OSError as exc:  # a FIFO or a socket where the lock file goes
                    where = self._tree.show((*parts[:-1], f".{parts[-1]}.lock"))
                    raise self._tree.error(exc, "lock", where) from None
                yield Held(dir_fd, parts[-1], lock_fd, existed, found)
            finally:
                os.close(lock_fd)  # closing releases the lock
        finally:
            os.close(dir_fd)

    def open_lock(self, dir_fd: int, parts: tuple[str, ...], *, new: bool) -> tuple[int, bool]:
        """The lock file's descriptor, and whether it existed before this call.

        ``new``: the caller believes the path is new (it writes against no version),
        so its lock file most likely is too: it is created first, and opened only if
        it exists. Either order gives the same answer; the likely one saves the
        failing ``open`` (one system call, one hand-over of the interpreter lock).
        """
        lock = f".{parts[-1]}.lock"
        shown = (*parts[:-1], lock)
        for _ in range(3):  # created, or removed, by someone else in between: look again
            if new:
                opened = self._create(dir_fd, lock, shown) or self._open(dir_fd, lock, shown)
            else:
                opened = self._open(dir_fd, lock, shown) or self._create(dir_fd, lock, shown)
            if opened is not None:
                return opened
        raise self._tree.error(OSError(errno.EAGAIN, "the lock file keeps changing"), "lock", lock)

    def _open(self, dir_fd: int, lock: str, shown: tuple[str, ...]) -> tuple[int, bool] | None:
        try:
            return os.open(lock, os.O_RDWR | FILE_FLAGS, dir_fd=dir_fd), True
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._tree.refusal(exc, dir_fd, lock, "lock", shown) from None

    def _create(self, dir_fd: int, lock: str, shown: tuple[str, ...]) -> tuple[int, bool] | None:
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | FILE_FLAGS
        try:
            return os.open(lock, flags, 0o600, dir_fd=dir_fd), False
        except FileExistsError:
            return None
        except OSError as exc:
            raise self._tree.refusal(exc, dir_fd, lock, "lock", shown) from None
