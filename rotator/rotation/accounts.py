"""Accounts ready to rotate, built once per configuration load, and lease owners.

An :class:`Account` binds an account's validated settings to its provider, its
refresh policy and the store objects it reads and writes, so no rotation parses
configuration. A lease owner names its host, PID namespace and PID, so a lease
left by a process that provably died here can be taken over at once.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from rotator.backends.base import SecretStore
from rotator.config.models import AccountSettings, Config, Sink, state_store, store_identity
from rotator.providers.base import Provider
from rotator.providers.registry import provider_class
from rotator.rotation.spool import Spool
from rotator.schedule import RefreshPolicy

__all__ = ["Account", "build_accounts", "default_owner", "owner_is_dead"]


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


def default_owner() -> str:
    """``host/pid-namespace/pid:random``: unique, and says where to look for the holder."""
    return f"{_process_home()}/{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _process_home() -> str:
    """This host and PID namespace: where a lease owner's PID means something."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()}/{namespace}"


def owner_is_dead(owner: str) -> bool:
    """True only when the lease owner provably died: a process of this host and
    PID namespace whose PID no longer exists. Anything else (another host, an
    older owner format, a live or foreign PID) is treated as alive: its lease
    is left to expire."""
    where, _, rest = owner.rpartition("/")
    pid_text, sep, _ = rest.partition(":")
    if where != _process_home() or not sep or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: alive, someone else's
    return False
