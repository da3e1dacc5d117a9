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
    """An account ready to rotate: built once per configuration load.

    It holds only what differs from account to account, or one shared object:
    whatever can be derived from its settings (the state path, the sinks with
    their stores, the spool key) is derived at each use. At 100,000 accounts the
    kept copies cost about 330 bytes an account (bench/results.md, "Eighth round"); a
    derivation costs a string or a hash per run, next to a store read.
    """

    name: str
    settings: AccountSettings
    provider: Provider
    #: one object for every account with equal timing settings
    policy: RefreshPolicy
    state_store: SecretStore
    #: every store by name (one mapping for all the accounts of a load)
    stores: Mapping[str, SecretStore]
    #: where the state store's data lives (one string per store; keys the spool)
    state_identity: str = ""

    @property
    def state_path(self) -> str:
        return self.settings.state_path(self.name)

    @property
    def sinks(self) -> tuple[tuple[SecretStore, Sink], ...]:
        """Each sink with the store it is written to."""
        return tuple((self.stores[sink.store], sink) for sink in self.settings.sinks)

    @property
    def spool_key(self) -> str:
        return Spool.entry_key(self.state_identity, self.state_path)

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
    policies: dict[RefreshPolicy, RefreshPolicy] = {}
    for name, settings in config.accounts.items():
        provider = provider_class(settings.provider)(name, settings)
        state_store_name = state_store(config, name)
        policy = RefreshPolicy.from_settings(settings)
        accounts[name] = Account(
            name=name,
            settings=settings,
            provider=provider,
            policy=policies.setdefault(policy, policy),
            state_store=stores[state_store_name],
            stores=stores,
            state_identity=identities[state_store_name],
        )
    return accounts
