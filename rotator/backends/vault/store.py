"""The Vault / OpenBao KV v2 store.

Paths live under ``mount``/``prefix``; a version is the KV version number.
Writes use KV v2 check-and-set on every call (``cas=0`` = create only) and
write nothing when the data is unchanged.

Ownership is decided by the record, not by a marker call: a path is rotator's
when its custom metadata says ``managed-by: rotator`` (paths written by earlier
releases, marked or adopted by hand), or when its latest data is a record
rotator writes for the same thing (:func:`~rotator.backends.base.written_by_rotator`:
a state record of the same account, a consumer view of the same account and
provider). Anything else is refused unless the sink says ``adopt``. A create is
therefore ONE call, the data with ``cas=0``: a path someone else made refuses
it and is left untouched; no metadata is written, so the daemon's policy needs
no grant on ``<mount>/metadata/``. Every path is held to
:data:`~rotator.backends.base.PATH_RULE` here, whatever the configuration check
let through.

The store talks to Vault only through :class:`~rotator.backends.vault.client.VaultClient`
(hvac by default, injected by tests) and gets its token from
:class:`~rotator.backends.vault.auth.VaultLogin`; an operation refused with a
403 is tried once more after a new login, so a revoked or expired token heals
itself. SDK errors are mapped once, in :func:`~rotator.backends.vault.client.mapped`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import structlog

from rotator.backends.base import (
    Record,
    Validation,
    Version,
    WriteResult,
    checked_path,
    record_data,
    record_identity,
    require_json,
    store_data,
    written_by_rotator,
)
from rotator.backends.vault.auth import Token, VaultLogin
from rotator.backends.vault.client import HvacClient, VaultClient, is_forbidden, mapped
from rotator.backends.vault.policy import validate
from rotator.errors import StoreConflict, StoreError, StoreNotManaged
from rotator.secrets import Secret
from rotator.tokens import ViewValue

if TYPE_CHECKING:
    from rotator.config.models import VaultStoreSettings

__all__ = ["MANAGED_BY", "VaultStore"]

MANAGED_BY = ("managed-by", "rotator")
_T = TypeVar("_T")
_log = structlog.get_logger("rotator.stores")

#: what ``_known`` holds for a path that was absent when we read it
_ABSENT = b""
#: ``_known``'s owner of a path marked managed-by=rotator (any data of ours goes)
_MARKED = 0
#: ``_known``'s owner of data that does not say whose it is
_UNKNOWN = -1


class VaultStore:
    """KV v2 paths under ``mount``/``prefix``; versions are KV version numbers (int)."""

    kind: ClassVar[str] = "vault"

    def __init__(
        self,
        name: str,
        settings: VaultStoreSettings,
        *,
        client: VaultClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        keepalive: bool = True,
    ) -> None:
        self.name = name
        self.settings = settings
        self.mount = settings.mount.strip("/")
        self.prefix = settings.prefix.strip("/")
        self._client: VaultClient = client if client is not None else HvacClient(settings)
        self.auth = VaultLogin(name, settings, self._client, clock=clock, keepalive=keepalive)
        # path -> (version, digest of its data, whose it is) as this process last read
        # or wrote it, for rotator's (or absent) paths only: a write with that version
        # as expected_version, new data and the same owner goes straight to the CAS
        # write (the server checks the version), without reading the path again first.
        # The owner is a hash of the record's identity (``_MARKED`` for a marked path,
        # any data): a number, not the tuple, at 100,000 accounts' paths.
        self._known: dict[str, tuple[int, bytes, int]] = {}

    # -- paths ---------------------------------------------------------------------

    def full_path(self, path: str) -> str:
        checked_path(path, store=self.name)
        pure = PurePosixPath(path.strip("/"))
        return f"{self.prefix}/{pure}" if self.prefix else str(pure)

    def data_path(self, full: str) -> str:
        return f"{self.mount}/data/{full}"

    def metadata_path(self, full: str) -> str:
        return f"{self.mount}/metadata/{full}"

    # -- the token ---------------------------------------------------------------------

    def renew_if_due(self) -> None:
        """Renew (or replace) the token if its renewal time has come. Used by the
        keep-alive thread; public so tests drive it with an injected clock."""
        self.auth.current()

    def token_expires_in(self) -> float | None:
        """Seconds until the current token expires (None: no token yet, or no TTL)."""
        return self.auth.expires_in()

    # -- one operation, with one re-login on 403 --------------------------------------

    def _call(self, action: str, path: str, fn: Callable[[Secret], _T]) -> _T:
        token: Token = self.auth.current()
        try:
            return fn(token.secret)
        except StoreError:
            raise
        except Exception as exc:
            if not is_forbidden(exc):
                raise self.mapped(exc, action, path) from None
        token = self.auth.after_403(token.generation)
        try:
            return fn(token.secret)
        except StoreError:
            raise
        except Exception as exc:
            raise self.mapped(exc, action, path) from None

    def mapped(self, exc: Exception, action: str, path: str) -> StoreError:
        return mapped(exc, self.settings, store=self.name, action=action, path=path)

    # -- SecretStore -------------------------------------------------------------------

    def _latest(
        self, token: Secret, full: str
    ) -> tuple[dict[str, ViewValue] | None, dict[str, Any] | None]:
        """(data of the latest live version, its metadata); (None, metadata) when the
        latest version is deleted or destroyed; (None, None) when nothing is there."""
        data, meta = self._client.read_data(self.data_path(full), token)
        if data is None:
            return None, meta
        return record_data(data), meta

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        require_json(self.name, "a vault sink", fmt, path)
        full = self.full_path(path)
        data, meta = self._call("reading", self.data_path(full), lambda t: self._latest(t, full))
        if data is None or meta is None:
            if meta is None:  # nothing there at all (not a deleted latest version)
                self._known[full] = (0, _ABSENT, _UNKNOWN)
            else:
                self._known.pop(full, None)
            return None
        self._remember(full, int(meta["version"]), data, meta)
        return Record(data=data, version=int(meta["version"]))

    def _remember(
        self, full: str, version: int, data: Mapping[str, ViewValue], meta: Mapping[str, Any]
    ) -> None:
        custom = (meta or {}).get("custom_metadata") or {}
        if custom.get(MANAGED_BY[0]) == MANAGED_BY[1]:
            self._known[full] = (version, _digest(data), _MARKED)
            return
        identity = record_identity(data)
        if identity is None:
            self._known.pop(full, None)
        else:
            self._known[full] = (version, _digest(data), hash(identity))

    def write(
        self,
        path: str,
        data: Mapping[str, ViewValue],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult:
        require_json(self.name, "a vault sink", fmt, path)
        full = self.full_path(path)
        new = store_data(data)

        digest = _digest(new)
        owner = _owner(new)
        known = self._known.get(full)
        if expected_version is None and (known is None or known[1] == _ABSENT):
            created = self._create(full, new, digest, owner)
            if created is not None:
                return created
            # the path exists: the read below refuses it unless it is ours (or adopted)
        elif (
            expected_version is not None
            and known is not None
            and known[1] not in (digest, _ABSENT)
            and known[0] == _as_int(expected_version)
            and known[2] in (_MARKED, owner)
        ):
            # We last saw this path of ours at the expected version and the data
            # differs: skip the GET; the server's check-and-set guards the version.
            return self._cas_write(full, new, known[0], digest, owner)

        def attempt(token: Secret) -> WriteResult:
            current, meta = self._latest(token, full)
            version = int(meta["version"]) if meta else 0
            custom = (meta or {}).get("custom_metadata") or {}
            ours = custom.get(MANAGED_BY[0]) == MANAGED_BY[1] or written_by_rotator(current, new)
            if meta is not None and current is None and not ours and not adopt:
                # a deleted latest version shows no data, so nothing says whose it is
                raise StoreNotManaged(
                    f"{self.mount}/{full} has a deleted latest version and no custom metadata "
                    f"{MANAGED_BY[0]}={MANAGED_BY[1]}, so nothing says it is rotator's; remove "
                    f"it for good (bao kv metadata delete {self.mount}/{full}), or mark it "
                    f"(bao kv metadata put -custom-metadata={MANAGED_BY[0]}={MANAGED_BY[1]} "
                    f"{self.mount}/{full}), or set adopt: true on the sink",
                    store=self.name,
                    path=path,
                )
            if meta is not None and not ours and not adopt:
                raise StoreNotManaged(
                    f"{self.mount}/{full} exists and was not written by rotator (neither "
                    f"custom metadata {MANAGED_BY[0]}={MANAGED_BY[1]} nor a record rotator "
                    "writes for this account); point the sink at a path of its own, or set "
                    "adopt: true on the sink to take it over (for a state path: mark it, bao kv "
                    f"metadata put -custom-metadata={MANAGED_BY[0]}={MANAGED_BY[1]} "
                    f"{self.mount}/{full})",
                    store=self.name,
                    path=path,
                )
            if expected_version is None:
                # a create of ours that lost its answer is done already
                if current is not None and not adopt and current != new:
                    raise StoreConflict(
                        f"{self.mount}/{full} already exists (create-only write lost)",
                        store=self.name,
                        path=path,
                    )
            elif current is None or _as_int(expected_version) != version:
                raise StoreConflict(
                    f"{self.mount}/{full} is at version {version}, not {expected_version} "
                    "(compare-and-set lost)",
                    store=self.name,
                    path=path,
                )
            if current == new:
                self._known[full] = (version, digest, owner)
                return WriteResult(version, changed=False)
            written = self._client.write_data(self.data_path(full), new, version, token)
            self._known[full] = (written, digest, owner)
            return WriteResult(written, changed=True)

        try:
            return self._call("writing", self.data_path(full), attempt)
        except StoreError:
            self._known.pop(full, None)
            raise

    def _create(
        self, full: str, new: dict[str, ViewValue], digest: bytes, owner: int
    ) -> WriteResult | None:
        """Create a path that we believe absent: ONE call, the data with ``cas=0``
        (create only). None when the path exists (the server refused the create and
        nothing was touched): the caller reads it and decides by its content.

        No marker follows: the record says it is rotator's (module docstring), so
        there is no window between two calls for a crash to fall into.
        """
        data_path = self.data_path(full)
        try:
            version = self._call(
                "writing", data_path, lambda t: self._client.write_data(data_path, new, 0, t)
            )
        except StoreConflict:
            self._known.pop(full, None)
            return None
        except StoreError:
            self._known.pop(full, None)
            raise
        self._known[full] = (version, digest, owner)
        return WriteResult(version, True)

    def _cas_write(
        self, full: str, new: dict[str, ViewValue], cas: int, digest: bytes, owner: int
    ) -> WriteResult:
        data_path = self.data_path(full)
        try:
            version = self._call(
                "writing", data_path, lambda t: self._client.write_data(data_path, new, cas, t)
            )
        except StoreError:
            self._known.pop(full, None)
            raise
        self._known[full] = (version, digest, owner)
        return WriteResult(version, True)

    def present_under(self, directory: str) -> frozenset[str] | None:
        """The names directly under ``directory`` that Vault holds anything at (one
        ``LIST`` of its metadata), for the start's look (service/scheduling.py): a
        path not among them is absent without a read. None when the policy does not
        grant ``list`` there (the documented minimal one does not) or the call
        fails: the look reads each path, as it always could."""
        full = self.full_path(directory)
        meta_path = self.metadata_path(full)
        try:
            # no re-login on a 403 here: a refused list is an answer, not a stale token
            keys = self._client.list_keys(meta_path, self.auth.current().secret)
        except Exception as exc:
            _log.info("state listing failed; each state is read", path=meta_path, error=repr(exc))
            return None
        if keys is None:
            _log.info(
                "the policy does not allow list; each state is read at the start",
                path=meta_path,
                fix=f'add "list" on {meta_path}/ to save one read per new account',
            )
            return None
        return frozenset(key for key in keys if not key.endswith("/"))

    def delete(self, path: str) -> None:
        full = self.full_path(path)
        self._known.pop(full, None)
        meta_path = self.metadata_path(full)
        self._call("deleting", meta_path, lambda t: self._client.delete_metadata(meta_path, t))

    def validate(self, probe_path: str | None = None) -> Validation:
        """READY when we can log in, the mount is KV v2 and the policy allows what
        rotation needs on ``probe_path``; ERROR with the reason otherwise; UNKNOWN
        when the token may not ask Vault about its own capabilities."""
        return validate(self, self._client, probe_path)

    def close(self) -> None:
        self.auth.close()
        self._client.close()


# -- helpers ---------------------------------------------------------------------------


def _owner(data: Mapping[str, ViewValue]) -> int:
    """Whose a record is, as ``_known`` keeps it (see :func:`record_identity`)."""
    identity = record_identity(data)
    return _UNKNOWN if identity is None else hash(identity)


def _digest(data: Mapping[str, ViewValue]) -> bytes:
    return hashlib.blake2b(
        json.dumps(data, sort_keys=True).encode("utf-8"), digest_size=16
    ).digest()


def _as_int(version: Version) -> int:
    try:
        return int(version)
    except ValueError:
        return -1


if TYPE_CHECKING:
    from rotator.backends.base import StoreFactory

    #: mypy's proof that the class is a store factory (see rotator.backends.registry)
    _CONFORMS: StoreFactory = VaultStore
