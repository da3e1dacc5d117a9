"""The encrypted local spool: a rotated grant survives a crash or a store outage.

The moment a vendor answers with new tokens, the new state is written here
(AES-256-GCM, fsync, rename) *before* the state store is written; it is removed
once the state store holds it. A restart replays what is left before anything
else, so a ``kill -9`` between the vendor's answer and the state write, or a
state store that is down, never costs the grant.

Entries are keyed by the state store's identity and path (not only the account
name), so two configurations sharing a spool directory never mix. The key comes
from ``server.spool_key`` (a secret reference) or a generated 0600 key file.

Room for an entry is reserved before the vendor is asked (:meth:`Spool.reserve`:
a file of :data:`RESERVATION_BYTES` allocated, not yet written): a full disk then
stops a rotation before a refresh token is spent, never after. The answer is
written into the reserved blocks in place (:meth:`Spool.fill`), which needs no
new space, and the file is renamed to the entry. An entry that can never be
landed is set aside (:meth:`Spool.set_aside`), still encrypted, for a human.

Formats: an entry starts with ``RSP`` and its format's digit (:data:`SPOOL_FORMAT`);
a later format keeps those four bytes and follows them, in clear, with the oldest
release that reads it (``rotator>=X.Y.Z``, a newline). An entry in a newer spool or
state format is never guessed at, set aside or replaced: its account is refused
(:class:`~rotator.errors.NewerFormat`), as the entry may hold the only valid grant.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from rotator.errors import ConfigError, NewerFormat
from rotator.fileio import key_file, read_file
from rotator.rotation.spooldir import SpoolPlace, spool_dir, spool_place
from rotator.state import newer_format

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "RESERVATION_BYTES",
    "Reservation",
    "Spool",
    "SpoolEntry",
    "SpoolPlace",
    "spool_dir",
    "spool_place",
]

_log = structlog.get_logger("rotator.spool")
#: the format of the entries this rotator writes (and the newest it reads)
SPOOL_FORMAT = 1
_MAGIC_PREFIX = b"RSP"
_MAGIC = _MAGIC_PREFIX + str(SPOOL_FORMAT).encode()
#: what a later format puts after its four bytes: the oldest release that reads it
_NEWER_REQUIRES = re.compile(rb"rotator>=[0-9][0-9A-Za-z.+-]{0,31}(?=\n)")
#: room reserved per rotation: a state record with tokens is a few KiB even with
#: large JWTs; an answer beyond it is spooled the ordinary way (new space)
RESERVATION_BYTES = 64 * 1024
#: where an older spool kept the spent refresh token: inside the record
_LEGACY_SPENT = "spent_refresh_token"
_RESERVED = ".reserve"
_UNLANDABLE = ".unlandable"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    key: str
    account: str
    state_path: str
    record: Mapping[str, str]
    #: the refresh token the spooled state replaced (its lineage), if any
    spent: str | None = None
    #: the file holding it (an entry, or a reservation filled before a crash)
    path: Path | None = None
    #: an entry in a newer format: nothing else of it was read (see check)
    refused: NewerFormat | None = None

    def check(self) -> None:
        """Raise :attr:`refused`, if set: before anything uses the entry."""
        if self.refused is not None:
            raise self.refused


@dataclass(frozen=True, slots=True)
class Reservation:
    """Room for one entry of ``key``, taken before a refresh token is spent."""

    key: str
    path: Path


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
            key = _key_file(directory / "spool.key")
        return cls(directory, key)

    @staticmethod
    def entry_key(store_identity: str, state_path: str) -> str:
        return hashlib.sha256(f"{store_identity}\0{state_path}".encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.grant"

    def _seal(
        self, key: str, account: str, state_path: str, record: Mapping[str, str], spent: str | None
    ) -> bytes:
        body: dict[str, object] = {
            "account": account,
            "state_path": state_path,
            "record": dict(record),
        }
        if spent is not None:
            body["spent"] = spent
        nonce = secrets.token_bytes(12)
        return _MAGIC + nonce + self._aead.encrypt(nonce, json.dumps(body).encode(), key.encode())

    def _sync_dir(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def reserve(self, key: str) -> Reservation:
        """Allocate room for one entry of ``key``; raises OSError (ENOSPC).

        Not fsynced: the blocks are the file's from the allocation on, so the fill
        needs no new space; a crash before the fill loses no answer (the vendor
        was not heard), and :meth:`fill` makes the entry durable.
        """
        path = self.directory / f"{key}.{os.getpid()}-{secrets.token_hex(4)}{_RESERVED}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, RESERVATION_BYTES)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.write(fd, bytes(RESERVATION_BYTES))  # no fallocate here: real zeros
            os.close(fd)
            fd = -1
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return Reservation(key, path)

    def fill(
        self,
        reservation: Reservation,
        account: str,
        state_path: str,
        record: Mapping[str, str],
        *,
        spent: str | None = None,
    ) -> None:
        """Write the entry into its reserved blocks and make it the key's entry.

        The file is first cut to the entry's length (that frees, never takes,
        space), then written in place and fsynced, then renamed. A crash before
        the rename leaves a filled reservation, which :meth:`entries` reads.
        """
        key = reservation.key
        blob = self._seal(key, account, state_path, record, spent)
        if len(blob) > RESERVATION_BYTES:
            self.put(key, account, state_path, record, spent=spent)
            self.release(reservation)
            return
        fd = os.open(reservation.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, len(blob))
            os.pwrite(fd, blob, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(reservation.path, self._path(key))
        self._sync_dir()

    @staticmethod
    def release(reservation: Reservation) -> None:
        """Give back a reservation that was not filled (no vendor call, or no grant)."""
        with contextlib.suppress(FileNotFoundError):
            reservation.path.unlink()

    def set_aside(
        self, key: str, *, path: Path | None = None, access_token: str | None = None
    ) -> Path | None:
        """Move an entry that cannot be landed out of the replay, still encrypted.

        ``path``: the file read at replay (an entry, or a filled reservation); else
        the key's entry, only while it holds the grant of ``access_token``. Returns
        where it went, or None when it was not there.
        """
        if path is None:
            entry = self.get(key)
            if entry is None or entry.record.get("access_token") != access_token:
                return None
            path = self._path(key)
        target = self.directory / f"{key}.grant{_UNLANDABLE}"
        if target.exists():
            target = target.with_name(f"{target.name}.{secrets.token_hex(4)}")
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        self._sync_dir()
        return target

    def entry_path(self, key: str) -> Path:
        return self._path(key)

    def put(
        self,
        key: str,
        account: str,
        state_path: str,
        record: Mapping[str, str],
        *,
        spent: str | None = None,
    ) -> None:
        blob = self._seal(key, account, state_path, record, spent)
        target = self._path(key)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        self._sync_dir()

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
        """Every entry to replay: the entries, and reservations filled before a crash
        (an unfilled one of a process that is gone is removed). An entry that cannot
        be read or decrypted is logged and left in place; it never stops the others."""
        for path in sorted(self.directory.glob("*.grant")):
            blob = _read(path)
            entry = self._decode(path.stem, blob, path) if blob is not None else None
            if entry is not None:
                yield entry
        for path in sorted(self.directory.glob(f"*{_RESERVED}")):
            key, _, holder = path.name.removesuffix(_RESERVED).partition(".")
            blob = _read(path)
            if blob is None:
                continue
            if blob.startswith(_MAGIC_PREFIX):  # filled (by us, or by a newer rotator)
                entry = self._decode(key, blob, path)
                if entry is not None:
                    yield entry
            elif not _alive(holder.partition("-")[0]):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _decode(self, key: str, blob: bytes, path: Path | None = None) -> SpoolEntry | None:
        where = path if path is not None else self._path(key)
        refused = _newer(blob, where)
        if refused is not None:
            return SpoolEntry(
                key, account="", state_path="", record={}, path=where, refused=refused
            )
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
        try:
            record = {str(k): str(v) for k, v in payload["record"].items()}
            spent = payload.get("spent", record.pop(_LEGACY_SPENT, None))
            return SpoolEntry(
                key=key,
                account=str(payload["account"]),
                state_path=str(payload["state_path"]),
                record=record,
                spent=str(spent) if spent else None,
                path=path if path is not None else self._path(key),
            )
        except (KeyError, TypeError, AttributeError):
            _log.error("spool entry is damaged; left in place", entry=key)
            return None


def _newer(blob: bytes, path: Path) -> NewerFormat | None:
    """The refusal of an entry in a spool format newer than :data:`SPOOL_FORMAT`."""
    number = blob[len(_MAGIC_PREFIX) : len(_MAGIC_PREFIX) + 1]
    if not blob.startswith(_MAGIC_PREFIX) or not number.isdigit() or int(number) <= SPOOL_FORMAT:
        return None
    requires = _NEWER_REQUIRES.match(blob, len(_MAGIC))
    release = requires.group(0).decode("ascii") if requires else ""
    return newer_format(f"the spooled grant {path}", "spool", int(number), SPOOL_FORMAT, release)


def _key_file(path: Path) -> bytes:
    """The spool key from its 0600 file, made on first use."""
    return key_file(
        path,
        key_path="server.spool_dir",
        damaged=f"the spool key file {path} is damaged (it must hold 32 bytes in base64): "
        "restore it, or remove it if the spool directory holds no .grant files",
    )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None  # landed and removed meanwhile
    except OSError as exc:
        _log.error("spool entry cannot be read; left in place", entry=path.name, error=exc.strerror)
        return None


def _alive(pid_text: str) -> bool:
    """Whether the process that made a reservation may still fill it."""
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # another thread of ours may be about to fill it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: alive, someone else's
    return True
