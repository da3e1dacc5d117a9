"""What a Vault token's capabilities allow rotation to do, for ``validate``.

Kept apart from the store so the store module stays about reading and writing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from rotator.backends.base import Validation, ValidationStatus, reason
from rotator.errors import StoreError

if TYPE_CHECKING:
    from rotator.backends.vault.auth import VaultLogin
    from rotator.backends.vault.client import VaultClient
    from rotator.config.models import VaultStoreSettings

__all__ = ["judge", "validate"]


class Probed(Protocol):
    """What :func:`validate` uses of the store (the store module imports this one)."""

    name: str
    mount: str
    settings: VaultStoreSettings
    auth: VaultLogin

    def full_path(self, path: str) -> str: ...
    def data_path(self, full: str) -> str: ...
    def mapped(self, exc: Exception, action: str, path: str) -> StoreError: ...


def validate(store: Probed, client: VaultClient, probe_path: str | None) -> Validation:
    """:meth:`VaultStore.validate`: log in, look at the mount, ask about the policy."""
    try:
        full = store.full_path(probe_path) if probe_path is not None else ""
        token = store.auth.current()
        info = client.mount_info(store.mount, token.secret)
        if info is None:
            return Validation(
                ValidationStatus.ERROR,
                f"no KV v2 mount {store.mount}/ visible to this token at "
                f"{store.settings.url} (enable one: bao secrets enable -path={store.mount} "
                "kv-v2, or fix the store's mount)",
            )
        version = str((info.get("options") or {}).get("version") or "")
        if info.get("type") not in ("kv", "generic") or version != "2":
            return Validation(
                ValidationStatus.ERROR,
                f"mount {store.mount}/ is {info.get('type')} version {version or '1'}, "
                "not KV version 2 (bao kv enable-versioning, or point mount at a KV v2 engine)",
            )
        if probe_path is None:
            return Validation(
                ValidationStatus.READY,
                f"logged in ({store.settings.auth.method}); {store.mount}/ is KV v2",
            )
        # Only the data path: a create is one create-only write of the data, and whose
        # a path is comes from its record (store.py), so no metadata grant is needed.
        data_path = store.data_path(full)
        caps = client.capabilities([data_path], token.secret)
        if caps is None:
            return Validation(
                ValidationStatus.UNKNOWN,
                f"logged in, but this token may not read sys/capabilities-self, "
                f"so the policy on {data_path} was not checked",
            )
    except StoreError as exc:
        return Validation(ValidationStatus.ERROR, reason(exc, store.name))
    except Exception as exc:
        return Validation(
            ValidationStatus.ERROR, reason(store.mapped(exc, "validating", ""), store.name)
        )
    return judge(caps, data_path, store.settings.auth.method)


def judge(caps: Mapping[str, Any], data_path: str, method: str) -> Validation:
    """What the token's capabilities on the data path allow. Nothing is asked of
    ``<mount>/metadata/``: a policy that still grants it (written for an earlier
    release) keeps working, one without it is as good."""
    data_caps = set(caps.get(data_path) or [])
    if "root" in data_caps:
        data_caps |= {"create", "update", "read"}
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
    return Validation(
        ValidationStatus.READY, f"logged in ({method}); may read and write {data_path}"
    )
