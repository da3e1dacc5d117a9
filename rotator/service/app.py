"""The one place that wires a configuration into running parts.

config -> stores -> spool -> accounts -> rotator (-> daemon -> monitor). The
commands (``refresh``, ``import``, ``authorize``, ``status``) and the daemon
build their parts here, so each of them opens stores and the spool the same way.
"""

from __future__ import annotations

from typing import Any

from rotator.backends.base import SecretStore, open_store
from rotator.config.models import Config, state_store
from rotator.rotation.spool import Spool, default_spool_dir
from rotator.secrets import resolve

__all__ = ["open_spool", "open_stores", "store_settings_of"]


def open_stores(config: Config) -> dict[str, SecretStore]:
    """Every configured store, opened (SDK clients are built lazily by each store)."""
    return {name: open_store(name, settings) for name, settings in config.stores.items()}


def open_spool(config: Config) -> Spool:
    """The encrypted write-ahead spool, under ``server.spool_dir`` or the state directory."""
    key = resolve(config.server.spool_key).reveal() if config.server.spool_key else None
    return Spool.open(config.server.spool_dir or default_spool_dir(), key)


def store_settings_of(config: Config, account: str) -> list[Any]:
    """The settings of every store an account touches (its state store and sinks)."""
    names = {state_store(config, account)} | {s.store for s in config.accounts[account].sinks}
    return [config.stores[n] for n in sorted(names)]
