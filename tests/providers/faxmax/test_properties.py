"""Property: whatever a FaxMAX endpoint answers, a refresh yields a TokenSet or a typed error.

Answers are generated around the JSON-RPC 2.0 shape (results, error objects with
odd codes and messages, wrong ids, wrong versions, non-objects, raw bytes) and
served through ``httpx.MockTransport``: a pure protocol edge, no server needed.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.errors import ProviderError
from rotator.providers.faxmax.provider import FaxmaxProvider, FaxmaxSettings
from rotator.state import AccountState
from rotator.tokens import TokenSet
from tests.support import leakcheck

_PASSWORD_ENV = "ROTATOR_TEST_FAXMAX_PROPERTY_PASSWORD"
os.environ[_PASSWORD_ENV] = leakcheck.register("faxmax-property-password", "password")

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_error = st.fixed_dictionaries(
    {},
    optional={
        "code": st.integers(-40000, 40000) | st.text(max_size=5) | st.none() | st.booleans(),
        "message": st.text(max_size=30) | st.integers() | st.none(),
        "data": _json,
    },
)
_result = st.one_of(
    st.fixed_dictionaries({"token": st.text(max_size=30)}),
    st.fixed_dictionaries({"token": _json}),
    _json,
)


@st.composite
def answers(draw: st.DrawFn) -> tuple[int, bytes]:
    status = draw(st.sampled_from([200, 200, 200, 400, 401, 403, 429, 500, 502, 503]))
    kind = draw(st.sampled_from(["result", "error", "garbage", "json"]))
    if kind == "garbage":
        return status, draw(st.binary(max_size=64))
    if kind == "json":
        return status, json.dumps(draw(_json)).encode()
    body: dict[str, Any] = {
        "jsonrpc": draw(st.sampled_from(["2.0", "2.0", "1.0", None])),
        "id": draw(st.sampled_from(["same", "other", None])),
    }
    if kind == "result":
        body["result"] = draw(_result)
    else:
        body["error"] = draw(_error | _json)
    return status, json.dumps(body).encode()


def _provider() -> FaxmaxProvider:
    account_settings = FaxmaxSettings.model_validate(
        {
            "provider": "faxmax",
            "domain": "fax.example",
            "username": "ops",
            "password": f"env:{_PASSWORD_ENV}",
            "sinks": [{"store": "files", "path": "x.json"}],
        }
    )
    return FaxmaxProvider("prop", account_settings)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answers(), with_session=st.booleans())
def test_refresh_returns_a_tokenset_or_a_typed_error(
    answer: tuple[int, bytes], with_session: bool
) -> None:
    status, body = answer

    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(dict(httpx.QueryParams(request.content.decode()))["data"])
        text = body.replace(b'"same"', json.dumps(sent["id"]).encode())
        return httpx.Response(status, content=text, headers={"Content-Type": "application/json"})

    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    state = AccountState(account="prop", provider="faxmax")
    if with_session:
        from rotator.secrets import Secret

        state = AccountState(
            account="prop",
            provider="faxmax",
            access_token=Secret("session-xyz"),
            issued_at=now,
            expires_at=now.replace(hour=13),
        )
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        try:
            tokens = _provider().refresh(state, client, now)
        except ProviderError as exc:
            assert exc.code
            assert _PASSWORD_ENV not in str(exc)
        else:
            assert isinstance(tokens, TokenSet)
            assert tokens.access_token.reveal().strip()
            assert tokens.expires_at > now
