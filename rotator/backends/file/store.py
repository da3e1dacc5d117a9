"""The file store: one file per path under a directory.

Writes are atomic and durable: a temp file in the same directory, fsync of the
file, rename over the target, fsync of the directory. Compare-and-set holds an
exclusive ``flock`` on a sibling lock file (``.NAME.lock``) while it compares
the version (a hash of the current contents) and renames, so two processes on
one host cannot both win. Files are 0600 (configurable), directories the store
creates 0700.

Ownership, as Vault's metadata and Secrets Manager's tags: the lock file holds
``managed-by: rotator`` once rotator has written the path, so the consumer's
file keeps its exact bytes. An existing file without that marker (an app's
``app.json``, ``resolv.conf``) is refused with StoreNotManaged unless the sink
says ``adopt: true``. A file written by a rotator from before the marker (an
empty lock file beside it, contents exactly as rotator renders them) counts as
rotator's and gets the marker on its next write.

Every path is checked and walked by :mod:`.paths`: no symbolic link below the
directory is followed, for reads, writes, locks, temp files and renames.

The hot path is counted in system calls (each one releases and retakes the GIL
under 16 workers): reads are ``open``/``read``/``close`` without the buffered
layer's ``fstat``/``ioctl``/``lseek``; a file directly in the directory is read
with one ``open`` (no directory descriptor), the first level below it is
reached in one ``open`` (:mod:`.paths`); the lock file a write has just created
is not read when the target is missing (:mod:`.locks`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets as _random
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rotator.backends.base import Record, Validation, ValidationStatus, Version, WriteResult
from rotator.backends.file.formats import canonical, parse, render, version
from rotator.backends.file.locks import (
    FILE_FLAGS,
    MARKER,
    NOT_MANAGED,
    Held,
    LockFiles,
    mark,
    marker,
)
from rotator.backends.file.paths import Tree
from rotator.errors import StoreConflict, StoreDamaged, StoreError, StoreNotManaged
from rotator.fileio import read_fd, write_all
from rotator.tokens import ViewValue

__all__ = ["MARKER", "FileStore"]

_log = logging.getLogger("rotator.backends.file")

#: O_NONBLOCK: a FIFO put where the file goes reads as empty instead of blocking the
#: job forever (regular files ignore the flag)
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | FILE_FLAGS

#: temp file names: a per-process prefix (pid and a random tag: a restarted
#: container reuses its PID, and a crash can leave a temp file behind) and a counter
_tmp_seq = itertools.count()
_tmp = {"tag": f"{os.getpid()}-{_random.token_hex(4)}"}


def _after_fork() -> None:
    _tmp["tag"] = f"{os.getpid()}-{_random.token_hex(4)}"


os.register_at_fork(after_in_child=_after_fork)


def _readable(raw: bytes, fmt: str) -> bool:
    try:
        parse(raw, fmt)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


class FileStore:
    kind: ClassVar[str] = "file"

    def __init__(self, name: str, settings: Any) -> None:
        self.name = name
        self.directory = Path(settings.directory)
        self.mode: int = settings.mode
        self._tree = Tree(self.directory, name)
        self._locks = LockFiles(self._tree)

    # -- ownership -------------------------------------------------------------------

    @staticmethod
    def _owned(held: Held, current: bytes, fmt: str) -> bool:
        found = marker(held)
        if found == MARKER:
            return True
        # before the marker existed, rotator still always left an (empty) lock file
        return held.lock_existed and found == b"" and canonical(current, fmt)

    # -- reading -------------------------------------------------------------------

    def _open_target(self, dir_fd: int, parts: tuple[str, ...]) -> int | None:
        try:
            return os.open(parts[-1], _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._tree.refusal(exc, dir_fd, parts[-1], "read", parts) from None

    def _read_fd(self, fd: int, parts: tuple[str, ...]) -> bytes:
        try:
            return read_fd(fd)
        except OSError as exc:
            raise self._tree.error(exc, "read", self._tree.show(parts)) from None

    def _open_for_read(self, parts: tuple[str, ...]) -> int | None:
        if len(parts) == 1:
            # a file directly in the configured directory: O_NOFOLLOW on the one
            # component below it is the walk's guarantee, without the directory's
            # open and close; any failure but absence goes the walk's way to be named
            try:
                return os.open(self._tree.below(parts[0]), _READ_FLAGS)
            except FileNotFoundError:
                return None
            except OSError:
                pass
        try:
            dir_fd = self._tree.parent(parts, create=False)
        except FileNotFoundError:
            return None
        try:
            return self._open_target(dir_fd, parts)
        finally:
            os.close(dir_fd)

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        parts = self._tree.parts(path)
        fd = self._open_for_read(parts)
        if fd is None:
            return None
        try:
            raw = self._read_fd(fd, parts)
        finally:
            os.close(fd)
        try:
            data = parse(raw, fmt)
        except (ValueError, UnicodeDecodeError):
            raise StoreDamaged(
                f"{self._tree.show(parts)} does not hold {fmt} data (damaged, or written by "
                "something else)",
                store=self.name,
                path=path,
                version=version(raw),
            ) from None
        return Record(data=data, version=version(raw))

    # -- writing -------------------------------------------------------------------

    def write(
        self,
        path: str,
        data: Mapping[str, ViewValue],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult:
        parts = self._tree.parts(path)
        new = render(data, fmt)
        with self._locks.locked(parts, new=expected_version is None) as held:
            fd = self._open_target(held.dir_fd, parts)
            try:
                current = self._read_fd(fd, parts) if fd is not None else None
                if current is not None and not self._owned(held, current, fmt) and not adopt:
                    mark(held, NOT_MANAGED)  # an empty lock must not pass for an old one
                    raise StoreNotManaged(
                        f"{self._tree.show(parts)} exists and was not written by rotator (its "
                        f"lock file .{parts[-1]}.lock does not say {MARKER.decode().strip()}); "
                        "set adopt: true on the sink to take it over",
                        store=self.name,
                        path=path,
                    )
                current_version = version(current) if current is not None else None
                if current_version != expected_version and not (adopt and expected_version is None):
                    raise StoreConflict(
                        f"{path} changed since it was read (compare-and-set lost)",
                        store=self.name,
                        path=path,
                    )
                if current is not None and current == new and fd is not None:
                    mark(held, MARKER)
                    if (os.fstat(fd).st_mode & 0o777) != self.mode:
                        os.fchmod(fd, self.mode)
                    return WriteResult(version(current), changed=False)
            except OSError as exc:
                raise self._tree.error(exc, "write", self._tree.show(parts)) from None
            finally:
                if fd is not None:
                    os.close(fd)
            if current is not None and not _readable(current, fmt):
                # a file of ours that a human or a crash left unreadable: we own it, so
                # the sink is rewritten from the state instead of failing every cycle
                _log.warning(
                    "file store %s: rewriting %s, which held unreadable %s data",
                    self.name,
                    self._tree.show(parts),
                    fmt,
                )
            try:
                # before the data: a crash in between leaves a marked path, never an
                # unmarked file that rotator wrote
                mark(held, MARKER)
            except OSError as exc:
                raise self._tree.error(exc, "write", self._tree.show(parts)) from None
            self._replace(held.dir_fd, parts, new)
            return WriteResult(version(new), changed=True)

    def _replace(self, dir_fd: int, parts: tuple[str, ...], content: bytes) -> None:
        tmp = f".{parts[-1]}.tmp-{_tmp['tag']}-{next(_tmp_seq)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | FILE_FLAGS
        try:
            fd = os.open(tmp, flags, self.mode, dir_fd=dir_fd)
        except OSError as exc:
            raise self._tree.refusal(exc, dir_fd, tmp, "write", (*parts[:-1], tmp)) from None
        created = True
        try:
            try:
                os.fchmod(fd, self.mode)  # the umask must not widen or narrow it
                write_all(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename replaces a link rather than following it, but the target was
            # opened with O_NOFOLLOW under the lock, so it is no link here
            os.replace(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            created = False
            os.fsync(dir_fd)
        except OSError as exc:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
            raise self._tree.error(exc, "write", self._tree.show(parts)) from None

    def delete(self, path: str) -> None:
        parts = self._tree.parts(path)
        with self._locks.locked(parts) as held:
            try:
                found = os.stat(parts[-1], dir_fd=held.dir_fd, follow_symlinks=False)
                if stat.S_ISLNK(found.st_mode):
                    # unlinking would follow nothing, but a link is never rotator's file
                    raise self._tree.link_refused("delete", parts)
                os.unlink(parts[-1], dir_fd=held.dir_fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._tree.error(exc, "delete", self._tree.show(parts)) from None
            # as Vault drops the metadata: a file someone creates here later is not ours
            with contextlib.suppress(OSError):
                mark(held, NOT_MANAGED)

    def validate(self, probe_path: str | None = None) -> Validation:
        probe = (f".rotator-probe-{os.getpid()}",)
        try:
            dir_fd = self._tree.parent(probe, create=True)
            try:
                self._replace(dir_fd, probe, b"probe\n")
                os.unlink(probe[0], dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except StoreError as exc:
            return Validation(ValidationStatus.ERROR, str(exc))
        except OSError as exc:
            return Validation(ValidationStatus.ERROR, str(self._tree.error(exc, "write", probe)))
        return Validation(ValidationStatus.READY, f"directory {self.directory} is writable")

    def close(self) -> None:
        return None


if TYPE_CHECKING:
    from rotator.backends.base import StoreFactory

    #: mypy's proof that the class is a store factory (see rotator.backends.registry)
    _CONFORMS: StoreFactory = FileStore
