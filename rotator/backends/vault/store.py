"""The Vault / OpenBao KV v2 store.

Paths live under ``mount``/``prefix``; a version is the KV version number.
Writes use KV v2 check-and-set on every call (``cas=0`` = create only), carry
the custom metadata ``managed-by: rotator``, refuse a secret without that
marker unless the sink says ``adopt``, and write nothing when the data is
unchanged. Every path is held to :data:`~rotator.backends.base.PATH_RULE`
here, whatever the configuration check let through.

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
    ValidationStatus,
    Version,
    WriteResult,
    checked_path,
    reason,
    record_data,
    require_json,
    store_data,
)
from rotator.backends.vault.auth import Token, VaultLogin
from rotator.backends.vault.client import HvacClient, VaultClient, is_forbidden, mapped
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

    # -- paths ---------------------------------------------------------------------

    def _full(self, path: str) -> str:
        checked_path(path, store=self.name)
        pure = PurePosixPath(path.strip("/"))
        return f"{self.prefix}/{pure}" if self.prefix else str(pure)

    def _data_path(self, full: str) -> str:
        return f"{self.mount}/data/{full}"

    def _metadata_path(self, full: str) -> str:
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
                raise self._mapped(exc, action, path) from None
        token = self.auth.after_403(token.generation)
        try:
            return fn(token.secret)
        except StoreError:
            raise
        except Exception as exc:
            raise self._mapped(exc, action, path) from None

    def _mapped(self, exc: Exception, action: str, path: str) -> StoreError:
        return mapped(exc, self.settings, store=self.name, action=action, path=path)

    # -- SecretStore -------------------------------------------------------------------

    def _latest(
        self, token: Secret, full: str
    ) -> tuple[dict[str, ViewValue] | None, dict[str, Any] | None]:
        """(data of the latest live version, its metadata); (None, metadata) when the
        latest version is deleted or destroyed; (None, None) when nothing is there."""
        data, meta = self._client.read_data(self._data_path(full), token)
        if data is None:
            return None, meta
        return record_data(data), meta

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        require_json(self.name, "a vault sink", fmt, path)
        full = self._full(path)
        data, meta = self._call("reading", self._data_path(full), lambda t: self._latest(t, full))
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
        full = self._full(path)
        new = store_data(data)

        digest = _digest(new)
        known = self._known.get(full)
        fast_cas: int | None = None
        if known is not None and known[1] != digest:
            # We last saw this path (marked, or absent) at the expected version and the
            # data differs: skip the GET; the server's check-and-set guards the version.
            if expected_version is None and known[1] == _ABSENT:
                fast_cas = 0
            elif expected_version is not None and known[0] == _as_int(expected_version):
                fast_cas = known[0]
        if fast_cas is not None:
            cas = fast_cas

            def cas_write(token: Secret) -> WriteResult:
                if cas == 0:
                    # A new path: the marker first, as below. Someone creating the path
                    # since our read makes the data write fail (cas=0), as it would
                    # if they created it between a GET here and this POST.
                    marker = {MANAGED_BY[0]: MANAGED_BY[1]}
                    self._client.write_metadata(self._metadata_path(full), marker, token)
                return WriteResult(
                    self._client.write_data(self._data_path(full), new, cas, token), True
                )

            try:
                result = self._call("writing", self._data_path(full), cas_write)
            except StoreError:
                self._known.pop(full, None)
                raise
            self._known[full] = (int(result.version), digest)
            return result

        def attempt(token: Secret) -> WriteResult:
            current, meta = self._latest(token, full)
            version = int(meta["version"]) if meta else 0
            custom = (meta or {}).get("custom_metadata") or {}
            marked = custom.get(MANAGED_BY[0]) == MANAGED_BY[1]
            if meta is not None and not marked and not adopt:
                raise StoreNotManaged(
                    f"{self.mount}/{full} exists and was not written by rotator (no custom "
                    f"metadata {MANAGED_BY[0]}={MANAGED_BY[1]}); set adopt: true on the sink "
                    "to take it over",
                    store=self.name,
                    path=path,
                )
            if expected_version is None:
                if current is not None and not adopt:
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
                self._client.write_metadata(self._metadata_path(full), marker, token)
            if current == new:
                self._known[full] = (version, digest)
                return WriteResult(version, changed=False)
            written = self._client.write_data(self._data_path(full), new, version, token)
            self._known[full] = (written, digest)
            return WriteResult(written, changed=True)

        try:
            return self._call("writing", self._data_path(full), attempt)
        except StoreError:
            self._known.pop(full, None)
            raise

    def delete(self, path: str) -> None:
        full = self._full(path)
        self._known.pop(full, None)
        meta_path = self._metadata_path(full)
        self._call("deleting", meta_path, lambda t: self._client.delete_metadata(meta_path, t))

    def validate(self, probe_path: str | None = None) -> Validation:
        """READY when we can log in, the mount is KV v2 and the policy allows what
        rotation needs on ``probe_path``; ERROR with the reason otherwise; UNKNOWN
        when the token may not ask Vault about its own capabilities."""
        try:
            full = self._full(probe_path) if probe_path is not None else ""
            token = self.auth.current()
            info = self._client.mount_info(self.mount, token.secret)
            if info is None:
                return Validation(
                    ValidationStatus.ERROR,
                    f"no KV v2 mount {self.mount}/ visible to this token at "
                    f"{self.settings.url} (enable one: bao secrets enable -path={self.mount} "
                    "kv-v2, or fix the store's mount)",
                )
            version = str((info.get("options") or {}).get("version") or "")
            if info.get("type") not in ("kv", "generic") or version != "2":
                return Validation(
                    ValidationStatus.ERROR,
                    f"mount {self.mount}/ is {info.get('type')} version {version or '1'}, "
                    "not KV version 2 (bao kv enable-versioning, or point mount at a KV v2 engine)",
                )
            if probe_path is None:
                return Validation(
                    ValidationStatus.READY,
                    f"logged in ({self.settings.auth.method}); {self.mount}/ is KV v2",
                )
            data_path, meta_path = self._data_path(full), self._metadata_path(full)
            caps = self._client.capabilities([data_path, meta_path], token.secret)
            if caps is None:
                return Validation(
                    ValidationStatus.UNKNOWN,
                    f"logged in, but this token may not read sys/capabilities-self, "
                    f"so the policy on {data_path} was not checked",
                )
        except StoreError as exc:
            return Validation(ValidationStatus.ERROR, reason(exc, self.name))
        except Exception as exc:
            return Validation(
                ValidationStatus.ERROR, reason(self._mapped(exc, "validating", ""), self.name)
            )
        return _judge(caps, data_path, meta_path, self.settings.auth.method)

    def close(self) -> None:
        self.auth.close()
        self._client.close()


# -- helpers ---------------------------------------------------------------------------


def _judge(caps: Mapping[str, Any], data_path: str, meta_path: str, method: str) -> Validation:
    """What the token's capabilities on the data and metadata paths allow."""
    data_caps = set(caps.get(data_path) or [])
    meta_caps = set(caps.get(meta_path) or [])
    if "root" in data_caps:
        data_caps |= {"create", "update", "read"}
    if "root" in meta_caps:
        meta_caps |= {"create", "update", "read"}
    lacking_write = sorted({"create", "update"} - data_caps)
    if lacking_write:
        return Validation(
            ValidationStatus.ERROR,
            f"permission denied writing {data_path} (the policy lacks {'/'.join(lacking_write)})",
        )
    if "read" not in data_caps:
        return Validation(
            ValidationStatus.ERROR,
            f"permission denied reading {data_path} (the policy lacks read)",
        )
    if not ({"create", "update"} & meta_caps):
        return Validation(
            ValidationStatus.ERROR,
            f"permission denied writing {meta_path} (the policy lacks update; "
            "rotator marks the paths it writes with custom metadata managed-by=rotator)",
        )
    return Validation(
        ValidationStatus.READY, f"logged in ({method}); may read and write {data_path}"
    )


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
