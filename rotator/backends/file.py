"""The file store: one file per path under a directory.

Writes are atomic and durable: a temp file in the same directory, fsync of the
file, rename over the target, fsync of the directory. Compare-and-set holds an
exclusive ``flock`` on a sibling lock file while it compares the version (a
hash of the current contents) and renames, so two processes on one host cannot
both win. Files are 0600 (configurable), directories the store creates 0700.

The hot path is counted in system calls (each one releases and retakes the GIL
under 16 workers): reads are ``open``/``read``/``close`` without the buffered
layer's ``fstat``/``ioctl``/``lseek``, and a directory that has been checked
once is not checked again unless a write finds it gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import secrets as _random
import shlex
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from rotator.backends.base import Record, Validation, ValidationStatus, Version, WriteResult
from rotator.errors import (
    StoreConflict,
    StoreError,
    StorePermissionError,
    StoreUnavailable,
)

__all__ = ["FileStore", "read_file", "render"]

_ENV_KEYS = (
    ("ACCESS_TOKEN", "access_token"),
    ("TOKEN_TYPE", "token_type"),
    ("EXPIRES_AT", "expires_at"),
)
_SAFE_ENV = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=:-")


def _json_text(data: Mapping[str, str]) -> str:
    """``json.dumps(data, indent=2, ensure_ascii=False)``, byte for byte, for string maps.

    ``indent`` switches json to its pure-Python encoder (about 4x slower for a
    state record); a flat map of strings needs only the C string encoder.
    """
    if not data or not all(type(v) is str and type(k) is str for k, v in data.items()):
        return json.dumps(dict(data), indent=2, ensure_ascii=False)
    quote = json.encoder.encode_basestring
    return "{\n" + ",\n".join(f"  {quote(k)}: {quote(v)}" for k, v in data.items()) + "\n}"


def render(data: Mapping[str, str], fmt: str) -> bytes:
    """The bytes a consumer reads for ``fmt`` (DESIGN.md, "What sinks receive")."""
    if fmt == "token":
        return (data["access_token"] + "\n").encode("utf-8")
    if fmt == "env":
        lines = []
        for env_name, key in _ENV_KEYS:
            value = data.get(key, "")
            shown = value if set(value) <= _SAFE_ENV else shlex.quote(value)
            lines.append(f"{env_name}={shown}\n")
        return "".join(lines).encode("utf-8")
    return (_json_text(data) + "\n").encode("utf-8")


def _parse(raw: bytes, fmt: str) -> dict[str, str]:
    text = raw.decode("utf-8", "replace")
    if fmt == "token":
        return {"access_token": text.strip()}
    if fmt == "env":
        by_env = dict(_ENV_KEYS)
        out: dict[str, str] = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and name in by_env:
                parts = shlex.split(value) if value else [""]
                out[by_env[name]] = parts[0] if parts else ""
        return out
    loaded: Any = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError("not a JSON object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in loaded.items()}


def _version(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:24]


def read_file(path: str) -> bytes:
    """The whole file, with three system calls for a small one (FileNotFoundError if none)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: temp file names: a per-process prefix (pid and a random tag: a restarted
#: container reuses its PID, and a crash can leave a temp file behind) and a counter
_tmp_seq = itertools.count()
_tmp = {"tag": f"{os.getpid()}-{_random.token_hex(4)}"}


def _after_fork() -> None:
    _tmp["tag"] = f"{os.getpid()}-{_random.token_hex(4)}"


os.register_at_fork(after_in_child=_after_fork)


class FileStore:
    kind: ClassVar[str] = "file"

    def __init__(self, name: str, settings: Any) -> None:
        self.name = name
        self.directory = Path(settings.directory)
        self.mode: int = settings.mode
        #: directories this store has seen exist (a write that finds one gone re-checks)
        self._dirs: set[str] = set()
        self._dirs_guard = threading.Lock()

    # -- paths ---------------------------------------------------------------------

    def _target(self, path: str) -> Path:
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise StoreError(
                f"path {path!r} must be relative to {self.directory} and stay inside it",
                store=self.name,
                path=path,
            )
        return self.directory.joinpath(*pure.parts)

    def _ensure_dir(self, directory: Path) -> None:
        # mkdir(parents=True) would create the missing parents with the umask's
        # default (0755); each level rotator creates is 0700.
        missing = [d for d in (directory, *directory.parents) if not d.exists()]
        try:
            for level in reversed(missing):
                level.mkdir(mode=0o700, exist_ok=True)
        except PermissionError:
            raise StorePermissionError(
                f"cannot create directory {directory} (not writable by this user)",
                store=self.name,
            ) from None
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create directory {directory}: {exc.strerror}", store=self.name
            ) from None
        if not directory.is_dir():
            raise StoreUnavailable(f"{directory} is not a directory", store=self.name)

    def _open_lock(self, target: Path) -> int:
        parent = os.path.dirname(target)
        lock_path = os.path.join(parent, f".{target.name}.lock")
        if parent not in self._dirs:
            self._ensure_dir(target.parent)
            with self._dirs_guard:
                self._dirs.add(parent)
        try:
            return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            # removed since we checked it: create it again (one retry)
            with self._dirs_guard:
                self._dirs.discard(parent)
            self._ensure_dir(target.parent)
            return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        try:
            fd = self._open_lock(target)
        except PermissionError:
            raise StorePermissionError(
                f"cannot write in {target.parent}", store=self.name, path=str(target)
            ) from None
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot write in {target.parent}: {exc.strerror}",
                store=self.name,
                path=str(target),
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- SecretStore ---------------------------------------------------------------

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        target = self._target(path)
        try:
            raw = read_file(str(target))
        except FileNotFoundError:
            return None
        except PermissionError:
            raise StorePermissionError(
                f"cannot read {target} (permission denied)", store=self.name, path=path
            ) from None
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot read {target}: {exc.strerror}", store=self.name, path=path
            ) from None
        try:
            data = _parse(raw, fmt)
        except (ValueError, UnicodeDecodeError):
            raise StoreError(
                f"{target} does not hold {fmt} data (damaged, or written by something else)",
                store=self.name,
                path=path,
            ) from None
        return Record(data=data, version=_version(raw))

    def write(
        self,
        path: str,
        data: Mapping[str, str],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult:
        target = self._target(path)
        new = render(data, fmt)
        with self._locked(target):
            try:
                current: bytes | None = read_file(str(target))
            except FileNotFoundError:
                current = None
            current_version = _version(current) if current is not None else None
            if current_version != expected_version and not (adopt and expected_version is None):
                raise StoreConflict(
                    f"{path} changed since it was read (compare-and-set lost)",
                    store=self.name,
                    path=path,
                )
            if current == new and current_version is not None:
                if (target.stat().st_mode & 0o777) != self.mode:
                    os.chmod(target, self.mode)
                return WriteResult(current_version, changed=False)
            self._replace(target, new)
            return WriteResult(_version(new), changed=True)

    def _replace(self, target: Path, content: bytes) -> None:
        tmp = target.with_name(f".{target.name}.tmp-{_tmp['tag']}-{next(_tmp_seq)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.mode)
            try:
                os.fchmod(fd, self.mode)  # the umask must not widen or narrow it
                view = memoryview(content)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StorePermissionError(
                    f"cannot write {target} ({exc.strerror})", store=self.name, path=str(target)
                ) from None
            raise StoreUnavailable(
                f"cannot write {target}: {exc.strerror}", store=self.name, path=str(target)
            ) from None

    def delete(self, path: str) -> None:
        target = self._target(path)
        with self._locked(target):
            try:
                target.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot delete {target}: {exc.strerror}", store=self.name, path=path
                ) from None

    def validate(self, probe_path: str | None = None) -> Validation:
        try:
            self._ensure_dir(self.directory)
            probe = self.directory / f".rotator-probe-{os.getpid()}"
            self._replace(probe, b"probe\n")
            probe.unlink()
        except StoreError as exc:
            return Validation(ValidationStatus.ERROR, str(exc))
        return Validation(ValidationStatus.READY, f"directory {self.directory} is writable")

    def close(self) -> None:
        return None
