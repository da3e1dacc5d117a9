"""Paths inside a file store: checked at run time, resolved without following a link.

A sink or state path comes from configuration (or a command line) and names a
file *inside* the store's directory. Two things could take it out:

- the text itself: an absolute path, a ``..`` (also spelled ``%2e%2e``), a NUL
  or a control character. Those are refused before any system call, with a
  StoreError that says what a valid path looks like, never a traceback.
- a symbolic link below the directory (``tokens -> /elsewhere``, a dangling
  ``.acct.json.lock``): following it would read, write, lock or create a file
  outside the store. Every component is therefore opened relative to its
  parent (``dir_fd``) with ``O_NOFOLLOW``, so the kernel refuses a link at the
  moment of use; checking with ``lstat`` first and opening afterwards would
  race a link swapped in between.

The configured directory itself may be reached through links: an administrator
chose it, and systems routinely link ``/var/run`` or a state directory.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from pathlib import Path
from urllib.parse import unquote

from rotator.errors import StoreError, StorePermissionError, StoreUnavailable

__all__ = ["SYMLINK_RULE", "Tree"]

SYMLINK_RULE = (
    "the file store follows no symbolic link inside its directory; replace the link "
    "with a real directory or file, or point the store's directory at the target"
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


class Tree:
    """The store's directory, and the safe way to reach a path below it."""

    def __init__(self, directory: Path, store: str) -> None:
        self.directory = directory
        self.store = store
        self._prefix = os.fspath(directory)

    # -- the text of a path --------------------------------------------------------

    def parts(self, path: str) -> tuple[str, ...]:
        """The components of ``path``; a StoreError unless it names a file in the store."""
        # Every write and read asks, with the same few paths: a printable path without
        # a percent sign decodes to itself and holds no control character (every Cc
        # character is unprintable), so the per-character look is for the others.
        plain = "%" not in path and path.isprintable()
        decoded = path if plain else unquote(path)
        for text in () if plain else (path, decoded):
            if any(unicodedata.category(char) == "Cc" for char in text):
                raise self._bad(
                    path.encode("unicode_escape").decode("ascii"),
                    "contains a control character (NUL, newline, escape...); use printable names",
                )
        parts = tuple(part for part in path.split("/") if part not in ("", "."))
        decoded_parts = parts if plain else [p for p in decoded.split("/") if p not in ("", ".")]
        if (
            path.startswith("/")
            or decoded.startswith("/")
            or not parts
            or ".." in parts
            or ".." in decoded_parts
        ):
            raise self._bad(
                path,
                f"must be relative to {self.directory} and stay inside it "
                "(no leading /, no '..' even percent-encoded, not empty)",
            )
        last = parts[-1]
        if last.startswith(".") and (
            last.endswith(".lock") or ".tmp-" in last or last.startswith(".rotator-probe-")
        ):
            raise self._bad(
                path,
                "is named like the store's own lock or temp files (.NAME.lock, .NAME.tmp-*); "
                "choose another name",
            )
        return parts

    def _bad(self, shown: str, rule: str) -> StoreError:
        return StoreError(f"path {shown!r} {rule}", store=self.store, path=shown)

    def show(self, parts: tuple[str, ...]) -> str:
        return str(self.directory.joinpath(*parts))

    # -- walking -------------------------------------------------------------------

    def parent(self, parts: tuple[str, ...], *, create: bool) -> int:
        """A descriptor of the directory holding ``parts[-1]``; the caller closes it.

        Missing directories are created 0700 when ``create``; otherwise a missing
        one raises FileNotFoundError (nothing there to read). Every other failure
        is a StoreError.
        """
        if len(parts) > 1:
            first = self._first_level(parts[0], create)
            if first is not None:
                return self._walk(first, parts, 1, create)
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
            self.create_root()
            fd = self._open_root()
        except OSError as exc:
            raise self.error(exc, "open the directory", self.directory) from None
        return self._walk(fd, parts, 0, create)

    def below(self, name: str) -> str:
        """The path of ``name`` directly in the configured directory (for one ``open``
        with ``O_NOFOLLOW``, which refuses ``name`` if it is a link: the walk's rule)."""
        return os.path.join(self._prefix, name)

    def _first_level(self, name: str, create: bool) -> int | None:
        """The directory ``name`` directly below the configured one, in one ``open``;
        None when that open fails for any reason but absence (the walk then names it).

        Opening ``DIRECTORY/name`` with ``O_NOFOLLOW`` gives the walk's guarantee:
        the configured directory may be reached through links, and ``name``, the
        only component below it in that path, is refused if it is one, at the
        moment of use. It saves the walk's ``open`` and ``close`` of the configured
        directory (two system calls of every state read and write).
        """
        try:
            return os.open(self.below(name), _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                raise  # the configured directory or this level: either way nothing to read
            return None  # the walk creates what is missing
        except OSError:
            return None  # a link, a file, a permission: the walk tells which

    def _walk(self, fd: int, parts: tuple[str, ...], done: int, create: bool) -> int:
        """From ``fd`` (the directory holding ``parts[done]``) down to the one holding
        ``parts[-1]``, each level relative to its parent; ``fd`` is consumed."""
        try:
            for depth in range(done, len(parts) - 1):
                below = self._subdir(fd, parts[depth], create, parts[: depth + 1])
                os.close(fd)
                fd = below
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_root(self) -> int:
        try:
            return os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self.error(exc, "open the directory", self.directory) from None

    def _subdir(self, fd: int, name: str, create: bool, shown: tuple[str, ...]) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            raise self.refusal(exc, fd, name, "open the directory", shown) from None
        try:
            # mkdir(parents=True) would give missing levels the umask's default (0755)
            os.mkdir(name, 0o700, dir_fd=fd)
        except FileExistsError:
            pass  # made by someone else meanwhile (or a dangling link: refused below)
        except OSError as exc:
            raise self.refusal(exc, fd, name, "create the directory", shown) from None
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise self.refusal(exc, fd, name, "open the directory", shown) from None

    def create_root(self) -> None:
        """The configured directory and its missing parents, each 0700."""
        directory = self.directory
        missing = [d for d in (directory, *directory.parents) if not d.exists()]
        try:
            for level in reversed(missing):
                level.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise self.error(exc, "create the directory", directory) from None

    # -- errors --------------------------------------------------------------------

    def refusal(
        self, exc: OSError, dir_fd: int, name: str, doing: str, shown: tuple[str, ...]
    ) -> StoreError:
        """The error for ``exc`` on ``name`` in ``dir_fd``; a link there is named as such.

        ``O_NOFOLLOW`` reports a link as ELOOP, ``O_DIRECTORY|O_NOFOLLOW`` as
        ENOTDIR, ``O_CREAT|O_EXCL`` on a dangling one as EEXIST: one ``lstat``
        tells which it was, on this error path only.
        """
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
            try:
                is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            except OSError:
                is_link = False
            if is_link:
                return self.link_refused(doing, shown)
        return self.error(exc, doing, self.show(shown))

    def link_refused(self, doing: str, shown: tuple[str, ...]) -> StoreError:
        where = self.show(shown)
        return StoreError(
            f"refusing to {doing} {where}: it is a symbolic link, and {SYMLINK_RULE}",
            store=self.store,
            path=where,
        )

    def error(self, exc: OSError, doing: str, where: object) -> StoreError:
        if exc.errno in _DENIED:
            return StorePermissionError(
                f"cannot {doing} {where} ({exc.strerror}: not writable by this user, or a "
                "read-only file system)",
                store=self.store,
                path=str(where),
            )
        return StoreUnavailable(
            f"cannot {doing} {where}: {exc.strerror}", store=self.store, path=str(where)
        )
