from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rotator.config import load_config
from rotator.errors import ConfigError, InvalidClient, InvalidGrant, TransientProviderError
from rotator.providers.faxplus import (
    ENHANCED_SECURITY_LIFETIME,
    FaxPlusPatProvider,
    FaxPlusProvider,
    authorization_url,
    exchange_code,
    refresh_expiry,
)
from rotator.providers.registry import provider_class
from rotator.secrets import Secret
from rotator.state import AccountState
from tests.fakes.consent import click
from tests.fakes.faxplus import FaxPlusEmulator
from tests.fakes.vendorhttp import Reply, running
from tests.support import leakcheck

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaxPlusEmulator]:
    with running(FaxPlusEmulator(clock=NOW.timestamp)) as server:
        monkeypatch.setenv("FAXPLUS_SECRET", server.clients[server.client_id])
        yield server


def make(settings_for: Callable[..., Any], vendor: FaxPlusEmulator, **extra: Any) -> Any:
    return settings_for(
        provider="faxplus",
        client_id=vendor.client_id,
        client_secret="env:FAXPLUS_SECRET",
        token_url=vendor.token_url,
        authorize_url=vendor.authorize_url,
        api_base=vendor.api_base,
        redirect_uri="http://127.0.0.1:8765/callback",
        **{"enhanced_security": False, **extra},
    )


