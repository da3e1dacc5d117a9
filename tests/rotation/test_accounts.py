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
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.backends.base import SecretStore
from rotator.backends.file import FileStore
from rotator.config import parse_config
from rotator.config.models import state_store, store_identity
from rotator.rotation.accounts import build_accounts
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
