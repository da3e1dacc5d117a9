"""Equal values of many accounts are one object (rotator/config/sharing.py).

The sharing is a memory measure only: every account must load exactly as it would
alone (same values, same types, same fields given), and no account may change
through another.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.config import parse_config
from rotator.providers.registry import provider_class
from tests.support.typed import typed

BASE: dict[str, Any] = {
    "stores": {
        "files": {"type": "file", "directory": "/var/lib/rotator"},
        "bao": {
            "type": "vault",
            "url": "https://bao.example:8200",
            "auth": {"method": "token", "token": "env:BAO_TOKEN"},
        },
    },
    "defaults": {
        "provider": "oauth2",
        "token_url": "https://idp.example/token",
        "grant": "client_credentials",
        "client_secret": "env:SHARED_SECRET",
        "state": {"store": "files"},
    },
}

#: per-account keys with values that are equal but not the same type, or the same
OVERRIDES = st.fixed_dictionaries(
    {},
    optional={
        "jitter": st.sampled_from([0, 0.0, 0.1, 0.25]),
        "refresh_share": st.sampled_from([0.5, 0.67]),
        "timeout": st.sampled_from(["30s", "10s", 30]),
        "tls_verify": st.booleans(),
        "state": st.sampled_from([{"store": "files"}, {"store": "bao"}]),
        "client_secret": st.sampled_from(["env:SHARED_SECRET", "env:OTHER_SECRET"]),
        "extra_params": st.sampled_from([{}, {"audience": "api"}, {"audience": "1"}]),
        "scope": st.sampled_from(["read", "read write"]),
        "refresh_token_warn": st.sampled_from([[], ["7d", "1d"], ["7d"], [86400]]),
        "client_auth": st.sampled_from(["basic", "post"]),
    },
)


def _config(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    accounts = {
        f"acct-{i}": {"client_id": f"c{i}", "sinks": [{"store": "files", "path": f"out/{i}"}]}
        | body
        for i, body in enumerate(bodies)
    }
    return {**BASE, "accounts": accounts}


def _alone(raw: dict[str, Any], name: str) -> Any:
    """The account validated on its own, as pydantic builds it (nothing shared)."""
    model = provider_class("oauth2").settings_model
    body = raw["accounts"][name]
    merged = {k: v for k, v in raw["defaults"].items() if k in model.model_fields}
    return model.model_validate({**merged, **body})


@settings(max_examples=60, deadline=None)
@given(st.lists(OVERRIDES, min_size=2, max_size=6))
def test_every_account_loads_as_it_would_alone(bodies: list[dict[str, Any]]) -> None:
    raw = _config(bodies)
    config = parse_config(json.dumps(raw))
    for name, loaded in config.accounts.items():
        alone = _alone(raw, name)
        assert loaded == alone
        assert typed(loaded.model_dump()) == typed(alone.model_dump())
        assert loaded.model_fields_set == alone.model_fields_set


def test_equal_values_are_one_object_and_no_account_changes_through_another() -> None:
    config = parse_config(json.dumps(_config([{}, {}, {"jitter": 0.2}])))
    a, b, c = (config.accounts[f"acct-{i}"] for i in range(3))
    assert a.state is b.state is c.state
    assert a.client_secret is b.client_secret  # type: ignore[attr-defined]
    assert a.extra_params is b.extra_params  # type: ignore[attr-defined]
    assert a.model_fields_set is b.model_fields_set
    assert a.model_fields_set is not c.model_fields_set  # c gave jitter
    assert a.sinks[0].model_fields_set is b.sinks[0].model_fields_set
    assert a.client_id != b.client_id  # type: ignore[attr-defined]
    # a copy with changes is a new model: the shared originals stay as they were
    copied = a.model_copy(update={"jitter": 0.3})
    assert copied.jitter == 0.3 and "jitter" in copied.model_fields_set
    assert a.jitter == b.jitter == 0.1
    assert "jitter" not in a.model_fields_set and "jitter" not in b.model_fields_set


def test_strings_and_plain_lists_are_one_object_each() -> None:
    """A sink's ``store: files`` spelled per account and the empty ``notify`` list:
    one object each, while each account's own strings stay its own."""
    config = parse_config(json.dumps(_config([{}, {}, {"scope": "read"}])))
    a, b, c = (config.accounts[f"acct-{i}"] for i in range(3))
    assert a.sinks[0].store is b.sinks[0].store is c.sinks[0].store
    assert a.notify is b.notify is c.notify and a.notify == []
    assert a.sinks is not b.sinks  # a list of models is each account's own
    assert a.sinks[0].path == "out/0" and b.sinks[0].path == "out/1"


def test_strings_past_the_limit_are_looked_up_not_kept(monkeypatch: Any) -> None:
    """Only the first STRINGS distinct strings are remembered: a load of many
    accounts does not keep a second index of every client id and path."""
    from rotator.config import sharing

    monkeypatch.setattr(sharing, "STRINGS", 8)
    config = parse_config(json.dumps(_config([{} for _ in range(20)])))
    stores = {id(account.sinks[0].store) for account in config.accounts.values()}
    assert len(stores) == 1  # remembered before the limit: still shared after it
    for i, account in enumerate(config.accounts.values()):
        assert account.client_id == f"c{i}"  # type: ignore[attr-defined]
        assert account.sinks[0].path == f"out/{i}"
