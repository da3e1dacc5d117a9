"""Accounts ready to rotate, built once per configuration load.

An :class:`Account` binds an account's validated settings to its provider, its
refresh policy and the store objects it reads and writes, so no rotation parses
configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from rotator.backends.base import Record, SecretStore, Version
from rotator.config.checks import state_store_of
from rotator.config.models import AccountSettings, Config, Sink, store_identity
from rotator.providers.base import Provider
from rotator.providers.registry import provider_class
from rotator.rotation.spool import Spool
from rotator.schedule import RefreshPolicy
from rotator.state import AccountState

__all__ = ["Account", "Accounts", "build_accounts", "every_account", "owned_by"]


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
    """Every account of ``config``, built now (the commands; the daemon builds as it goes)."""
    accounts = Accounts(config, stores)
    return {name: accounts[name] for name in accounts}


class Accounts(Mapping[str, Account]):
    """Every account of a configuration, each built the first time it is asked for.

    At 100,000 accounts building them all took 0.8-1.8 CPU s, and the daemon's first
    job waited for it. The mapping is whole from the start (its names are the
    configuration's), so whatever counts it, iterates it or asks whether a name is
    in it sees every account at once; only the objects come when they are first
    used: each first run builds its own, in a worker, while the others run. A
    reload keeps the objects built so far (:meth:`built`), and the rest are built
    from the new configuration when asked for.

    Building late refuses nothing building early would: for a checked
    configuration the stores exist and the constructors only keep their arguments.
    Two threads asking for one name at once get one object (the first one stored).
    """

    def __init__(
        self,
        config: Config,
        stores: Mapping[str, SecretStore],
        *,
        built: Mapping[str, Account] | None = None,
    ) -> None:
        self._settings = config.accounts
        self._stores = stores
        self._built: dict[str, Account] = dict(built or {})
        # a store's identity is a serialization of its settings: once per store
        self._identities = {name: store_identity(s) for name, s in config.stores.items()}
        self._policies: dict[RefreshPolicy, RefreshPolicy] = {}
        self._providers: dict[str, type[Provider]] = {}
        self._state_store = state_store_of(config)

    def __getitem__(self, name: str) -> Account:
        found = self._built.get(name)
        if found is not None:
            return found
        settings = self._settings[name]  # KeyError: not an account of this configuration
        return self._built.setdefault(name, self._build(name, settings))

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def __contains__(self, name: object) -> bool:
        return name in self._settings

    def state_stores(self) -> list[SecretStore]:
        """The stores the accounts' states live in, from the settings: nothing built."""
        names = {self._state_store(settings) for settings in self._settings.values()}
        return [self._stores[name] for name in sorted(names)]

    def built(self) -> dict[str, Account]:
        """The accounts built so far (a copy: taken whole, while others are being built)."""
        return self._built.copy()

    def _build(self, name: str, settings: AccountSettings) -> Account:
        provider = self._providers.get(settings.provider)
        if provider is None:
            provider = self._providers[settings.provider] = provider_class(settings.provider)
        store = self._state_store(settings)
        policy = RefreshPolicy.from_settings(settings)
        return Account(
            name=name,
            settings=settings,
            provider=provider(name, settings),
            policy=self._policies.setdefault(policy, policy),
            state_store=self._stores[store],
            stores=self._stores,
            state_identity=self._identities[store],
        )


def every_account(name: str) -> bool:
    """Who owns what without coordination: this process, every account."""
    return True


def owned_by(
    current: Callable[[], Mapping[str, Account]], owns: Callable[[str], bool]
) -> Mapping[str, Account]:
    """The accounts ``owns`` says are this process's, for the start's first runs.

    Every account: a view of the start's names that asks ``current()`` (the
    mapping running now) for each object, so nothing is built before the first
    run, each first run builds its own, and one after a reload looks at the
    reloaded account (or at none: the account was removed)."""
    accounts = current()
    if owns is every_account:
        return _Current(current, accounts)
    return {name: accounts[name] for name in accounts if owns(name)}


class _Current(Mapping[str, Account]):
    """The names of one mapping, the objects of whichever one runs now."""

    def __init__(self, current: Callable[[], Mapping[str, Account]], names: Mapping[str, Account]):
        self._current = current
        self._names = names

    def __getitem__(self, name: str) -> Account:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
