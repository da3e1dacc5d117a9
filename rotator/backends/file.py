"""The file store: one file per path under a directory.

Writes are atomic and durable: a temp file in the same directory, fsync of the
file, rename over the target, fsync of the directory. Compare-and-set holds an
exclusive ``flock`` on a sibling lock file while it compares the version (a
hash of the current contents) and renames, so two processes on one host cannot
both win. Files are 0600 (configurable), directories the store creates 0700.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets as _random
import shlex
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

__all__ = ["FileStore", "render"]

_ENV_KEYS = (
    ("ACCESS_TOKEN", "access_token"),
    ("TOKEN_TYPE", "token_type"),
    ("EXPIRES_AT", "expires_at"),
)
_SAFE_ENV = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=:-")


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
    return (json.dumps(dict(data), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


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


class FileStore:
    kind: ClassVar[str] = "file"

    def __init__(self, name: str, settings: Any) -> None:
        self.name = name
        self.directory = Path(settings.directory)
        self.mode: int = settings.mode

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

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        self._ensure_dir(target.parent)
        lock_path = target.with_name(f".{target.name}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
            raw = target.read_bytes()
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
                current: bytes | None = target.read_bytes()
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
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{_random.token_hex(4)}")
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
