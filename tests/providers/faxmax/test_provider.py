from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import pytest
import yaml

from rotator.config import load_config
from rotator.errors import (
    BadResponse,
    ConfigError,
    TransientProviderError,
)
from rotator.providers.faxmax.cipher import decrypt, encrypt
from rotator.providers.faxmax.provider import (
    FaxmaxProvider,
    JsonRpcFault,
    JsonRpcRefused,
    JsonRpcServerError,
    faxmax_login_url,
    login_payload,
    login_url,
)
from rotator.state import AccountState
from tests.fakes.faxmax import FaxmaxEmulator
from tests.fakes.vendorhttp import Reply, running
from tests.support import leakcheck
from tests.support.proc import run_rotator

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaxmaxEmulator]:
    with running(FaxmaxEmulator(clock=NOW.timestamp)) as server:
        monkeypatch.setenv("FAXMAX_PASSWORD", server.users[server.username])
        monkeypatch.setenv("FAXMAX_API_CODE", server.api_code)
        monkeypatch.setenv("FAXMAX_API_PASSWORD", server.api_password)
        yield server


def settings(settings_for: Callable[..., Any], vendor: FaxmaxEmulator, **extra: Any) -> Any:
    body: dict[str, Any] = {
        "provider": "faxmax",
        "domain": "fax.example.com",
        "endpoint": vendor.endpoint,
        "username": vendor.username,
        **extra,
    }
    return settings_for(**{k: v for k, v in body.items() if v is not None})


def passwordless(settings_for: Callable[..., Any], vendor: FaxmaxEmulator, **extra: Any) -> Any:
    return FaxmaxProvider(
        "acct",
        settings(
            settings_for,
            vendor,
            api_code="env:FAXMAX_API_CODE",
            api_password="env:FAXMAX_API_PASSWORD",
            remote_ip="10.1.2.3",
            **extra,
        ),
    )


def with_password(settings_for: Callable[..., Any], vendor: FaxmaxEmulator, **extra: Any) -> Any:
    return FaxmaxProvider(
        "acct", settings(settings_for, vendor, password="env:FAXMAX_PASSWORD", **extra)
    )


def rpc(request: Any) -> dict[str, Any]:
    form = parse_qsl(request.body.decode())
    assert [name for name, _ in form] == ["data"]
    loaded: dict[str, Any] = json.loads(form[0][1])
    return loaded


def test_core_login_sends_json_rpc_in_the_form_field_data(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    tokens = with_password(settings_for, vendor).refresh(AccountState("acct"), client, NOW)

    (request,) = vendor.requests
    assert request.method == "POST" and request.path == "/api/v1" and request.query == []
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    call = rpc(request)
    assert call == {
        "jsonrpc": "2.0",
        "method": "Core.login",
        "params": {"username": vendor.username, "password": vendor.users[vendor.username]},
        "id": call["id"],
    }
    assert tokens.access_token.reveal() in vendor.sessions
    assert tokens.expires_at == NOW + timedelta(hours=1)  # session_ttl
    assert tokens.refresh_token is None
    assert tokens.extra == {"logged_in_at": "2026-11-24T12:00:00Z", "session_via": "password"}


def test_passwordless_login_token_is_encrypted_as_documented(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    tokens = passwordless(settings_for, vendor).refresh(AccountState("acct"), client, NOW)

    call = rpc(vendor.requests[0])
    assert call["method"] == "Core.login_token"
    assert set(call["params"]) == {"token_", "code_"}
    assert call["params"]["code_"] == vendor.api_code
    payload = json.loads(decrypt("aes-256-cbc", call["params"]["token_"], vendor.api_password))
    assert payload == {
        "username": vendor.username,
        "exp": int(NOW.timestamp()) + 3,
        "remote_ip": "10.1.2.3",
    }
    assert tokens.extra["session_via"] == "api_code"


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "fernet"])
def test_other_builtin_ciphers(
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    cipher: str,
) -> None:
    with running(FaxmaxEmulator(clock=NOW.timestamp, cipher=cipher)) as vendor:
        monkeypatch.setenv("FAXMAX_API_CODE", vendor.api_code)
        monkeypatch.setenv("FAXMAX_API_PASSWORD", vendor.api_password)
        tokens = passwordless(settings_for, vendor, cipher=cipher).refresh(
            AccountState("acct"), client, NOW
        )
        assert tokens.access_token.reveal() in vendor.sessions
        with pytest.raises(JsonRpcRefused, match="cannot be decrypted"):
            passwordless(settings_for, vendor).refresh(AccountState("acct"), client, NOW)