def test_refresh_sends_exactly_the_documented_request(
    vendor: FaxPlusEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    provider = FaxPlusProvider("acct", make(settings_for, vendor))
    refresh = vendor.grant()
    state = AccountState("acct", refresh_token=Secret(refresh))

    tokens = provider.refresh(state, client, NOW)

    (request,) = vendor.requests
    assert request.method == "POST" and request.path == "/token"
    assert request.query == [("grant_type", "refresh_token"), ("refresh_token", refresh)]
    assert request.body == b""
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    secret = vendor.clients[vendor.client_id]
    expected = base64.b64encode(f"{vendor.client_id}:{secret}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert tokens.expires_at == NOW + timedelta(hours=1)
    assert tokens.refresh_token == Secret(refresh)  # not rotated: the old one stays
    assert tokens.refresh_expires_at is None  # no expiry without enhanced security


def test_a_new_refresh_token_replaces_the_old_one(
    vendor: FaxPlusEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    vendor.rotate_refresh = True
    provider = FaxPlusProvider("acct", make(settings_for, vendor))
    first = vendor.grant()
    tokens = provider.refresh(AccountState("acct", refresh_token=Secret(first)), client, NOW)
    assert tokens.refresh_token is not None and tokens.refresh_token != Secret(first)
    with pytest.raises(InvalidGrant):  # the spent one is refused
        provider.refresh(AccountState("acct", refresh_token=Secret(first)), client, NOW)


def test_enhanced_security_expiry_counts_from_authorization_not_refresh(
    vendor: FaxPlusEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    vendor.enhanced = True
    provider = FaxPlusProvider("acct", make(settings_for, vendor, enhanced_security=True))
    authorized = NOW - timedelta(days=28)
    state = AccountState(
        "acct",
        refresh_token=Secret(vendor.grant(authorized_at=authorized.timestamp())),
        authorized_at=authorized,
    )
    first = provider.refresh(state, client, NOW)
    assert first.refresh_expires_at == authorized + timedelta(days=30)
    later = provider.refresh(state.with_tokens(first), client, NOW + timedelta(hours=1))
    assert later.refresh_expires_at == authorized + timedelta(days=30)
    # after 30 days the vendor refuses, and we say so as a dead grant
    vendor.clock = (authorized + timedelta(days=30, seconds=1)).timestamp
    with pytest.raises(InvalidGrant, match="authorize again"):
        provider.refresh(state.with_tokens(later), client, NOW + timedelta(days=2))


def test_enhanced_security_without_authorization_time_invents_no_expiry(
    vendor: FaxPlusEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    provider = FaxPlusProvider("acct", make(settings_for, vendor, enhanced_security=True))
    known = NOW + timedelta(days=3)
    state = AccountState("acct", refresh_token=Secret(vendor.grant()), refresh_expires_at=known)
    assert provider.refresh(state, client, NOW).refresh_expires_at == known


@pytest.mark.parametrize(
    ("enhanced", "authorized_days_ago", "sent_days", "expected_days_from_now"),
    [
        (False, 1, 10, 10),  # the setting says "never", the vendor says 10 days: 10 days
        (True, 28, 10, 2),  # the 30-day rule is earlier
        (True, 1, 10, 10),  # the vendor's word is earlier
        (True, 1, None, 29),  # nothing sent: the 30-day rule
        (False, 1, None, None),  # nothing sent, no controls: no expiry
    ],
)
def test_a_refresh_token_expiry_the_vendor_sends_is_honoured_the_earlier_wins(  # noqa: PLR0917
    vendor: FaxPlusEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    enhanced: bool,
    authorized_days_ago: int,
    sent_days: int | None,
    expected_days_from_now: int | None,
) -> None:
    vendor.refresh_expires_in = None if sent_days is None else sent_days * 86400
    provider = FaxPlusProvider("acct", make(settings_for, vendor, enhanced_security=enhanced))
    authorized = NOW - timedelta(days=authorized_days_ago)
    state = AccountState("acct", refresh_token=Secret(vendor.grant()), authorized_at=authorized)
    expected = (
        None if expected_days_from_now is None else NOW + timedelta(days=expected_days_from_now)
    )
    first = provider.refresh(state, client, NOW)
    assert first.refresh_expires_at == expected
    # later answers that do not repeat it (the same refresh token): the word still holds
    vendor.refresh_expires_in = None
    later = provider.refresh(state.with_tokens(first), client, NOW + timedelta(hours=1))
    assert later.refresh_expires_at == expected


@given(
    enhanced=st.booleans(),
    authorized=st.none() | st.integers(0, 40 * 86400),
    sent=st.none() | st.integers(0, 400 * 86400),
    kept=st.none() | st.integers(0, 40 * 86400),
)
def test_refresh_expiry_is_the_earliest_known_and_never_invented(
    enhanced: bool, authorized: int | None, sent: int | None, kept: int | None
) -> None:
    def at(seconds: int | None) -> datetime | None:
        return None if seconds is None else NOW + timedelta(seconds=seconds)

    expiry = refresh_expiry(
        enhanced=enhanced, authorized_at=at(authorized), sent=at(sent), kept=at(kept)
    )
    rule = None
    if enhanced:
        rule = at(kept) if authorized is None else at(authorized) + ENHANCED_SECURITY_LIFETIME  # type: ignore[operator]
    candidates = [moment for moment in (at(sent), rule) if moment is not None]
    assert expiry == (min(candidates) if candidates else None)


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        (Reply(400, {"error": "invalid_grant"}), InvalidGrant, "invalid_grant"),
        (Reply(401, {"error": "invalid_client"}), InvalidClient, "invalid_client"),
        (Reply(503, b"<html>down</html>", "text/html"), TransientProviderError, "http_503"),
        (Reply(429, b"", "text/plain", {"Retry-After": "7"}), TransientProviderError, "http_429"),
    ],
)
def test_vendor_error_answers_are_typed(  # noqa: PLR0917
    vendor: FaxPlusEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    reply: Reply,
    error: type[Exception],
    code: str,
) -> None:
    provider = FaxPlusProvider("acct", make(settings_for, vendor))
    vendor.fail_next(reply)
    refresh = vendor.grant()
    with pytest.raises(error) as raised:
        provider.refresh(AccountState("acct", refresh_token=Secret(refresh)), client, NOW)
    assert getattr(raised.value, "code", None) == code
    assert refresh not in str(raised.value)


def test_wrong_client_secret_is_refused_by_the_vendor(
    vendor: FaxPlusEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAXPLUS_SECRET", leakcheck.register("wrong-secret-value", "secret"))
    provider = FaxPlusProvider("acct", make(settings_for, vendor))
    state = AccountState("acct", refresh_token=Secret(vendor.grant()))
    with pytest.raises(InvalidClient):
        provider.refresh(state, client, NOW)


def test_emulator_refuses_parameters_outside_the_query_string(
    vendor: FaxPlusEmulator, client: httpx.Client
) -> None:
    secret = vendor.clients[vendor.client_id]
    answer = client.post(
        vendor.token_url,
        data={"grant_type": "refresh_token", "refresh_token": vendor.grant()},
        auth=(vendor.client_id, secret),
    )
    assert answer.status_code == 400 and "query string" in answer.json()["error_description"]
    answer = client.post(
        vendor.token_url,
        params={"grant_type": "refresh_token", "refresh_token": vendor.grant()},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 401  # no Basic auth


def test_no_refresh_token_points_to_authorize(
    vendor: FaxPlusEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    provider = FaxPlusProvider("acct", make(settings_for, vendor))
    with pytest.raises(InvalidGrant, match="rotator authorize acct"):
        provider.refresh(AccountState("acct"), client, NOW)
    assert vendor.requests == []


def test_consumer_view_has_client_id_and_ready_headers(
    vendor: FaxPlusEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    provider = FaxPlusProvider("acct", make(settings_for, vendor))
    tokens = provider.refresh(
        AccountState("acct", refresh_token=Secret(vendor.grant())), client, NOW
    )
    view = provider.consumer_view(tokens)
    access = tokens.access_token.reveal()
    assert view["client_id"] == vendor.client_id
    headers = view["headers"]
    assert headers == {"Authorization": f"Bearer {access}", "x-fax-clientid": vendor.client_id}
    assert isinstance(headers, dict)  # an object, not a JSON string to decode twice
    assert view["provider"] == "faxplus" and view["expires_at"] == "2026-11-24T13:00:00Z"
    # the headers work against the API as they are
    assert client.get(vendor.api_base + "/accounts/self", headers=headers).status_code == 200
    assert all(isinstance(v, str) for k, v in view.items() if k != "headers")


def test_authorization_url_and_code_exchange(
    vendor: FaxPlusEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    settings = make(settings_for, vendor)
    url = authorization_url(settings, "st4te")
    assert url == (
        f"{vendor.authorize_url}?response_type=code&client_id={vendor.client_id}"
        "&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&scope=all&state=st4te"
    )
    back = click(client, url, follow=False)  # the login page's Allow step
    location = httpx.URL(back.headers["location"])
    assert location.params["state"] == "st4te"
    tokens = exchange_code(settings, client, location.params["code"], NOW)
    request = vendor.requests[-1]
    assert request.query == [
        ("grant_type", "authorization_code"),
        ("client_id", vendor.client_id),
        ("code", location.params["code"]),
        ("redirect_uri", "http://127.0.0.1:8765/callback"),
    ]
    assert request.body == b"" and request.headers["authorization"].startswith("Basic ")
    assert tokens.refresh_token is not None
    with pytest.raises(InvalidGrant):  # a code works once
        exchange_code(settings, client, location.params["code"], NOW)


# --- personal access tokens ----------------------------------------------------------------


def pat_settings(
    settings_for: Callable[..., Any], vendor: FaxPlusEmulator, expires_at: str = "2027-06-30"
) -> Any:
    return settings_for(
        provider="faxplus-pat",
        token="env:FAXPLUS_PAT",
        expires_at=expires_at,
        scopes=["fax:fax:read", "fax:fax:write"],
        api_base=vendor.api_base,
    )


def test_pat_is_checked_published_and_never_refreshed(
    vendor: FaxPlusEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pat = vendor.personal_access_token()
    monkeypatch.setenv("FAXPLUS_PAT", pat)
    provider = FaxPlusPatProvider("acct", pat_settings(settings_for, vendor))
    assert not provider.needs_seed

    tokens = provider.refresh(AccountState("acct"), client, NOW)

    (request,) = vendor.requests  # only the check; no token endpoint
    assert request.method == "GET" and request.path == "/v3/accounts/self"
    assert request.headers["authorization"] == f"Bearer {pat}"
    assert "x-fax-clientid" not in request.headers
    real_expiry = datetime(2027, 6, 30, tzinfo=UTC)
    assert tokens.refresh_expires_at == real_expiry  # feeds the expiry alerts
    assert tokens.expires_at == NOW + timedelta(hours=1)  # looked at again within max_lifetime
    assert tokens.refresh_token is None
    view = provider.consumer_view(tokens)
    assert view["expires_at"] == "2027-06-30T00:00:00Z"
    assert view["headers"] == {"Authorization": f"Bearer {pat}"}
    assert "client_id" not in view
    # the next look gives the same view: nothing is rewritten
    again = provider.refresh(AccountState("acct"), client, NOW + timedelta(minutes=40))
    assert provider.consumer_view(again) == view


def test_pat_expiry_within_the_recheck_window_is_the_real_one(
    vendor: FaxPlusEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAXPLUS_PAT", vendor.personal_access_token())
    soon = NOW + timedelta(minutes=20)
    provider = FaxPlusPatProvider(
        "acct", pat_settings(settings_for, vendor, expires_at="2026-11-24T12:20:00Z")
    )
    assert provider.refresh(AccountState("acct"), client, NOW).expires_at == soon
    with pytest.raises(InvalidGrant, match="expired at 2026-11-24T12:20:00Z"):
        provider.refresh(AccountState("acct"), client, soon)


def test_revoked_pat_is_a_dead_grant(
    vendor: FaxPlusEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAXPLUS_PAT", vendor.personal_access_token())
    vendor.revoke_all()
    provider = FaxPlusPatProvider("acct", pat_settings(settings_for, vendor))
    with pytest.raises(InvalidGrant, match="refused the token"):
        provider.refresh(AccountState("acct"), client, NOW)


# --- configuration ---------------------------------------------------------------------------


def test_defaults_are_the_vendor_urls(settings_for: Callable[..., Any]) -> None:
    settings = settings_for(
        provider="faxplus", client_id="APIK-x", client_secret="env:S", enhanced_security=False
    )
    assert settings.token_url == "https://accounts.fax.plus/token"
    assert settings.authorize_url == "https://accounts.fax.plus/login"
    assert settings.api_base == "https://restapi.fax.plus/v3"
    assert settings.redirect_uri is None
    pat = settings_for(provider="faxplus-pat", token="file:/etc/pat", expires_at="2027-01-31")
    assert pat.api_base == "https://restapi.fax.plus/v3"
    assert provider_class("faxplus-pat") is FaxPlusPatProvider


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"client_id": "x", "client_secret": "plain-secret"}, "accounts.acct.client_secret: "),
        (
            {"client_id": "x", "client_secret": "env:S", "token_url": "ftp://x"},
            "accounts.acct.token_url: ",
        ),
        (
            {"client_id": "x", "client_secret": "env:S", "enhanced_security": "often"},
            "accounts.acct.enhanced_security: ",
        ),
        (
            {"client_id": "x", "client_secret": "env:S", "scope": "all"},
            "accounts.acct.scope: unknown key",
        ),
        ({"client_secret": "env:S"}, "accounts.acct.client_id: required key is missing"),
    ],
)
def test_bad_faxplus_keys_name_the_key(
    settings_for: Callable[..., Any], body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_for(provider="faxplus", **{"enhanced_security": False, **body})
    assert str(raised.value).startswith(message)


def _check(tmp_path: Path, accounts: dict[str, Any], **top: Any) -> tuple[int, str]:
    config = tmp_path / "rotator.yaml"
    stores = {"files": {"type": "file", "directory": str(tmp_path / "store")}}
    config.write_text(yaml.safe_dump({"stores": stores, **top, "accounts": accounts}))
    done = subprocess.run(
        [sys.executable, "-m", "rotator.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stderr


FAX = {
    "provider": "faxplus",
    "client_id": "APIK-x",
    "client_secret": "env:S",
    "sinks": [{"store": "files", "path": "fax.json"}],
}


def test_check_refuses_a_faxplus_account_without_enhanced_security(tmp_path: Path) -> None:
    """The issue's acceptance test: no silent default; the message names the key and
    explains the 30-day rule."""
    code, err = _check(tmp_path, {"acme-fax": FAX})
    assert code == 2
    assert "accounts.acme-fax.enhanced_security: required key is missing" in err
    assert "30 days after authorization" in err and "true" in err and "false" in err


@pytest.mark.parametrize("value", [True, False])
def test_enhanced_security_may_come_from_defaults(tmp_path: Path, value: bool) -> None:
    pat = {
        "provider": "faxplus-pat",
        "token": "env:P",
        "expires_at": "2031-01-31",
        "sinks": [{"store": "files", "path": "pat.json"}],
    }
    accounts = {
        "acme-fax": FAX,
        "other-fax": {
            **FAX,
            "enhanced_security": not value,
            "sinks": [{"store": "files", "path": "o.json"}],
        },
        "pat": pat,
    }
    code, err = _check(tmp_path, accounts, defaults={"enhanced_security": value})
    assert code == 0, err
    config = load_config(str(tmp_path / "rotator.yaml"))
    assert config.accounts["acme-fax"].enhanced_security is value  # type: ignore[attr-defined]
    # an account's own setting wins; the pat account has no such key and is untouched
    assert config.accounts["other-fax"].enhanced_security is (not value)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"token": "env:PAT", "expires_at": "next year"}, "accounts.acct.expires_at: "),
        ({"token": "literal", "expires_at": "2027-01-01"}, "accounts.acct.token: "),
        ({"expires_at": "2027-01-01"}, "accounts.acct.token: required key is missing"),
    ],
)
def test_bad_pat_keys_name_the_key(
    settings_for: Callable[..., Any], body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_for(provider="faxplus-pat", **body)
    assert str(raised.value).startswith(message)


def test_refresh_keeps_unrelated_state(
    vendor: FaxPlusEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    provider = FaxPlusProvider("acct", make(settings_for, vendor))
    state = AccountState("acct", refresh_token=Secret(vendor.grant()), extra={"k": "v"})
    tokens = provider.refresh(state, client, NOW)
    assert replace(state.with_tokens(tokens)).extra["k"] == "v"


def test_pat_through_a_rotation(
    vendor: FaxPlusEmulator, rotator_for: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor.clock = time.time
    pat = vendor.personal_access_token()
    monkeypatch.setenv("FAXPLUS_PAT", pat)
    rotator, store = rotator_for(
        provider="faxplus-pat",
        token="env:FAXPLUS_PAT",
        expires_at="2099-01-01",
        api_base=vendor.api_base,
    )
    result = rotator.rotate("acct", force=True)
    assert result.ok, result.error
    state = AccountState.from_record("acct", store.read("state/acct").data)
    assert state.refresh_expires_at == datetime(2099, 1, 1, tzinfo=UTC)  # what alerts watch
    assert state.next_refresh_at is not None
    assert state.next_refresh_at - datetime.now(UTC) < timedelta(hours=1)  # looked at again
    sink = store.read("acct.json").data
    assert sink["access_token"] == pat and sink["expires_at"] == "2099-01-01T00:00:00Z"
    assert rotator.rotate("acct", force=True).sinks_written == 0  # unchanged: not rewritten


def test_basic_auth_is_plain_base64_as_fax_plus_documents(
    settings_for: Callable[..., Any], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = leakcheck.register("Sec+ret/with=signs%20", "faxplus client secret")
    with running(FaxPlusEmulator(clients={"APIK-plain": secret}, clock=NOW.timestamp)) as v:
        monkeypatch.setenv("FAXPLUS_SECRET", secret)
        provider = FaxPlusProvider("acct", make(settings_for, v))
        provider.refresh(AccountState("acct", refresh_token=Secret(v.grant())), client, NOW)
        header = v.requests[-1].headers["authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == f"APIK-plain:{secret}"
