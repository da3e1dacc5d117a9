"""Consumer views through every store, read back the way a consumer reads them.

A view holds strings and objects of strings (rotator/tokens.py ``ConsumerView``):
Fax.Plus ``headers`` must reach a consumer as a JSON object it can hand to its
HTTP client as it is, in a ``json`` file, in Vault KV v2 and in Secrets Manager,
never as a JSON string to decode twice. Every provider's view is written through
rotation's own publish path to each store and read back twice: by rotator (equal
to what was written, so an unchanged view writes nothing) and by a consumer
(the file, the KV v2 API with the consumer policy, GetSecretValue).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.backends.aws import AwsStore
from rotator.backends.base import SecretStore, record_identity, written_by_rotator
from rotator.backends.file import FileStore
from rotator.backends.file.formats import parse, render
from rotator.backends.vault.store import VaultStore
from rotator.config import parse_config
from rotator.config.models import FileStoreSettings, Sink
from rotator.providers.base import Provider
from rotator.providers.registry import PROVIDERS, provider_class
from rotator.rotation.publish import UNREAD, publish
from rotator.secrets import Secret
from rotator.state import AccountState
from rotator.tokens import TokenSet
from tests.backends.conftest import aws_settings, token_env, unique, vault_settings
from tests.fakes.faxplus import FaxPlusEmulator
from tests.fakes.vendorhttp import running

#: the smallest valid account of every provider (references are not resolved here)
ACCOUNTS: dict[str, dict[str, Any]] = {
    "oauth2": {
        "token_url": "https://idp.example/token",
        "grant": "client_credentials",
        "client_id": "svc",
        "client_secret": "env:UNUSED",
    },
    "faxplus": {
        "client_id": "APIK-view-client",
        "client_secret": "env:UNUSED",
        "enhanced_security": False,
    },
    "faxplus-pat": {"token": "env:UNUSED", "expires_at": "2031-01-31"},
    "bifit": {"username": "79990001122", "password": "env:UNUSED"},
    "faxmax": {"domain": "fax.example.com", "username": "robot", "password": "env:UNUSED"},
}


@dataclass
class Place:
    kind: str
    store: SecretStore
    #: what a consumer that knows nothing of rotator reads at a path
    consumer_read: Callable[[str], dict[str, Any]]


@pytest.fixture(params=["file", "vault", "aws"])
def place(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Place]:
    made: Place
    if request.param == "file":
        directory = tmp_path / "store"
        store: SecretStore = FileStore("files", FileStoreSettings(type="file", directory=directory))
        made = Place("file", store, lambda path: json.loads((directory / path).read_text()))
    elif request.param == "vault":
        bao = request.getfixturevalue("bao")
        token = bao.create_token(["rotator", "rotator-tests"])
        store = VaultStore(
            "vault",
            vault_settings(bao.url, {"method": "token", "token": token_env(monkeypatch, token)}),
        )
        reader = bao.create_token(["consumer"])

        def from_kv(path: str) -> dict[str, Any]:
            with bao.api(reader) as api:
                answer = api.get(f"secret/data/rotator/{path}")
            answer.raise_for_status()
            data: dict[str, Any] = answer.json()["data"]["data"]
            return data

        made = Place("vault", store, from_kv)
    else:
        request.getfixturevalue("aws_env")
        moto = request.getfixturevalue("moto")
        store = AwsStore("aws", aws_settings(moto.endpoint_url))
        consumer = moto.client()

        def from_sm(path: str) -> dict[str, Any]:
            answer = consumer.get_secret_value(SecretId=f"rotator/{path}")
            data: dict[str, Any] = json.loads(answer["SecretString"])
            return data

        made = Place("aws", store, from_sm)
    yield made
    made.store.close()


def provider_for(name: str, **overrides: Any) -> Provider:
    body = {"provider": name, **ACCOUNTS[name], **overrides}
    raw = {
        "stores": {"files": {"type": "file", "directory": "/nonexistent"}},
        "accounts": {"acct": {**body, "sinks": [{"store": "files", "path": "acct.json"}]}},
    }
    settings = parse_config(yaml.safe_dump(raw)).accounts["acct"]
    return provider_class(name)("acct", settings)


def plain(view: Any) -> dict[str, Any]:
    """A view as plain JSON values (objects as dicts), for comparing with what came back."""
    return {k: v if isinstance(v, str) else dict(v) for k, v in view.items()}


def sink(path: str, fmt: str = "json") -> Sink:
    return Sink.model_validate({"store": "any", "path": path, "format": fmt})


# -- Fax.Plus headers, end to end ------------------------------------------------------


def test_faxplus_headers_from_the_store_are_the_http_headers_of_an_api_call(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's acceptance test: a consumer reads ``headers`` from the store and
    passes it unchanged to ``GET /accounts/self``, which wants Bearer and x-fax-clientid."""
    with running(FaxPlusEmulator()) as vendor:
        monkeypatch.setenv("FAXPLUS_SECRET", vendor.clients[vendor.client_id])
        provider = provider_for(
            "faxplus",
            client_id=vendor.client_id,
            client_secret="env:FAXPLUS_SECRET",
            token_url=vendor.token_url,
            api_base=vendor.api_base,
        )
        state = AccountState("acct", refresh_token=Secret(vendor.grant()))
        with httpx.Client() as client:
            tokens = provider.refresh(state, client, datetime.now(UTC))
        path = f"apps/{unique()}"
        first = publish(place.store, sink(path), provider.consumer_view(tokens), expected=None)
        assert first.changed

        secret = place.consumer_read(path)
        assert isinstance(secret["headers"], dict)
        assert secret["headers"]["x-fax-clientid"] == vendor.client_id
        with httpx.Client() as consumer:
            answer = consumer.get(vendor.api_base + "/accounts/self", headers=secret["headers"])
        assert answer.status_code == 200, answer.text

        # rotator reads back what it wrote: the same view again writes nothing
        again = publish(place.store, sink(path), provider.consumer_view(tokens), expected=UNREAD)
        assert not again.changed and again.version == first.version


