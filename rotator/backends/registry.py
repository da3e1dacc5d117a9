"""Store types by name: what ``stores.<name>.type`` may say, and how a store is opened.

Each store class is registered as ``"module:Class"`` and imported the first
time a store of that type is opened, so ``rotator --help`` never pays for hvac
or boto3. A store class is its own factory: ``Class(name, settings)``.

The registry reaches the classes through strings, so each store module names
its class once more for mypy, under ``TYPE_CHECKING``: assigning it to
:data:`~rotator.backends.base.StoreFactory` makes mypy check its constructor and
every method of :class:`~rotator.backends.base.SecretStore` against the protocol
(tests/backends/test_registry.py holds every registered class to having it).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from rotator.backends.base import SecretStore, StoreFactory
from rotator.registry import Registry

__all__ = ["STORES", "StoreFactory", "open_store", "override"]

STORES: Registry[StoreFactory] = Registry("store type")
STORES.register("file", "rotator.backends.file:FileStore")
STORES.register("vault", "rotator.backends.vault.store:VaultStore")
STORES.register("aws", "rotator.backends.aws:AwsStore")


def open_store(name: str, settings: Any) -> SecretStore:
    """Build the store ``name`` from its validated settings (see rotator.config.models);
    an unknown type is a ConfigError at ``stores.<name>.type`` naming the known ones."""
    factory = STORES.get(settings.type, path=f"stores.{name}.type")
    return factory(name, settings)


def override(kind: str, factory: StoreFactory) -> AbstractContextManager[None]:
    """Tests: open stores of type ``kind`` with ``factory`` inside a ``with`` block."""
    return STORES.override(kind, factory)
