"""Accounts validated through a template equal accounts validated whole
(rotator/config/templates.py).

The fast path must give what ``model_validate`` gives, value for value and type
for type, and refuse what it refuses with the same errors: hypothesis draws runs
of accounts, good and bad, that differ from each other in a few keys, and each
account is compared with the account validated on its own.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rotator.config import parse_config
from rotator.config.templates import MAX_DIFFERENT, Templates, same
from rotator.providers.registry import provider_class
from tests.support.typed import typed

OAUTH2 = provider_class("oauth2").settings_model
FAXMAX = provider_class("faxmax").settings_model

BASE: dict[str, Any] = {
    "provider": "oauth2",
    "token_url": "https://idp.example/token",
    "grant": "client_credentials",
    "client_auth": "basic",
    "client_secret": "env:SHARED_SECRET",
    "rate_limit": {"per_second": 10, "burst": 5, "concurrency": 4},
    "state": {"store": "files"},
    "client_id": "c0",
    "sinks": [{"store": "sinks", "path": "c0.json"}],
}

#: per-account values: good ones, equal ones of another type, and bad ones (a field's
#: own refusal, and combinations only a model validator refuses)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "client_id": st.one_of(st.text(max_size=8), st.sampled_from([None, 1, True, 1.5])),
    "client_secret": st.sampled_from(["env:SHARED_SECRET", "env:OTHER", "nope", None, 3]),
    "sinks": st.one_of(
        st.builds(
            lambda path, fmt: [{"store": "sinks", "path": path, "format": fmt}],
            st.sampled_from(["a.json", "b/c.json", "../x", "", "a%2e%2e", "x\ny"]),
            st.sampled_from(["json", "env", "yaml"]),
        ),
        st.sampled_from([[], None, "a.json", [{"store": "sinks"}], [{"store": 1, "path": "p"}]]),
    ),
    "token_url": st.sampled_from(
        ["https://idp.example/token", "https://other.example/t", "ftp://x", "https://u:p@x/t"]
    ),
    "jitter": st.sampled_from([0, 0.0, -0.0, 0.1, 0.5, 0.7, True, "0.1", math.nan]),
    "timeout": st.sampled_from(["30s", 30, 30.0, "5m", "3m", "0s", True, "x"]),
    "client_auth": st.sampled_from(["basic", "post", "none", "other"]),
    "grant": st.sampled_from(["client_credentials", "password", "refresh_token"]),
    "scope": st.sampled_from([None, "read", "", 1]),
    "extra_params": st.sampled_from([{}, {"audience": "api"}, {"grant_type": "x"}, {"a": 1}]),
    "state": st.sampled_from([{"store": "files"}, {"store": "bao", "path": "s/x"}, {}, None]),
    "rate_limit": st.sampled_from(
        [{"per_second": 10, "burst": 5, "concurrency": 4}, {"per_second": 0}, {"burst": 1.0}]
    ),
    "lease_ttl": st.sampled_from(["2m", "10s", 120]),
    "refresh_token_warn": st.sampled_from([None, ["7d", "1d"], [86400], ["x"]]),
}

ACCOUNT = st.dictionaries(st.sampled_from(sorted(VALUES)), st.none(), max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({key: VALUES[key] for key in keys})
)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    """The errors, each exception in them as its type and text (exceptions compare by id)."""
    return [
        {**e, "ctx": {k: (type(v), str(v)) for k, v in e.get("ctx", {}).items()}}
        for e in exc.errors(include_url=False)
    ]


def _outcome(model: type[Any], validate: Any) -> tuple[str, Any]:
    try:
        found = validate()
    except ValidationError as exc:
        return "refused", _errors(exc)
    assert type(found) is model
    return "valid", (typed(found.model_dump()), found.model_fields_set, found)


@settings(max_examples=300, deadline=None)
@given(st.lists(ACCOUNT, min_size=1, max_size=8))
def test_each_account_is_what_model_validate_makes_of_it(changes: list[dict[str, Any]]) -> None:
    templates = Templates({})
    for change in changes:
        raw = {**copy.deepcopy(BASE), **change}
        alone = _outcome(OAUTH2, lambda raw=raw: OAUTH2.model_validate(copy.deepcopy(raw)))
        found = _outcome(OAUTH2, lambda raw=raw: templates.validate(OAUTH2, raw))
        assert found[0] == alone[0]
        if found[0] == "refused":
            assert found[1] == alone[1]
        else:
            assert found[1][:2] == alone[1][:2]
            assert found[1][2] == alone[1][2]


def test_accounts_written_alike_are_copied_from_the_first() -> None:
    templates = Templates({})
    for index in range(50):
        raw = {
            **copy.deepcopy(BASE),
            "client_id": f"c{index}",
            "sinks": [{"store": "sinks", "path": f"c{index}.json"}],
        }
        account = templates.validate(OAUTH2, raw)
        assert account.client_id == f"c{index}"
        assert account.sinks[0].path == f"c{index}.json"
    assert (templates.whole, templates.fast) == (1, 49)


def test_a_bad_copy_is_refused_with_the_whole_validation_s_errors() -> None:
    templates = Templates({})
    templates.validate(OAUTH2, copy.deepcopy(BASE))
    bad = {**copy.deepcopy(BASE), "client_id": None}  # only the model validator minds
    with pytest.raises(ValidationError) as fast:
        templates.validate(OAUTH2, bad)
    with pytest.raises(ValidationError) as whole:
        OAUTH2.model_validate(bad)
    assert _errors(fast.value) == _errors(whole.value)
    assert "client_auth 'basic' needs client_id" in str(fast.value)


def test_many_differences_or_a_field_with_its_own_validator_go_whole() -> None:
    templates = Templates({})
    templates.validate(OAUTH2, copy.deepcopy(BASE))
    others = {
        "client_id": "x",
        "sinks": [{"store": "sinks", "path": "x.json"}],
        "client_secret": "env:X",
        "token_url": "https://x.example/t",
        "rate_limit": {"per_second": 1, "burst": 1, "concurrency": 1},
    }
    assert len(others) > MAX_DIFFERENT
    templates.validate(OAUTH2, {**copy.deepcopy(BASE), **others})
    assert (templates.whole, templates.fast) == (2, 0)
    # faxmax checks remote_ip with a field validator of its model: never copied in
    body = {"provider": "faxmax", "domain": "fax.example", "username": "u"}
    body |= {"sinks": [{"store": "s", "path": "p"}], "api_code": "env:C", "api_password": "env:P"}
    templates.validate(FAXMAX, {**body, "remote_ip": "10.0.0.1"})
    with pytest.raises(ValidationError, match="is not an IP address"):
        templates.validate(FAXMAX, {**body, "remote_ip": "10.0.0.300"})
    templates.validate(FAXMAX, {**body, "remote_ip": "10.0.0.2"})
    assert templates.fast == 0


JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=3),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=8,
)


@given(JSON, JSON)
def test_same_means_one_value_type_for_type(a: Any, b: Any) -> None:
    if same(a, b):
        assert json.dumps(typed(a)) == json.dumps(typed(b))
    if "nan" not in repr(a):
        assert same(a, copy.deepcopy(a))
    assert not same(1, True) and not same(1, 1.0) and not same(0.0, -0.0)
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})  # another order: validated alone


def test_a_configuration_of_many_accounts_loads_as_each_would_alone() -> None:
    accounts = {
        f"acct-{i}": {"client_id": f"c{i}", "sinks": [{"store": "files", "path": f"o/{i}"}]}
        for i in range(40)
    }
    accounts["acct-7"]["jitter"] = 0.2
    raw = {
        "stores": {"files": {"type": "file", "directory": "/var/lib/rotator"}},
        "defaults": {k: v for k, v in BASE.items() if k not in ("client_id", "sinks")},
        "accounts": accounts,
    }
    raw["defaults"]["state"] = {"store": "files"}
    config = parse_config(json.dumps(raw))
    for name, loaded in config.accounts.items():
        body = {**raw["defaults"], **raw["accounts"][name]}
        alone = OAUTH2.model_validate(body)
        assert loaded == alone
        assert typed(loaded.model_dump()) == typed(alone.model_dump())
        assert loaded.model_fields_set == alone.model_fields_set