def test_the_emulated_api_refuses_headers_without_the_client_id() -> None:
    """The emulator is the strict side of the test above: a header short is a 403."""
    with running(FaxPlusEmulator()) as vendor:
        token = vendor.issue("access")
        with vendor.lock:
            vendor.access[token] = (datetime.now(UTC).timestamp() + 3600, vendor.client_id)
        with httpx.Client() as consumer:
            url = vendor.api_base + "/accounts/self"
            bare = consumer.get(url, headers={"Authorization": f"Bearer {token}"})
            full = consumer.get(
                url,
                headers={"Authorization": f"Bearer {token}", "x-fax-clientid": vendor.client_id},
            )
    assert (bare.status_code, full.status_code) == (403, 200)


# -- every provider's view, every store ------------------------------------------------

_TOKEN = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80)


@st.composite
def tokensets(draw: st.DrawFn) -> TokenSet:
    issued = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(
        seconds=draw(st.integers(0, 10 * 365 * 86400))
    )
    return TokenSet(
        access_token=Secret(draw(_TOKEN)),
        token_type=draw(st.sampled_from(["Bearer", "session", "MAC"])),
        issued_at=issued,
        expires_at=issued + timedelta(seconds=draw(st.integers(60, 86400))),
        extra=draw(
            st.fixed_dictionaries(
                {}, optional={"user_id": st.from_regex(r"[0-9]{1,12}", fullmatch=True)}
            )
        ),
    )


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=st.sampled_from(sorted(PROVIDERS.names())), tokens=tokensets())
def test_every_providers_view_round_trips_through_every_store(
    place: Place, name: str, tokens: TokenSet
) -> None:
    view = provider_for(name).consumer_view(tokens)
    path = f"apps/{unique()}"
    written = publish(place.store, sink(path), view, expected=None)
    record = place.store.read(path)
    assert record is not None
    assert plain(record.data) == plain(view)
    assert place.consumer_read(path) == plain(view)
    assert not publish(place.store, sink(path), view, expected=written.version).changed


@given(name=st.sampled_from(sorted(PROVIDERS.names())), tokens=tokensets())
def test_every_providers_view_renders_and_parses_in_every_file_format(
    name: str, tokens: TokenSet
) -> None:
    view = provider_for(name).consumer_view(tokens)
    assert parse(render(view, "json"), "json") == plain(view)
    assert parse(render(view, "token"), "token") == {"access_token": view["access_token"]}
    flat = parse(render(view, "env"), "env")
    assert all(isinstance(value, str) for value in flat.values())
    assert flat == {
        key: view[key]
        for key in ("access_token", "token_type", "expires_at", "client_id")
        if key in view
    }
    assert render(flat, "env") == render(view, "env")


@given(name=st.sampled_from(sorted(PROVIDERS.names())), first=tokensets(), second=tokensets())
def test_every_providers_view_says_whose_it_is(
    name: str, first: TokenSet, second: TokenSet
) -> None:
    """A Vault store knows a sink is rotator's by its view (backends/base.py
    written_by_rotator): a provider whose view did not name its account and provider
    would have its second publish from a new process refused as someone else's."""
    provider = provider_for(name)
    assert record_identity(provider.consumer_view(first)) == ("view", "acct", name)
    assert written_by_rotator(provider.consumer_view(first), provider.consumer_view(second))
    other = provider_class(name)("other-acct", provider.settings)
    assert not written_by_rotator(provider.consumer_view(first), other.consumer_view(second))
