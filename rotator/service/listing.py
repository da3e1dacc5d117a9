"""The start's one listing of a state directory, instead of a read per new account.

Kept apart from service/scheduling.py (the start's plan), which calls it once per
plan before the first looks. Why an absent belief taken from a listing is sound:
``StartPlan.look``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from rotator.rotation.accounts import Accounts

if TYPE_CHECKING:
    from rotator.rotation.accounts import Account

__all__ = ["unlisted"]

_log = structlog.get_logger("rotator.daemon")

#: accounts sharing a state directory before one listing of it beats reading each
_LIST_FROM = 16


def unlisted(accounts: Mapping[str, Account]) -> frozenset[str]:
    """The accounts whose state path one listing of its directory showed absent.

    A store that can list (``present_under``: Vault, when the policy grants
    ``list`` on the directory's metadata) answers for a whole directory in one
    call; a new account's state then costs the start no read. A store that
    cannot, or a policy that refuses it, leaves every account to be read.
    """
    # the stores first, without building an account (Accounts builds each at its first
    # use): a store that cannot list (the file store) needs nothing more at the start
    known = accounts.state_stores() if isinstance(accounts, Accounts) else None
    if known is not None and not any(hasattr(store, "present_under") for store in known):
        return frozenset()
    stores = {id(a.state_store): a.state_store for a in accounts.values()}
    if not any(hasattr(store, "present_under") for store in stores.values()):
        return frozenset()  # the file store: nothing to group (100,000 accounts at a start)
    groups: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for account in accounts.values():
        directory, _, leaf = account.state_path.rpartition("/")
        groups.setdefault((id(account.state_store), directory), []).append((account.name, leaf))
    absent: set[str] = set()
    for (store_id, directory), members in groups.items():
        present_under = getattr(stores[store_id], "present_under", None)
        if present_under is None or not directory or len(members) < _LIST_FROM:
            continue
        try:
            present = present_under(directory)
        except Exception as exc:  # a listing is a shortcut: whatever fails, each state is read
            _log.info("state listing failed; each state is read", error=repr(exc))
            continue
        if present is not None:
            absent.update(name for name, leaf in members if leaf not in present)
    return frozenset(absent)
