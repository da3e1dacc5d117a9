"""The Vault / OpenBao KV v2 store.

Paths live under ``mount``/``prefix``; a version is the KV version number.
Writes use KV v2 check-and-set on every call (``cas=0`` = create only), carry
the custom metadata ``managed-by: rotator``, refuse a secret without that
marker unless the sink says ``adopt``, and write nothing when the data is
unchanged. A create is two calls and no read: the data with ``cas=0`` first (a
path someone else made refuses it, untouched), then the marker. Every path is
held to :data:`~rotator.backends.base.PATH_RULE` here, whatever the
configuration check let through.

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

from rotator.backends.base import (
    Record,
    Validation,
    Version,
    WriteResult,
    checked_path,
    record_data,
    require_json,
    store_data,
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

#: what ``_known`` holds for a path that was absent when we read it
_ABSENT = b""


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
        # path -> (version, digest of its data) as this process last read or wrote it,
        # for marked (or absent) paths only: a write with that version as
        # expected_version and new data goes straight to the CAS write (the server
        # checks the version), without reading the path again first.
        self._known: dict[str, tuple[int, bytes]] = {}
        #: path -> the version this process created it at, until its marker lands
        self._created: dict[str, int] = {}

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
                self._known[full] = (0, _ABSENT)
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
            self._known[full] = (version, _digest(data))
        else:
            self._known.pop(full, None)

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
        known = self._known.get(full)
        if expected_version is None and (known is None or known[1] == _ABSENT):
            created = self._create(full, new, digest)
            if created is not None:
                return created
            # the path exists: the read below refuses it unless it is ours (or adopted)
        elif (
            expected_version is not None
            and known is not None
            and known[1] not in (digest, _ABSENT)
            and known[0] == _as_int(expected_version)
        ):
            # We last saw this marked path at the expected version and the data
            # differs: skip the GET; the server's check-and-set guards the version.
            return self._cas_write(full, new, known[0], digest)

        def attempt(token: Secret) -> WriteResult:
            current, meta = self._latest(token, full)
            version = int(meta["version"]) if meta else 0
            custom = (meta or {}).get("custom_metadata") or {}
            marked = custom.get(MANAGED_BY[0]) == MANAGED_BY[1]
            created_at = self._created.get(full)
            ours = marked or (meta is not None and _created_here(created_at, version, current, new))
            if meta is not None and not ours and not adopt:
                if expected_version is None and version == 1 and not custom:
                    # perhaps another rotator between its create and its marker: a
                    # lost create; the write after a new read refuses a path not ours
                    raise StoreConflict(
                        f"{self.mount}/{full} already exists (create-only write lost)",
                        store=self.name,
                        path=path,
                    )
                raise StoreNotManaged(
                    f"{self.mount}/{full} exists and was not written by rotator (no custom "
                    f"metadata {MANAGED_BY[0]}={MANAGED_BY[1]}); set adopt: true on the sink "
                    "to take it over (for a state path: mark it, bao kv metadata put "
                    f"-custom-metadata={MANAGED_BY[0]}={MANAGED_BY[1]} {self.mount}/{full})",
                    store=self.name,
                    path=path,
                )
            if expected_version is None:
                # a create of ours that lost its answer (or its marker) is done already
                if (
                    current is not None
                    and not adopt
                    and not (current == new and not marked and ours)
                ):
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
            if not marked:
                # before the data: a crash in between leaves a marked path, never an
                # unmarked secret that rotator wrote
                marker = {
                    **{str(k): str(v) for k, v in custom.items()},
                    MANAGED_BY[0]: MANAGED_BY[1],
                }
                self._client.write_metadata(self.metadata_path(full), marker, token)
                self._created.pop(full, None)
            if current == new:
                self._known[full] = (version, digest)
                return WriteResult(version, changed=False)
            written = self._client.write_data(self.data_path(full), new, version, token)
            self._known[full] = (written, digest)
            return WriteResult(written, changed=True)

        try:
            return self._call("writing", self.data_path(full), attempt)
        except StoreError:
            self._known.pop(full, None)
            raise

    def _create(self, full: str, new: dict[str, ViewValue], digest: bytes) -> WriteResult | None:
        """Create a path that we believe absent: the data with ``cas=0`` (create only),
        then the marker. None when the path exists (the server refused the create and
        nothing was touched).

        The data goes first: a create that loses to another writer changes nothing
        of theirs, where a marker written first would have claimed their path. A path
        whose marker did not land yet is remembered as ours at the version we made
        (:func:`_created_here`); a crash in between is healed by the next write of
        the same data.
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
        self._created[full] = version
        self._known[full] = (version, digest)
        meta_path = self.metadata_path(full)
        marker = {MANAGED_BY[0]: MANAGED_BY[1]}
        self._call(
            "marking", meta_path, lambda t: self._client.write_metadata(meta_path, marker, t)
        )
        self._created.pop(full, None)
        return WriteResult(version, True)

    def _cas_write(
        self, full: str, new: dict[str, ViewValue], cas: int, digest: bytes
    ) -> WriteResult:
        data_path = self.data_path(full)
        try:
            version = self._call(
                "writing", data_path, lambda t: self._client.write_data(data_path, new, cas, t)
            )
        except StoreError:
            self._known.pop(full, None)
            raise
        self._known[full] = (version, digest)
        return WriteResult(version, True)

    def delete(self, path: str) -> None:
        full = self.full_path(path)
        self._known.pop(full, None)
        self._created.pop(full, None)
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


def _created_here(
    created_at: int | None,
    version: int,
    current: Mapping[str, ViewValue] | None,
    new: Mapping[str, ViewValue],
) -> bool:
    """An unmarked path that is rotator's all the same: this process created it at
    ``version`` (``created_at``) and its marker did not land yet (nobody wrote since,
    or the version would differ), or its one and only version holds exactly the
    data being written (a rotator stopped between its create and its marker;
    nobody else holds the fresh token it carries), or is a state record rotator
    wrote whose marker a policy refused (fixed since)."""
    if created_at == version:
        return True
    if version != 1 or current is None:
        return False
    # a state record says who wrote it (``requires: rotator>=X``, rotator/state.py): one
    # whose marker was refused (a policy too narrow, fixed since) is rotator's own, and
    # the next write with any data takes it back; no consumer's secret carries that line
    written_by_rotator = str(current.get("requires", "")).startswith("rotator>=")
    return current == new or written_by_rotator


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
