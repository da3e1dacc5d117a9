"""Accounts derive what they used to keep (rotator/rotation/accounts.py).

The class of defect: an account whose derived state path, sinks or spool key
differ from what its settings say (a spool entry that no account claims at
replay, a sink written to the wrong store), or two accounts that share a
refresh policy they do not have in common. Checked over hypothesis' sets of
accounts with state stores, state paths, sinks and timing of their own.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.backends.base import SecretStore
from rotator.backends.file import FileStore
from rotator.config import parse_config
from rotator.config.models import state_store, store_identity
from rotator.rotation.accounts import Accounts, build_accounts, every_account, owned_by
from rotator.schedule import RefreshPolicy

STORES = {
    "files": {"type": "file", "directory": "/var/lib/rotator/state"},
    "out": {"type": "file", "directory": "/var/lib/rotator/out"},
}

bodies = st.fixed_dictionaries(
    {
        "state": st.sampled_from([None, {"store": "files"}, {"store": "out"}]),
        "state_path": st.sampled_from([None, "custom/path"]),
        "sinks": st.lists(st.sampled_from(["files", "out"]), min_size=1, max_size=3),
        "refresh_share": st.sampled_from([None, 0.5, 0.67]),
        "jitter": st.sampled_from([None, 0, 0.2]),
        "retry_initial": st.sampled_from([None, "5s", "10s"]),
    }
)


def _raw(drawn: list[dict[str, Any]]) -> dict[str, Any]:
    accounts: dict[str, Any] = {}
    for i, body in enumerate(drawn):
        account: dict[str, Any] = {
            "client_id": f"c{i}",
            "sinks": [
                {"store": store, "path": f"acct-{i}/{n}.json"}
                for n, store in enumerate(body["sinks"])
            ],
        }
        if body["state"] is not None:
            account["state"] = dict(body["state"])
            if body["state_path"] is not None:
                # one path per store: each place has one writer
                account["state"]["path"] = f"{body['state_path']}/{i}"
        for key in ("refresh_share", "jitter", "retry_initial"):
            if body[key] is not None:
                account[key] = body[key]
        accounts[f"acct-{i}"] = account
    return {
        "stores": STORES,
        "defaults": {
            "provider": "oauth2",
            "token_url": "https://idp.example/token",
            "grant": "client_credentials",
            "client_secret": "env:SHARED_SECRET",
            "state": {"store": "files"},
        },
        "accounts": accounts,
    }


@settings(max_examples=40, deadline=None)
@given(st.lists(bodies, min_size=1, max_size=8))
def test_derived_places_are_the_settings_own_and_policies_are_shared_only_when_equal(
    drawn: list[dict[str, Any]],
) -> None:
    config = parse_config(json.dumps(_raw(drawn)))
    stores: dict[str, SecretStore] = {name: FileStore(name, s) for name, s in config.stores.items()}
    accounts = build_accounts(config, stores)
    assert list(accounts) == list(config.accounts)
    for name, account in accounts.items():
        own = config.accounts[name]
        store_name = state_store(config, name)
        assert account.state_store is stores[store_name]
        assert account.state_path == own.state_path(name)
        assert account.sinks == tuple((stores[sink.store], sink) for sink in own.sinks)
        # the spool key as it was kept before: a spooled grant finds its account
        where = f"{store_identity(config.stores[store_name])}\0{own.state_path(name)}"
        assert account.spool_key == hashlib.sha256(where.encode()).hexdigest()[:32]
        assert account.policy == RefreshPolicy.from_settings(own)
    for a in accounts.values():
        for b in accounts.values():
            assert (a.policy is b.policy) == (a.policy == b.policy)


def test_spool_keys_of_different_accounts_differ() -> None:
    raw = _raw([{"state": None, "state_path": None, "sinks": ["out"]} | _none() for _ in range(50)])
    config = parse_config(json.dumps(raw))
    stores: dict[str, SecretStore] = {name: FileStore(name, s) for name, s in config.stores.items()}
    keys = {account.spool_key for account in build_accounts(config, stores).values()}
    assert len(keys) == 50


def _none() -> dict[str, Any]:
    return {"refresh_share": None, "jitter": None, "retry_initial": None}


def _lazy(count: int) -> tuple[Any, dict[str, SecretStore]]:
    raw = _raw([{"state": None, "state_path": None, "sinks": ["out"]} | _none()] * count)
    config = parse_config(json.dumps(raw))
    stores: dict[str, SecretStore] = {name: FileStore(name, s) for name, s in config.stores.items()}
    return config, stores


def test_accounts_are_whole_at_once_and_built_when_first_asked_for() -> None:
    config, stores = _lazy(5)
    accounts = Accounts(config, stores)
    assert list(accounts) == list(config.accounts) and len(accounts) == 5
    assert "acct-3" in accounts and "nobody" not in accounts
    assert accounts.built() == {}
    first = accounts["acct-3"]
    assert accounts["acct-3"] is first and accounts.get("acct-3") is first
    assert accounts.get("nobody") is None
    assert list(accounts.built()) == ["acct-3"]
    eager = build_accounts(config, stores)["acct-3"]
    assert (eager.name, eager.settings, eager.policy) == (first.name, first.settings, first.policy)
    assert (eager.state_store, eager.spool_key) == (first.state_store, first.spool_key)
    kept = Accounts(config, stores, built={"acct-3": first})
    assert kept["acct-3"] is first and kept["acct-4"] is not accounts["acct-4"]


def test_threads_asking_for_one_account_at_once_get_one_object() -> None:
    config, stores = _lazy(200)
    accounts = Accounts(config, stores)
    barrier = threading.Barrier(8)
    seen: list[list[Any]] = []

    def ask() -> None:
        barrier.wait()
        seen.append([accounts[name] for name in accounts])

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    for objects in seen[1:]:
        assert all(a is b for a, b in zip(objects, seen[0], strict=True))
    assert len(accounts.built()) == 200


def test_the_start_s_view_asks_the_running_mapping_for_each_account() -> None:
    config, stores = _lazy(3)
    running: list[Accounts] = [Accounts(config, stores)]
    view = owned_by(lambda: running[0], every_account)
    assert list(view) == ["acct-0", "acct-1", "acct-2"] and running[0].built() == {}
    reloaded = parse_config(
        json.dumps(_raw([{"state": None, "state_path": None, "sinks": ["out"]} | _none()] * 2))
    )
    running[0] = Accounts(reloaded, stores)  # a reload dropped acct-2
    assert view["acct-0"] is running[0]["acct-0"]
    assert view.get("acct-2") is None
    assert len(view) == 3  # the start's names: the plan counts the looks by them
    mine = owned_by(lambda: running[0], lambda name: name == "acct-1")
    assert list(mine) == ["acct-1"]


def test_the_state_stores_are_named_without_building_an_account() -> None:
    """The start asks which stores hold the states (may one of them list?) before its
    first looks: answered from the settings, so a start on a store that cannot list
    builds no account for it (service/listing.py)."""
    from rotator.service.listing import unlisted

    config, stores = _lazy(40)
    accounts = Accounts(config, stores)
    built = build_accounts(config, stores).values()
    assert {id(s) for s in accounts.state_stores()} == {id(a.state_store) for a in built}
    assert unlisted(accounts) == frozenset()
    assert accounts.built() == {}
