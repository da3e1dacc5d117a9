from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from rotator.errors import (
    ConfigError,
    InvalidClient,
    InvalidGrant,
    PermanentProviderError,
    TransientProviderError,
)
from rotator.providers.bifit import BifitProvider, UnexpectedLoginAnswer, hash_password
from rotator.secrets import Secret
from rotator.service.metrics import Metrics
from rotator.state import AccountState
from tests.fakes.bifit import BifitEmulator
from tests.fakes.vendorhttp import Reply, running
from tests.support import leakcheck
from tests.support.logcapture import captured_logs

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
PASSWORD = "Kassa-pa$$wörd+1"


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[BifitEmulator]:
    with running(BifitEmulator(users={"79990001122": PASSWORD})) as server:
        monkeypatch.setenv("BIFIT_PASSWORD", PASSWORD)
        yield server


def provider(settings_for: Callable[..., Any], vendor: BifitEmulator, **extra: Any) -> Any:
    body: dict[str, Any] = {
        "provider": "bifit",
        "username": vendor.username,
        "password": "env:BIFIT_PASSWORD",
        "token_url": vendor.token_url,
        **extra,
    }
    return BifitProvider("acct", settings_for(**{k: v for k, v in body.items() if v is not None}))


def test_password_grant_sends_exactly_the_documented_form(
    vendor: BifitEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    tokens = provider(settings_for, vendor).refresh(AccountState("acct"), client, NOW)

    (request,) = vendor.requests
    assert request.method == "POST" and request.path == "/cashdesk-api/v1/oauth/token"
    assert request.query == []
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    hashed = base64.b64encode(hashlib.sha256(PASSWORD.encode("utf-8")).digest()).decode()
    assert parse_qsl(request.body.decode()) == [
        ("grant_type", "password"),
        ("username", "79990001122"),
        ("password", hashed),
        ("client_id", "cashdesk-rest-client"),
        ("client_secret", "cashdesk-rest-client"),
    ]
    assert b"%2B" in request.body or b"%2F" in request.body or b"%3D" in request.body
    assert "authorization" not in request.headers
    assert tokens.expires_at == NOW + timedelta(seconds=43199)
    assert tokens.token_type == "Bearer" and tokens.scope == "read write"
    assert tokens.refresh_token is not None
    assert tokens.extra["user_id"] == "u1122"


def test_refresh_grant_rotates_the_refresh_token(
    vendor: BifitEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    old = vendor.grant()
    tokens = provider(settings_for, vendor).refresh(
        AccountState("acct", refresh_token=Secret(old)), client, NOW
    )
    (request,) = vendor.requests
    assert parse_qsl(request.body.decode()) == [
        ("grant_type", "refresh_token"),
        ("refresh_token", old),
        ("client_id", "cashdesk-rest-client"),
        ("client_secret", "cashdesk-rest-client"),
    ]
    assert tokens.refresh_token is not None and tokens.refresh_token != Secret(old)
    assert vendor.logins == 0
    assert tokens.extra["relogin_at"] == ""


@pytest.mark.parametrize("expired", [False, True])
def test_refused_refresh_token_logs_in_again_and_says_so(
    vendor: BifitEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    expired: bool,
) -> None:
    old = vendor.grant()
    if expired:
        vendor.expire_all()
    else:
        vendor.refresh_tokens.clear()  # unknown to the vendor
    with captured_logs() as logs:
        tokens = provider(settings_for, vendor).refresh(
            AccountState("acct", refresh_token=Secret(old)), client, NOW
        )
    assert [dict(parse_qsl(r.body.decode()))["grant_type"] for r in vendor.requests] == [
        "refresh_token",
        "password",
    ]
    assert tokens.extra["relogin_at"] == "2026-11-24T12:00:00Z"
    assert tokens.extra["relogin_reason"] == ("invalid_token" if expired else "invalid_grant")
    attempt, told = logs
    assert attempt["log_level"] == "info" and "logging in again" in attempt["event"]
    assert told["log_level"] == "warning" and "refresh grant was refused" in told["event"]
    for line in logs:
        assert line["error_code"] == tokens.extra["relogin_reason"] and line["account"] == "acct"
    assert old not in repr(logs)


def test_a_working_relogin_is_told_once_per_account(
    vendor: BifitEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    """The operator hears once that the refresh grant does not work, not at every
    rotation (and not never: that hid it)."""
    bifit = provider(settings_for, vendor)
    state = AccountState("acct", refresh_token=Secret(vendor.grant()))
    with captured_logs() as logs:
        for hour in range(3):
            vendor.refresh_tokens.clear()  # the vendor refuses every refresh token
            tokens = bifit.refresh(state, client, NOW + timedelta(hours=hour))
            state = state.with_tokens(tokens)
    assert vendor.logins == 3
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert len(warnings) == 1 and "refresh grant was refused" in warnings[0]["event"]
    # another account (its own provider) is told on its own
    with captured_logs() as logs:
        other = provider(settings_for, vendor)
        vendor.refresh_tokens.clear()
        other.refresh(AccountState("acct", refresh_token=Secret("gone")), client, NOW)
    assert [line["log_level"] for line in logs].count("warning") == 1


def test_refused_refresh_without_password_is_a_dead_grant(
    vendor: BifitEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    old = vendor.grant()
    vendor.refresh_tokens.clear()
    bifit = provider(settings_for, vendor, password=None)
    assert bifit.needs_seed
    with pytest.raises(InvalidGrant) as raised:
        bifit.refresh(AccountState("acct", refresh_token=Secret(old)), client, NOW)
    # Spring echoes the refresh token in its description; it never reaches our message
    assert old not in str(raised.value)
    assert len(vendor.requests) == 1


def test_outage_during_refresh_does_not_log_in_again(
    vendor: BifitEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    vendor.fail_next(Reply(502, b"<html>bad gateway</html>", "text/html"))
    with pytest.raises(TransientProviderError):
        provider(settings_for, vendor).refresh(
            AccountState("acct", refresh_token=Secret(vendor.grant())), client, NOW
        )
    assert len(vendor.requests) == 1


def test_unhashed_password_is_refused_by_the_vendor(
    vendor: BifitEmulator, client: httpx.Client
) -> None:
    answer = client.post(
        vendor.token_url,
        data={
            "grant_type": "password",
            "username": vendor.username,
            "password": PASSWORD,
            "client_id": "cashdesk-rest-client",
            "client_secret": "cashdesk-rest-client",
        },
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def test_wrong_password_is_invalid_grant(
    vendor: BifitEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BIFIT_PASSWORD", leakcheck.register("not-the-bifit-password", "password"))
    with pytest.raises(InvalidGrant, match="Bad credentials"):
        provider(settings_for, vendor).refresh(AccountState("acct"), client, NOW)


@pytest.mark.parametrize("encoding", ["base64", "base64url", "base64url-unpadded"])
def test_each_password_encoding_against_a_vendor_that_wants_it(
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
) -> None:
    """Each encoding logs in where the vendor wants it and is refused where it does not."""
    # a digest whose standard base64 has "+" or "/" and one "=": the three forms differ
    password = leakcheck.register("bifit-pw-2", "bifit password")
    forms = {e: hash_password(Secret(password), e) for e in ("base64", "base64url")}
    forms["base64url-unpadded"] = hash_password(Secret(password), "base64url-unpadded")
    assert len(set(forms.values())) == 3 and not forms["base64url-unpadded"].endswith("=")
    monkeypatch.setenv("BIFIT_PASSWORD", password)
    with running(BifitEmulator(users={"79990001122": password}, password_encoding=encoding)) as v:
        for other in sorted(set(forms) - {encoding}):
            with pytest.raises(InvalidGrant, match="Bad credentials"):
                provider(settings_for, v, password_encoding=other).refresh(
                    AccountState("acct"), client, NOW
                )
        tokens = provider(settings_for, v, password_encoding=encoding).refresh(
            AccountState("acct"), client, NOW
        )
    assert tokens.refresh_token is not None
    assert dict(parse_qsl(v.requests[-1].body.decode()))["password"] == forms[encoding]


def test_base64url_encoding(
    settings_for: Callable[..., Any], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # this password's digest has "+" and "/" in standard base64
    password = leakcheck.register("bifit-pw-2", "bifit password")
    assert set(hash_password(Secret(password))) & set("+/")
    monkeypatch.setenv("BIFIT_PASSWORD", password)
    emulator = BifitEmulator(users={"79990001122": password}, password_encoding="base64url")
    with running(emulator) as v:
        with pytest.raises(InvalidGrant):
            provider(settings_for, v).refresh(AccountState("acct"), client, NOW)
        tokens = provider(settings_for, v, password_encoding="base64url").refresh(
            AccountState("acct"), client, NOW
        )
    assert tokens.refresh_token is not None
    assert "-" in dict(parse_qsl(v.requests[-1].body.decode()))["password"]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, {"status": "CONFIRMATION_REQUIRED", "message": "Enter the SMS code"}),
        Reply(403, {"error": "otp_required", "error_description": "Enter the SMS code"}),
    ],
)
def test_second_factor_answer_is_reported_not_guessed(
    vendor: BifitEmulator, settings_for: Callable[..., Any], client: httpx.Client, reply: Reply
) -> None:
    vendor.second_factor[vendor.username] = reply
    with pytest.raises(UnexpectedLoginAnswer) as raised:
        provider(settings_for, vendor).refresh(AccountState("acct"), client, NOW)
    assert "Enter the SMS code" in str(raised.value)
    assert raised.value.code == "unexpected_login_answer"
    assert isinstance(raised.value, PermanentProviderError)


def test_private_client_credentials(
    settings_for: Callable[..., Any], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(BifitEmulator(client_secret="private-client-s3cret")) as v:
        monkeypatch.setenv("BIFIT_PASSWORD", v.users[v.username])
        with pytest.raises(InvalidClient):
            provider(settings_for, v).refresh(AccountState("acct"), client, NOW)
        monkeypatch.setenv("BIFIT_CLIENT_SECRET", "private-client-s3cret")
        tokens = provider(settings_for, v, client_secret="env:BIFIT_CLIENT_SECRET").refresh(
            AccountState("acct"), client, NOW
        )
    assert tokens.access_token


def test_a_private_client_id_with_its_secret_logs_in(
    settings_for: Callable[..., Any], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = BifitEmulator(client_id="shop-integration", client_secret="private-client-s3cret")
    with running(emulator) as v:
        monkeypatch.setenv("BIFIT_PASSWORD", v.users[v.username])
        monkeypatch.setenv("BIFIT_CLIENT_SECRET", "private-client-s3cret")
        tokens = provider(
            settings_for, v, client_id="shop-integration", client_secret="env:BIFIT_CLIENT_SECRET"
        ).refresh(AccountState("acct"), client, NOW)
    assert tokens.access_token
    form = dict(parse_qsl(v.requests[-1].body.decode()))
    assert form["client_id"] == "shop-integration"


def test_no_refresh_token_and_no_password(
    vendor: BifitEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    with pytest.raises(InvalidGrant, match="rotator import acct"):
        provider(settings_for, vendor, password=None).refresh(AccountState("acct"), client, NOW)
    assert vendor.requests == []


def test_consumer_view(
    vendor: BifitEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    bifit = provider(settings_for, vendor)
    view = bifit.consumer_view(bifit.refresh(AccountState("acct"), client, NOW))
    assert set(view) == {
        "access_token",
        "token_type",
        "expires_at",
        "account",
        "provider",
        "user_id",
    }
    assert view["token_type"] == "Bearer" and view["provider"] == "bifit"


def test_defaults(settings_for: Callable[..., Any]) -> None:
    settings = settings_for(provider="bifit", username="79999999999", password="env:P")
    assert settings.token_url == "https://kassa.bifit.com/cashdesk-api/v1/oauth/token"
    assert settings.client_id == "cashdesk-rest-client" and settings.client_secret is None
    assert settings.password_encoding == "base64"
    assert settings.max_lifetime == timedelta(hours=12)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"username": "+7 999 999-99-99"}, "accounts.acct.username: "),
        ({"username": "79999999999", "password": "hunter2"}, "accounts.acct.password: "),
        (
            {"username": "79999999999", "password_encoding": "hex"},
            "accounts.acct.password_encoding: ",
        ),
        (
            {"username": "79999999999", "client_secret": "cashdesk-rest-client"},
            "accounts.acct.client_secret: ",
        ),
        ({"username": "79999999999", "grant": "password"}, "accounts.acct.grant: unknown key"),
        # a custom client without its secret: not the public secret by default
        (
            {"username": "79999999999", "client_id": "shop-integration"},
            "accounts.acct: client_id 'shop-integration' needs client_secret",
        ),
        # a phone number YAML read as a number
        ({"username": 79999999999}, "accounts.acct.username: 79999999999 is a YAML number"),
    ],
)
def test_bad_keys_name_the_key(
    settings_for: Callable[..., Any], body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_for(provider="bifit", **body)
    assert str(raised.value).startswith(message)


def test_relogin_is_recorded_in_the_state_through_a_rotation(
    vendor: BifitEmulator, rotator_for: Callable[..., Any]
) -> None:
    rotator, store = rotator_for(
        provider="bifit",
        username=vendor.username,
        password="env:BIFIT_PASSWORD",
        token_url=vendor.token_url,
    )
    first = rotator.rotate("acct", force=True)
    assert first.ok and vendor.logins == 1  # no refresh token yet: password login
    vendor.refresh_tokens.clear()  # the vendor forgets the grant
    second = rotator.rotate("acct", force=True)
    assert second.ok and vendor.logins == 2
    state = AccountState.from_record("acct", store.read("state/acct").data)
    assert state.extra["relogin_reason"] == "invalid_grant"
    assert state.extra["relogin_at"]
    assert state.refresh_token is not None
    assert state.refresh_token.reveal() in vendor.refresh_tokens
    # the daemon counts it once, however often the state is observed (rotation, sweeps)
    metrics = Metrics()
    for _ in range(3):
        metrics.observe_state(state, NOW)
    assert _relogins(metrics) == 1
    third = rotator.rotate("acct", force=True)  # an ordinary refresh clears the marker
    assert third.ok and vendor.logins == 2
    state = AccountState.from_record("acct", store.read("state/acct").data)
    assert state.extra["relogin_at"] == ""
    metrics.observe_state(state, NOW)
    vendor.refresh_tokens.clear()
    assert rotator.rotate("acct", force=True).ok and vendor.logins == 3
    metrics.observe_state(AccountState.from_record("acct", store.read("state/acct").data), NOW)
    assert _relogins(metrics) == 2


def test_the_metrics_read_the_marker_bifit_writes() -> None:
    from rotator.providers import bifit
    from rotator.service import metrics

    assert metrics.RELOGIN_AT == bifit.RELOGIN_AT


def _relogins(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "rotator_password_relogins_total", {"account": "acct"}
    )
    return value or 0.0