def test_login_method_is_configurable(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    with pytest.raises(JsonRpcFault, match="Method not found") as raised:
        passwordless(settings_for, vendor, login_method="Core.loginByToken").refresh(
            AccountState("acct"), client, NOW
        )
    assert raised.value.code == "jsonrpc_-32601"
    assert rpc(vendor.requests[0])["method"] == "Core.loginByToken"


def test_wrong_api_code_is_refused(
    vendor: FaxmaxEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAXMAX_API_CODE", leakcheck.register("code-wrong-0000", "api code"))
    with pytest.raises(JsonRpcRefused, match="Wrong API code") as raised:
        passwordless(settings_for, vendor).refresh(AccountState("acct"), client, NOW)
    assert raised.value.code == "jsonrpc_1002"


def test_wrong_password_is_refused(
    vendor: FaxmaxEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAXMAX_PASSWORD", leakcheck.register("not-the-faxmax-password", "password"))
    with pytest.raises(JsonRpcRefused, match="Wrong username or password"):
        with_password(settings_for, vendor).refresh(AccountState("acct"), client, NOW)


def test_keep_alive_renews_the_current_session(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    faxmax = with_password(settings_for, vendor)
    first = faxmax.refresh(AccountState("acct"), client, NOW)
    state = AccountState("acct").with_tokens(first)
    later = NOW + timedelta(minutes=40)
    second = faxmax.refresh(state, client, later)
    call = rpc(vendor.requests[-1])
    assert call["method"] == "Core.token_login"
    assert call["params"] == {"token_": first.access_token.reveal()}
    assert second.access_token == first.access_token
    assert second.expires_at == later + timedelta(hours=1)
    assert second.extra == {"session_via": "keepalive"}
    assert len(vendor.requests) == 2


def test_keep_alive_takes_a_new_session_token(
    settings_for: Callable[..., Any], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(FaxmaxEmulator(clock=NOW.timestamp, rotate_sessions=True)) as vendor:
        monkeypatch.setenv("FAXMAX_PASSWORD", vendor.users[vendor.username])
        faxmax = with_password(settings_for, vendor)
        first = faxmax.refresh(AccountState("acct"), client, NOW)
        second = faxmax.refresh(AccountState("acct").with_tokens(first), client, NOW)
        assert second.access_token != first.access_token
        assert list(vendor.sessions) == [second.access_token.reveal()]


def test_refused_session_logs_in_again(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    faxmax = passwordless(settings_for, vendor)
    first = faxmax.refresh(AccountState("acct"), client, NOW)
    vendor.end_sessions()
    second = faxmax.refresh(AccountState("acct").with_tokens(first), client, NOW)
    assert [rpc(r)["method"] for r in vendor.requests] == [
        "Core.login_token",
        "Core.token_login",
        "Core.login_token",
    ]
    assert second.access_token != first.access_token
    assert second.extra["session_via"] == "api_code"


def test_expired_session_is_not_kept_alive(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    faxmax = with_password(settings_for, vendor)
    first = faxmax.refresh(AccountState("acct"), client, NOW)
    faxmax.refresh(AccountState("acct").with_tokens(first), client, NOW + timedelta(hours=2))
    assert [rpc(r)["method"] for r in vendor.requests] == ["Core.login", "Core.login"]


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        (
            Reply(
                200, {"jsonrpc": "2.0", "error": {"code": -32603, "message": "db down"}, "id": 1}
            ),
            JsonRpcServerError,
            "jsonrpc_-32603",
        ),
        (
            Reply(500, {"jsonrpc": "2.0", "error": {"code": 77, "message": "Blocked"}, "id": 1}),
            JsonRpcRefused,
            "jsonrpc_77",
        ),
        (Reply(502, b"<html>bad gateway</html>", "text/html"), TransientProviderError, "http_502"),
        (Reply(200, b"<html>login</html>", "text/html"), BadResponse, "bad_response"),
        (
            Reply(200, {"jsonrpc": "2.0", "result": {}, "id": 999}),
            BadResponse,
            "bad_response",
        ),
    ],
)
def test_error_answers_are_typed(  # noqa: PLR0917
    vendor: FaxmaxEmulator,
    settings_for: Callable[..., Any],
    client: httpx.Client,
    reply: Reply,
    error: type[Exception],
    code: str,
) -> None:
    vendor.fail_next(reply)
    with pytest.raises(error) as raised:
        with_password(settings_for, vendor).refresh(AccountState("acct"), client, NOW)
    assert getattr(raised.value, "code", None) == code
    assert vendor.users[vendor.username] not in str(raised.value)


def test_json_transport(
    settings_for: Callable[..., Any], client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(FaxmaxEmulator(clock=NOW.timestamp)) as strict:
        monkeypatch.setenv("FAXMAX_PASSWORD", strict.users[strict.username])
        with pytest.raises(JsonRpcFault, match="Parse error"):
            with_password(settings_for, strict, transport="json").refresh(
                AccountState("acct"), client, NOW
            )
    with running(FaxmaxEmulator(clock=NOW.timestamp, accept_json=True)) as vendor:
        monkeypatch.setenv("FAXMAX_PASSWORD", vendor.users[vendor.username])
        with_password(settings_for, vendor, transport="json").refresh(
            AccountState("acct"), client, NOW
        )
        request = vendor.requests[0]
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.body)["method"] == "Core.login"


def test_login_url(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    s = settings(
        settings_for,
        vendor,
        password="env:FAXMAX_PASSWORD",
        api_code="env:FAXMAX_API_CODE",
        api_password="env:FAXMAX_API_PASSWORD",
    )
    url = login_url(s, "bob@example.com", "192.0.2.7", NOW, page="inboxes").reveal()
    assert url.startswith("https://fax.example.com/#inboxes?token=")
    query = dict(pair.split("=", 1) for pair in url.split("?", 1)[1].split("&"))
    assert set(query) == {"token", "code"}
    assert unquote(query["code"]) == vendor.api_code
    payload = json.loads(decrypt("aes-256-cbc", unquote(query["token"]), vendor.api_password))
    assert payload == {
        "username": "bob@example.com",
        "exp": int(NOW.timestamp()) + 3,
        "remote_ip": "192.0.2.7",
    }
    # the same token logs in over the API within its 3 seconds
    answer = client.post(
        vendor.endpoint,
        data={
            "data": json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "Core.login_token",
                    "params": {"token_": unquote(query["token"]), "code_": vendor.api_code},
                    "id": 1,
                }
            )
        },
    )
    assert answer.json()["error"]["message"] == "Unknown user"  # bob is not a user here


def test_login_payload_never_more_than_three_seconds_ahead() -> None:
    moment = datetime(2026, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)
    payload = json.loads(login_payload("u", "10.0.0.1", moment))
    assert payload["exp"] - moment.timestamp() <= 3


def test_emulator_refuses_a_token_that_does_not_decrypt(
    vendor: FaxmaxEmulator, client: httpx.Client
) -> None:
    token = encrypt("aes-256-cbc", login_payload(vendor.username, "10.0.0.1", NOW), "other pw")
    call = {
        "jsonrpc": "2.0",
        "method": "Core.login_token",
        "params": {"token_": token, "code_": vendor.api_code},
        "id": 5,
    }
    answer = client.post(vendor.endpoint, data={"data": json.dumps(call)})
    assert answer.status_code == 200
    assert answer.json() == {
        "jsonrpc": "2.0",
        "error": {"code": 1003, "message": "Token cannot be decrypted"},
        "id": 5,
    }


def test_consumer_view(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    faxmax = with_password(settings_for, vendor)
    view = faxmax.consumer_view(faxmax.refresh(AccountState("acct"), client, NOW))
    assert view["endpoint"] == vendor.endpoint
    assert view["access_token"] in vendor.sessions
    assert view["provider"] == "faxmax" and view["token_type"] == "session"


def test_defaults(settings_for: Callable[..., Any]) -> None:
    s = settings_for(provider="faxmax", domain="fax.example.com", username="u", password="env:P")
    assert s.url == "https://fax.example.com/api/v1" and s.endpoint is None
    assert s.cipher == "aes-256-cbc" and s.login_method == "Core.login_token"
    assert s.transport == "form" and s.session_ttl == timedelta(hours=1)
    assert FaxmaxProvider("a", s).needs_seed is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"domain": "https://fax.example.com"}, "accounts.acct.domain: "),
        ({"cipher": "rot13"}, "accounts.acct.cipher: "),
        ({"transport": "xml"}, "accounts.acct.transport: "),
        ({"session_ttl": "forever"}, "accounts.acct.session_ttl: "),
        ({"login_method": "login token"}, "accounts.acct.login_method: "),
        ({"remote_ip": "10.0.0.300"}, "accounts.acct.remote_ip: "),
        ({"api_password": "plaintext"}, "accounts.acct.api_password: "),
        ({"password": None}, "accounts.acct: set password"),
    ],
)
def test_bad_keys_name_the_key(
    settings_for: Callable[..., Any], body: dict[str, Any], message: str
) -> None:
    full: dict[str, Any] = {
        "provider": "faxmax",
        "domain": "fax.example.com",
        "username": "u",
        "password": "env:P",
        **body,
    }
    with pytest.raises(ConfigError) as raised:
        settings_for(**{k: v for k, v in full.items() if v is not None})
    assert str(raised.value).startswith(message)


def test_rotations_keep_the_session_alive(
    vendor: FaxmaxEmulator, rotator_for: Callable[..., Any]
) -> None:
    vendor.clock = time.time
    rotator, store = rotator_for(
        provider="faxmax",
        domain="fax.example.com",
        endpoint=vendor.endpoint,
        username=vendor.username,
        password="env:FAXMAX_PASSWORD",
    )
    assert rotator.rotate("acct", force=True).ok
    assert rotator.rotate("acct", force=True).ok
    assert [rpc(r)["method"] for r in vendor.requests] == ["Core.login", "Core.token_login"]
    sink = store.read("acct.json").data
    assert sink["access_token"] in vendor.sessions and sink["endpoint"] == vendor.endpoint


def test_keep_alive_method_unknown_falls_back_to_login(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    faxmax = with_password(settings_for, vendor)
    first = faxmax.refresh(AccountState("acct"), client, NOW)
    vendor.fail_next(
        Reply(200, {"jsonrpc": "2.0", "error": {"code": -32601, "message": "no"}, "id": 0})
    )
    second = faxmax.refresh(AccountState("acct").with_tokens(first), client, NOW)
    assert [rpc(r)["method"] for r in vendor.requests] == [
        "Core.login",
        "Core.token_login",
        "Core.login",
    ]
    assert second.extra["session_via"] == "password"


def test_keep_alive_outage_does_not_log_in_again(
    vendor: FaxmaxEmulator, settings_for: Callable[..., Any], client: httpx.Client
) -> None:
    faxmax = with_password(settings_for, vendor)
    first = faxmax.refresh(AccountState("acct"), client, NOW)
    vendor.fail_next(Reply(503, b"", "text/plain"))
    with pytest.raises(TransientProviderError):
        faxmax.refresh(AccountState("acct").with_tokens(first), client, NOW)
    assert len(vendor.requests) == 2


# --- faxmax-login-url --------------------------------------------------------------------------


def faxmax_config(tmp_path: Path, **extra: Any) -> Path:
    config = {
        "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
        "accounts": {
            "fm": {
                "provider": "faxmax",
                "domain": "fax.example.com",
                "username": "svc@example.com",
                "password": "env:FM_PASSWORD",
                "api_code": "env:FM_CODE",
                "api_password": "env:FM_API_PASSWORD",
                "sinks": [{"store": "files", "path": "fm.json"}],
                **extra,
            }
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_faxmax_login_url_command(tmp_path: Path) -> None:
    # The URL is a 3-second credential by design, so this code and password are not
    # registered with the leak check: printing them is what the command is for.
    config = faxmax_config(tmp_path)
    env = {"FM_CODE": "public-test-code", "FM_API_PASSWORD": "test-api-password"}
    proc = run_rotator(
        [
            "faxmax-login-url",
            "fm",
            "-c",
            str(config),
            "--user",
            "bob",
            "--remote-ip",
            "192.0.2.1",
            "--page",
            "outbox",
        ],
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    (url,) = proc.stdout.split()
    assert url.startswith("https://fax.example.com/#outbox?token=")
    assert url.endswith("&code=public-test-code")
    assert "3 seconds" in proc.stderr
    bad = run_rotator(
        ["faxmax-login-url", "fm", "-c", str(config), "--user", "bob", "--remote-ip", "nope"],
        env=env,
    )
    assert bad.returncode == 2 and "--remote-ip 'nope' is not an IP address" in bad.stderr


def test_faxmax_login_url_needs_the_api_keys(tmp_path: Path) -> None:
    config = faxmax_config(tmp_path)
    config.write_text(
        "\n".join(line for line in config.read_text().splitlines() if "api_code" not in line)
    )
    with pytest.raises(ConfigError, match=r"^accounts\.fm\.api_code: required"):
        faxmax_login_url(load_config(str(config)), "fm", user="u", remote_ip="10.0.0.1")
