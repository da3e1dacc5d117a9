"""The generic OAuth2 provider (rotator/providers/oauth2.py) against the emulator over HTTP."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from rotator.errors import (
    BadResponse,
    InvalidClient,
    InvalidGrant,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from rotator.providers.base import send
from rotator.providers.oauth2 import OAuth2Provider, OAuth2Settings, basic_auth_header
from rotator.secrets import Secret
from rotator.state import AccountState
from rotator.tokens import MAX_RESPONSE_BYTES
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck

CLIENT_ID = "svc client"  # a space: it must be form-encoded too
SECRET = leakcheck.register("p+ss:w/rd%-9b8a7c6d", "client secret")
PUBLIC_ID = "public-app"
USER, PASSWORD = "alice", leakcheck.register("pw-alice-3e4f5a6b", "password")


@pytest.fixture
def idp() -> Iterator[OAuth2Emulator]:
    with emulator(
        clients={CLIENT_ID: SECRET, PUBLIC_ID: ""}, users={USER: PASSWORD}, access_ttl=300
    ) as server:
        yield server


@pytest.fixture
def idp_query() -> Iterator[OAuth2Emulator]:
    with emulator(clients={CLIENT_ID: SECRET}, allow_query=True, access_ttl=300) as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTH2_TEST_SECRET", SECRET)
    monkeypatch.setenv("OAUTH2_TEST_PASSWORD", PASSWORD)


def provider(server: OAuth2Emulator, **settings: Any) -> OAuth2Provider:
    values: dict[str, Any] = {
        "provider": "oauth2",
        "token_url": server.url,
        "client_id": CLIENT_ID,
        "client_secret": "env:OAUTH2_TEST_SECRET",
        "sinks": [{"store": "files", "path": "x.json"}],
        **settings,
    }
    values = {k: v for k, v in values.items() if v is not None}
    return OAuth2Provider("acct", OAuth2Settings.model_validate(values))


def state_with(refresh: str | None) -> AccountState:
    return AccountState(
        account="acct", refresh_token=Secret(refresh) if refresh is not None else None
    )


NOW = datetime.now(UTC)


# -- client authentication -----------------------------------------------------------------


def test_basic_auth_form_encodes_id_and_secret(idp: OAuth2Emulator, client: httpx.Client) -> None:
    refresh = idp.issue_grant(CLIENT_ID)
    tokens = provider(idp).refresh(state_with(refresh), client, NOW)
    assert idp.access_valid(tokens.access_token.reveal())
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.reveal() != refresh
    assert tokens.expires_at == NOW + timedelta(seconds=300)
    header = idp.requests[-1]["headers"]["Authorization"]
    decoded = base64.b64decode(header.removeprefix("Basic ")).decode()
    assert decoded == "svc%20client:p%2Bss%3Aw%2Frd%25-9b8a7c6d"
    assert "client_secret" not in idp.requests[-1]["params"]


def test_basic_auth_header_helper() -> None:
    header = basic_auth_header("id", Secret("a+b:c"))
    assert base64.b64decode(header[6:]) == b"id:a%2Bb%3Ac"


def test_unencoded_basic_header_is_refused_by_the_emulator(
    idp: OAuth2Emulator, client: httpx.Client
) -> None:
    # What a client that skips RFC 6749 2.3.1 sends: the emulator must refuse it,
    # or the test above would prove nothing.
    raw = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    answer = client.post(
        idp.url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {raw}"},
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_client_auth_post(idp: OAuth2Emulator, client: httpx.Client) -> None:
    tokens = provider(idp, grant="client_credentials", client_auth="post").refresh(
        state_with(None), client, NOW
    )
    assert idp.access_valid(tokens.access_token.reveal())
    request = idp.requests[-1]
    assert "Authorization" not in request["headers"]
    assert {"client_id", "client_secret", "grant_type"} <= set(request["params"])


def test_client_auth_none_for_a_public_client(idp: OAuth2Emulator, client: httpx.Client) -> None:
    refresh = idp.issue_grant(PUBLIC_ID)
    tokens = provider(idp, client_id=PUBLIC_ID, client_secret=None, client_auth="none").refresh(
        state_with(refresh), client, NOW
    )
    assert idp.access_valid(tokens.access_token.reveal())
    assert "client_secret" not in idp.requests[-1]["params"]
    assert "client_id" in idp.requests[-1]["params"]


def test_wrong_secret_is_invalid_client(
    idp: OAuth2Emulator, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTH2_TEST_SECRET", leakcheck.register("wrong-secret-11aa22", "secret"))
    with pytest.raises(InvalidClient) as caught:
        provider(idp, grant="client_credentials").refresh(state_with(None), client, NOW)
    assert caught.value.code == "invalid_client"
    assert caught.value.status == 401


# -- where the parameters go -----------------------------------------------------------------


def test_params_in_query(idp_query: OAuth2Emulator, client: httpx.Client) -> None:
    refresh = idp_query.issue_grant(CLIENT_ID)
    tokens = provider(idp_query, params_in="query").refresh(state_with(refresh), client, NOW)
    assert idp_query.access_valid(tokens.access_token.reveal())
    assert "refresh_token" in idp_query.requests[-1]["params"]


def test_params_in_query_refused_by_a_body_only_server(
    idp: OAuth2Emulator, client: httpx.Client
) -> None:
    refresh = idp.issue_grant(CLIENT_ID)
    with pytest.raises(PermanentProviderError) as caught:
        provider(idp, params_in="query").refresh(state_with(refresh), client, NOW)
    assert caught.value.code == "invalid_request"
    assert refresh not in str(caught.value)


def test_scope_and_extra_params_are_sent(idp: OAuth2Emulator, client: httpx.Client) -> None:
    tokens = provider(
        idp,
        grant="client_credentials",
        scope="api:read api:write",
        extra_params={"audience": "https://api.example"},
    ).refresh(state_with(None), client, NOW)
    assert tokens.scope == "api:read api:write"  # the emulator echoes the scope it got
    assert {"audience", "scope"} <= set(idp.requests[-1]["params"])


# -- grants ------------------------------------------------------------------------------------


def test_password_grant(idp: OAuth2Emulator, client: httpx.Client) -> None:
    tokens = provider(
        idp, grant="password", username=USER, password="env:OAUTH2_TEST_PASSWORD"
    ).refresh(state_with(None), client, NOW)
    assert idp.access_valid(tokens.access_token.reveal())
    assert tokens.refresh_token is not None
    assert {"username", "password"} <= set(idp.requests[-1]["params"])


def test_password_grant_wrong_password_is_invalid_grant(
    idp: OAuth2Emulator, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTH2_TEST_PASSWORD", leakcheck.register("not-alices-pw", "password"))
    with pytest.raises(InvalidGrant, match="bad username or password"):
        provider(idp, grant="password", username=USER, password="env:OAUTH2_TEST_PASSWORD").refresh(
            state_with(None), client, NOW
        )


def test_client_credentials_grant(idp: OAuth2Emulator, client: httpx.Client) -> None:
    p = provider(idp, grant="client_credentials")
    assert not p.needs_seed
    tokens = p.refresh(state_with(None), client, NOW)
    assert idp.access_valid(tokens.access_token.reveal())
    assert tokens.refresh_token is None


def test_refresh_grant_without_a_stored_token_says_how_to_seed(
    idp: OAuth2Emulator, client: httpx.Client
) -> None:
    p = provider(idp)
    assert p.needs_seed
    with pytest.raises(InvalidGrant, match="rotator import acct") as caught:
        p.refresh(state_with(None), client, NOW)
    assert caught.value.code == "no_refresh_token"
    assert idp.token_calls == 0


def test_rotation_and_reuse_revokes_the_grant(idp: OAuth2Emulator, client: httpx.Client) -> None:
    p = provider(idp)
    first = idp.issue_grant(CLIENT_ID)
    tokens = p.refresh(state_with(first), client, NOW)
    assert tokens.refresh_token is not None
    second = tokens.refresh_token.reveal()
    assert second != first
    tokens = p.refresh(state_with(second), client, NOW)
    assert tokens.refresh_token is not None
    third = tokens.refresh_token.reveal()
    # Presenting a spent refresh token is theft to a strict provider: the grant dies.
    with pytest.raises(InvalidGrant) as caught:
        p.refresh(state_with(first), client, NOW)
    assert "reused" in caught.value.description
    assert idp.reuse_detected == 1
    with pytest.raises(InvalidGrant, match="grant revoked"):
        p.refresh(state_with(third), client, NOW)


def test_a_server_without_rotation_keeps_the_refresh_token(client: httpx.Client) -> None:
    with emulator(clients={CLIENT_ID: SECRET}, rotate_refresh=False) as server:
        refresh = server.issue_grant(CLIENT_ID)
        previous = provider(server).refresh(state_with(refresh), client, NOW)
        state = AccountState(account="acct").with_tokens(previous)
        tokens = provider(server).refresh(state, client, NOW)
        assert tokens.refresh_token == Secret(refresh)


def test_no_expires_in_means_max_lifetime(client: httpx.Client) -> None:
    with emulator(clients={CLIENT_ID: SECRET}, send_expires_in=False) as server:
        tokens = provider(server, grant="client_credentials", max_lifetime="10m").refresh(
            state_with(None), client, NOW
        )
        assert tokens.expires_at == NOW + timedelta(minutes=10)


# -- error answers -----------------------------------------------------------------------------


def _refresh(server: OAuth2Emulator, client: httpx.Client) -> Callable[[], object]:
    refresh = server.issue_grant(CLIENT_ID)
    return lambda: provider(server).refresh(state_with(refresh), client, NOW)


def test_html_502_is_transient(idp: OAuth2Emulator, client: httpx.Client) -> None:
    call = _refresh(idp, client)
    idp.fail_next(1, 502, "<html><body>Bad Gateway</body></html>", content_type="text/html")
    with pytest.raises(TransientProviderError) as caught:
        call()
    assert caught.value.code == "http_502"
    assert "HTML page" in caught.value.description
    call()  # the grant is untouched: the next attempt works


def test_429_carries_retry_after(idp: OAuth2Emulator, client: httpx.Client) -> None:
    idp.fail_next(1, 429, {"error": "slow_down"}, headers={"Retry-After": "17"})
    with pytest.raises(TransientProviderError) as caught:
        _refresh(idp, client)()
    assert caught.value.retry_after == 17.0
    assert caught.value.status == 429


def test_unknown_refresh_token_is_invalid_grant(idp: OAuth2Emulator, client: httpx.Client) -> None:
    unknown = leakcheck.register("refresh-unknown-4d3c2b", "refresh token")
    with pytest.raises(InvalidGrant) as caught:
        provider(idp).refresh(state_with(unknown), client, NOW)
    assert caught.value.code == "invalid_grant"
    assert unknown not in str(caught.value)


def test_error_in_a_200_body(idp: OAuth2Emulator, client: httpx.Client) -> None:
    idp.fail_next(1, 200, {"error": "invalid_client", "error_description": "client disabled"})
    with pytest.raises(InvalidClient, match="client disabled"):
        _refresh(idp, client)()


# -- send(): pure protocol edges through httpx.MockTransport ------------------------------------


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


QUERY_SECRET = leakcheck.register("rt-in-query-0f1e2d3c", "refresh token")
URL = f"https://accounts.example/token?grant_type=refresh_token&refresh_token={QUERY_SECRET}"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("read timed out"), "timeout"),
        (httpx.ConnectTimeout("connect timed out"), "timeout"),
        (httpx.ConnectError("connection refused"), "connection_error"),
        (httpx.RemoteProtocolError("server disconnected"), "connection_error"),
    ],
)
def test_transport_failures_are_transient_and_hide_the_query(
    exc: httpx.TransportError, code: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with _mock(handler) as http, pytest.raises(TransientProviderError) as caught:
        send(http, "POST", URL, timeout=2)
    assert caught.value.code == code
    assert "https://accounts.example/token" in str(caught.value)
    assert QUERY_SECRET not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_oversize_body_is_refused_while_streaming() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{" + b" " * (MAX_RESPONSE_BYTES + 10) + b"}")

    with _mock(handler) as http, pytest.raises(BadResponse) as caught:
        send(http, "POST", URL)
    assert caught.value.code == "bad_response"
    assert f"more than {MAX_RESPONSE_BYTES} bytes" in str(caught.value)
    assert QUERY_SECRET not in str(caught.value)


def test_send_returns_status_body_and_headers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["a"] == "1"
        return httpx.Response(
            503, content=b"busy", headers={"Content-Type": "text/plain", "Retry-After": "9"}
        )

    with _mock(handler) as http:
        answer = send(http, "POST", "https://idp.example/token", params={"a": "1"})
    assert (answer.status, answer.body, answer.content_type, answer.retry_after) == (
        503,
        b"busy",
        "text/plain",
        "9",
    )


def test_every_provider_error_is_typed() -> None:
    # A body the vendor sends that is not JSON at all, through the whole provider.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"OK", headers={"Content-Type": "text/plain"})

    p = OAuth2Provider(
        "acct",
        OAuth2Settings.model_validate(
            {
                "provider": "oauth2",
                "token_url": "https://idp.example/token",
                "grant": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": "env:OAUTH2_TEST_SECRET",
                "sinks": [{"store": "files", "path": "x.json"}],
            }
        ),
    )
    with _mock(handler) as http, pytest.raises(ProviderError) as caught:
        p.refresh(state_with(None), http, NOW)
    assert type(caught.value) is BadResponse
    assert caught.value.code == "bad_response"


def test_undecodable_body_is_a_typed_error() -> None:
    # Content-Encoding: gzip on a body that is not gzip (a broken proxy).
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"not gzip", headers={"Content-Encoding": "gzip"})

    with _mock(handler) as http, pytest.raises(TransientProviderError) as caught:
        send(http, "POST", URL)
    assert caught.value.code == "bad_encoding"
    assert "DecodingError" in str(caught.value)
    assert QUERY_SECRET not in str(caught.value)


def test_answer_without_refresh_token_keeps_an_imported_one() -> None:
    """Right after `rotator import` the state holds only a refresh token; an answer
    without one must keep it (or the grant would be lost at the first rotation).
    A protocol edge case: the emulator always answers with one, so MockTransport."""
    access = leakcheck.register("access-no-refresh-5d6e7f", "access token")
    refresh = leakcheck.register("refresh-imported-1a2b3c", "refresh token")

    def vendor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": access, "expires_in": 60})

    settings = OAuth2Settings.model_validate(
        {
            "provider": "oauth2",
            "token_url": "https://idp.example/token",
            "client_id": CLIENT_ID,
            "client_secret": "env:OAUTH2_TEST_SECRET",
            "sinks": [{"store": "files", "path": "x"}],
        }
    )
    with httpx.Client(transport=httpx.MockTransport(vendor)) as mock:
        tokens = OAuth2Provider("acct", settings).refresh(state_with(refresh), mock, NOW)
    assert tokens.refresh_token == Secret(refresh)
