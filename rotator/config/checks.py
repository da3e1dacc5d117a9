"""The checks no single model can make: references, one writer per place, store names.

They run over every account once its model is built (:mod:`.loading`): a sink or
state names a defined store, each (store, path) has one writer, a Secrets Manager
name is one it takes. At 100,000 accounts they are a pass each over the
accounts on the start's path, so the message of a refusal (which names the
file, the account and the key) is only written when there is one to make.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from rotator.config.fields import shown
from rotator.config.models import AccountSettings, Config
from rotator.errors import ConfigError

__all__ = ["Origins", "check_aws_names", "check_paths", "check_references", "state_store_of"]


class Origins:
    """Account name -> ``"accounts.d/x.yaml: "``, the file a message names (or nothing)."""

    def __init__(self, origins: dict[Any, str], main: str) -> None:
        self.origins = origins
        self.main = main

    def __call__(self, name: Any) -> str:
        where = self.origins.get(name, self.main)
        return f"{where}: " if where else ""


def check_references(config: Config, at: Origins) -> None:
    defined = ", ".join(sorted(config.stores)) or "none"
    stores = config.stores
    for name, account in config.accounts.items():
        for index, sink in enumerate(account.sinks):
            store = stores.get(sink.store)
            if store is None or (store.type != "file" and sink.format != "json"):
                where = f"{at(name)}accounts.{name}.sinks[{index}]"
            if store is None:
                raise ConfigError(
                    f"{shown(sink.store)} is not a defined store (defined: {defined})",
                    path=f"{where}.store",
                )
            if store.type != "file" and sink.format != "json":
                raise ConfigError(
                    f"format {sink.format!r} is for file stores; {store.type} stores "
                    "hold the json fields (leave format out)",
                    path=f"{where}.format",
                )
        if account.state is None:
            file_stores = [n for n, s in stores.items() if s.type == "file"]
            if not stores:
                raise ConfigError(
                    "no state store: define one under stores and set "
                    "defaults.state.store (or state.store here)",
                    path=f"{at(name)}accounts.{name}.state",
                )
            if len(stores) > 1 and len(file_stores) != 1:
                raise ConfigError(
                    "which store keeps the state? set state.store here or defaults.state.store "
                    f"(defined: {defined})",
                    path=f"{at(name)}accounts.{name}.state",
                )
        elif account.state.store not in stores:
            raise ConfigError(
                f"{shown(account.state.store)} is not a defined store (defined: {defined})",
                path=f"{at(name)}accounts.{name}.state.store",
            )


def state_store_of(config: Config) -> Callable[[AccountSettings], str]:
    """:func:`~rotator.config.models.state_store` for a checked configuration's
    accounts, its default store found once."""
    stores = config.stores
    if len(stores) == 1:
        default = next(iter(stores))
    else:
        default = next((n for n, s in stores.items() if s.type == "file"), "")

    def store_of(account: AccountSettings) -> str:
        state = account.state
        return state.store if state is not None else default

    return store_of


#: what owns a place: (account, key), with the sink's index; written out only in a message
_Owner = tuple[Any, str, int]


def _owner_text(owner: _Owner, at: Origins) -> str:
    name, what, index = owner
    if what == "sink":
        return f"{at(name)}accounts.{name}.sinks[{index}].path"
    if what == "state":
        return f"{at(name)}accounts.{name}.state"
    return f"{at(name)}accounts.{name} ({what} record)"


def check_paths(config: Config, at: Origins) -> None:
    """Every (store, path) has one writer: a state, an alert record or a sink.

    Paths are compared as a store reads them, percent-decoded: ``a%2Fb`` and
    ``a/b`` are one place in Vault.
    """
    owners: dict[tuple[str, str], _Owner] = {}
    store_of = state_store_of(config)

    def claim(store: str, path: str, owner: _Owner) -> None:
        other = owners.setdefault((store, _spelling(path)), owner)
        if other is not owner and other != owner:
            raise ConfigError(
                f"{store}:{path} is already written by {_owner_text(other, at)}; "
                "give each its own path",
                path=_owner_text(owner, at),
            )

    for name, account in config.accounts.items():
        store = store_of(account)
        claim(store, account.state_path(name), (name, "state", 0))
        claim(store, f"alerts/{name}", (name, "alert", 0))
        if account.notify:
            claim(store, f"notify/{name}", (name, "notify", 0))
    for name, account in config.accounts.items():
        for index, sink in enumerate(account.sinks):
            claim(sink.store, sink.path, (name, "sink", index))


def check_aws_names(config: Config, at: Origins) -> None:
    """Secrets Manager takes fewer names than a path allows: say so in ``check``, not
    at the first write (``prefix`` + path, letters, digits and ``/_+=.@-``)."""
    aws = {name: store.prefix for name, store in config.stores.items() if store.type == "aws"}
    if not aws:
        return
    store_of = state_store_of(config)
    for name, account in config.accounts.items():
        places = [(store_of(account), account.state_path(name), (name, "state", 0))]
        places += [
            (sink.store, sink.path, (name, "sink", index))
            for index, sink in enumerate(account.sinks)
        ]
        for store_name, path, owner in places:
            prefix = aws.get(store_name)
            if prefix is not None and not _AWS_NAME.fullmatch(prefix + path):
                raise ConfigError(
                    f"{shown(prefix + path)} is not a Secrets Manager name (prefix + "
                    "path: letters, digits and /_+=.@-, at most 512 characters)",
                    path=_owner_text(owner, at),
                )


_AWS_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")


def _spelling(path: str) -> str:
    """One spelling of a validated store path (decoded until it stops changing)."""
    path = path.strip("/")
    while "%" in path and (decoded := unquote(path)) != path:
        path = decoded
    return path
