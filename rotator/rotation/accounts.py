"""Accounts ready to rotate, built once per configuration load.

An :class:`Account` binds an account's validated settings to its provider, its
refresh policy and the store objects it reads and writes, so no rotation parses
configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rotator.backends.base import Record, SecretStore, Version
from rotator.config.models import AccountSettings, Config, Sink, state_store, store_identity
from rotator.providers.base import Provider
from rotator.providers.registry import provider_class
from rotator.rotation.spool import Spool
from rotator.schedule import RefreshPolicy
from rotator.state import AccountState

__all__ = ["Account", "build_accounts"]


@dataclass(frozen=True, slots=True)
class Account:
    """An account ready to rotate: built once per configuration load."""

    name: str
    settings: AccountSettings
    provider: Provider
    policy: RefreshPolicy
    state_store: SecretStore
    state_path: str
    sinks: tuple[tuple[SecretStore, Sink], ...]
    spool_key: str = ""

    def read_state(self) -> tuple[AccountState, Version | None]:
        """The stored state (a fresh one when there is none) and its version."""
        record: Record | None = self.state_store.read(self.state_path)
        if record is None:
            return AccountState(account=self.name, provider=self.settings.provider), None
        return AccountState.from_record(self.name, record.strings()), record.version


def build_accounts(config: Config, stores: Mapping[str, SecretStore]) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    # a store's identity is a serialization of its settings: once per store, not per account
    identities = {name: store_identity(settings) for name, settings in config.stores.items()}
    for name, settings in config.accounts.items():
        provider = provider_class(settings.provider)(name, settings)
        state_store_name = state_store(config, name)
        accounts[name] = Account(
            name=name,
            settings=settings,
            provider=provider,
            policy=RefreshPolicy.from_settings(settings),
            state_store=stores[state_store_name],
            state_path=settings.state_path(name),
            sinks=tuple((stores[sink.store], sink) for sink in settings.sinks),
            spool_key=Spool.entry_key(identities[state_store_name], settings.state_path(name)),
        )
    return accounts
