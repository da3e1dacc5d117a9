"""The one interface every secret store implements.

A store holds small string maps at paths. Two users:

- the *state* of an account (refresh token, expiries, lease, last outcome), read
  and written with compare-and-set on the version read;
- the *sinks* consumers read (the consumer view), written the same way.

Contract (tests/backends/test_contract.py runs it against every store):

- ``read`` of a missing path is ``None``;
- ``write(..., expected_version=None)`` creates and fails with
  :class:`~rotator.errors.StoreConflict` if the path exists;
  ``write(..., expected_version=v)`` fails unless the current version is ``v``;
- writing the data a path already holds (at the expected version) writes nothing
  and returns ``WriteResult(version, changed=False)``: no new file, KV version or
  Secrets Manager version per cycle;
- errors are the typed :class:`~rotator.errors.StoreError` family, never an SDK
  exception, and never carry a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from rotator.errors import ConfigError, StoreError

__all__ = [
    "FORMATS",
    "STORE_TYPES",
    "Record",
    "SecretStore",
    "Validation",
    "ValidationStatus",
    "Version",
    "WriteResult",
    "canonical_json",
    "open_store",
    "reason",
    "require_json",
]

Version = int | str
FORMATS = ("json", "token", "env")


class ValidationStatus(StrEnum):
    READY = "READY"
    UNKNOWN = "UNKNOWN"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Validation:
    status: ValidationStatus
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    data: Mapping[str, str]
    version: Version


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: Version
    changed: bool


class SecretStore(Protocol):
    """What rotation needs from a store. ``fmt`` matters only to the file store."""

    kind: ClassVar[str]
    name: str

    def read(self, path: str, *, fmt: str = "json") -> Record | None: ...

    def write(
        self,
        path: str,
        data: Mapping[str, str],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult: ...

    def delete(self, path: str) -> None: ...

    def validate(self, probe_path: str | None = None) -> Validation: ...

    def close(self) -> None: ...


def require_json(store_name: str, holds: str, fmt: str, path: str) -> None:
    """Only the file store renders ``token``/``env``; the others hold the json fields."""
    if fmt != "json":
        raise StoreError(
            f"format {fmt!r} applies to the file store only; {holds} holds the json fields",
            store=store_name,
            path=path,
        )


def reason(exc: StoreError, store_name: str) -> str:
    """An error's message without the ``store: `` prefix (a Validation names the store)."""
    text = str(exc)
    prefix = f"{store_name}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def canonical_json(data: Mapping[str, str]) -> str:
    return json.dumps(dict(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# The registry: store type -> "module:factory". Imported on first use so that
# `rotator --help` never pays for hvac or boto3.
STORE_TYPES: dict[str, str] = {
    "file": "rotator.backends.file:FileStore",
    "vault": "rotator.backends.vault.store:VaultStore",
    "aws": "rotator.backends.aws:AwsStore",
}


def open_store(name: str, settings: Any) -> SecretStore:
    """Build the store ``name`` from its validated settings (see rotator.config.models)."""
    spec = STORE_TYPES.get(settings.type)
    if spec is None:
        raise ConfigError(
            f"unknown store type {settings.type!r} (known: {', '.join(sorted(STORE_TYPES))})",
            path=f"stores.{name}.type",
        )
    module_name, _, attr = spec.partition(":")
    import importlib

    factory: Callable[..., SecretStore] = getattr(importlib.import_module(module_name), attr)
    return factory(name, settings)
