"""The encrypted local spool: a rotated grant survives a crash or a store outage.

The moment a vendor answers with new tokens, the new state is written here
(AES-256-GCM, fsync, rename) *before* the state store is written; it is removed
once the state store holds it. A restart replays what is left before anything
else, so a ``kill -9`` between the vendor's answer and the state write, or a
state store that is down, never costs the grant.

Entries are keyed by the state store's identity and path (not only the account
name), so two configurations sharing a spool directory never mix. The key comes
from ``server.spool_key`` (a secret reference) or a generated 0600 key file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from rotator.errors import ConfigError
from rotator.fileio import read_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Spool", "SpoolEntry", "default_spool_dir"]

_log = structlog.get_logger("rotator.spool")
_MAGIC = b"RSP1"


def default_spool_dir() -> Path:
    """``$STATE_DIRECTORY/spool`` under systemd, else a per-user state directory."""
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state_dir:
        return Path(state_dir) / "spool"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "rotator" / "spool"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    key: str
    account: str
    state_path: str
    record: Mapping[str, str]


class Spool:
    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self._key = key
        self._cipher: AESGCM | None = None

    @property
    def _aead(self) -> AESGCM:
        # cryptography is imported at the first entry written or read: a daemon
        # whose accounts never spool (client credentials only) starts without it
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._cipher = AESGCM(self._key)
        return self._cipher

    @classmethod
    def open(cls, directory: Path, secret: str | None = None) -> Spool:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the spool directory {directory}: {exc.strerror} "
                "(set server.spool_dir to a writable directory)",
                path="server.spool_dir",
            ) from None
        if secret is not None:
            key = hashlib.sha256(b"rotator-spool-v1\0" + secret.encode("utf-8")).digest()
        else:
            key = cls._key_file(directory / "spool.key")
        return cls(directory, key)

    @staticmethod
    def _key_file(path: Path) -> bytes:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = base64.b64encode(secrets.token_bytes(32)) + b"\n"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return Spool._key_file(path)  # another process made it first
            with os.fdopen(fd, "wb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
        try:
            key = base64.b64decode(raw.strip(), validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError(
                f"the spool key file {path} is damaged (it must hold 32 bytes in base64): "
                "restore it, or remove it if the spool directory holds no .grant files",
                path="server.spool_dir",
            )
        return key

    @staticmethod
    def entry_key(store_identity: str, state_path: str) -> str:
        return hashlib.sha256(f"{store_identity}\0{state_path}".encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.grant"

    def put(self, key: str, account: str, state_path: str, record: Mapping[str, str]) -> None:
        payload = json.dumps(
            {"account": account, "state_path": state_path, "record": dict(record)}
        ).encode("utf-8")
        nonce = secrets.token_bytes(12)
        blob = _MAGIC + nonce + self._aead.encrypt(nonce, payload, key.encode())
        target = self._path(key)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def remove(self, key: str, *, only_access_token: str | None = None) -> None:
        """Remove an entry; with ``only_access_token``, only while it still holds
        that grant (another process sharing the spool may have put a newer one)."""
        if only_access_token is not None:
            entry = self.get(key)
            if entry is None or entry.record.get("access_token") != only_access_token:
                return
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def get(self, key: str) -> SpoolEntry | None:
        try:
            blob = read_file(str(self._path(key)))  # every job asks: no buffered layer
        except FileNotFoundError:
            return None
        return self._decode(key, blob)

    def entries(self) -> Iterator[SpoolEntry]:
        for path in sorted(self.directory.glob("*.grant")):
            try:
                entry = self._decode(path.stem, path.read_bytes())
            except FileNotFoundError:
                continue
            if entry is not None:
                yield entry

    def _decode(self, key: str, blob: bytes) -> SpoolEntry | None:
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 12 + 16:
            _log.error("spool entry is damaged; left in place", entry=key)
            return None
        from cryptography.exceptions import InvalidTag

        nonce = blob[len(_MAGIC) : len(_MAGIC) + 12]
        try:
            payload = json.loads(self._aead.decrypt(nonce, blob[len(_MAGIC) + 12 :], key.encode()))
        except (InvalidTag, ValueError):
            _log.error(
                "spool entry cannot be decrypted with this key; left in place",
                entry=key,
                fix="use the spool key it was written with (server.spool_key or spool.key)",
            )
            return None
        return SpoolEntry(
            key=key,
            account=str(payload["account"]),
            state_path=str(payload["state_path"]),
            record={str(k): str(v) for k, v in payload["record"].items()},
        )
