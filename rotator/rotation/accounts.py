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

    def read_state(self, *, fresh: bool = False) -> tuple[AccountState, Version | None]:
        """The stored state (a fresh one when there is none) and its version.

        What the start's look handed off (:meth:`hand_off`) is taken instead of a
        store read, once; ``fresh`` reads the store whatever was handed off.
        """
        if not fresh:
            seen = _HANDED_OFF.pop(id(self), None)
            if seen is not None and seen[0] is self:
                return seen[1], seen[2]
        record: Record | None = self.state_store.read(self.state_path)
        if record is None:
            return self.absent_state(), None
        return AccountState.from_record(self.name, record.strings()), record.version

    def absent_state(self) -> AccountState:
        """The state of an account whose store holds none."""
        return AccountState(account=self.name, provider=self.settings.provider)

    def hand_off(self, state: AccountState, version: Version | None) -> None:
        """Give what was just read to the account's next :meth:`read_state` (once).

        Used by the start's look (service/scheduling.py ``StartPlan.look``) so its
        first run does not read the state a second time. Why a belief handed on
        is sound there, and when the look keeps one: ``StartPlan.look``.
        """
        _HANDED_OFF[id(self)] = (self, state, version)

    def drop_hand_off(self) -> None:
        """Forget what was handed off and not taken (the run will not come)."""
        _HANDED_OFF.pop(id(self), None)


#: id(account) -> (the account, its state and version as the start's look read them),
#: until its next read_state takes it. The account itself is kept beside its id, so
#: the id is not reused by another object while the entry lives; dict operations are
#: atomic, so no lock (each account's run holds the account's lock anyway).
_HANDED_OFF: dict[int, tuple[Account, AccountState, Version | None]] = {}


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
