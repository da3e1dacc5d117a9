"""grant_fix: the command a fix names works for THAT account, over every provider x grant."""

from __future__ import annotations

from typing import Any

import pytest

from rotator.alerts.fixes import grant_fix
from rotator.alerts.rules import Kind, evaluate
from rotator.commands.authorize import _provider
from rotator.config.models import Config, ConsoleSettings, ServerSettings
from rotator.errors import ConfigError, InvalidGrant
from rotator.providers.registry import provider_class
from rotator.rotation.failure import fix_for
from tests.support.alertkit import ALERTS, T0, state

SINKS = [{"store": "files", "path": "x.json"}]
OAUTH = {"provider": "oauth2", "token_url": "https://idp.example/token", "client_id": "c"}
SECRET = {"client_secret": "env:S"}
ACCOUNTS: dict[str, dict[str, Any]] = {
    "oauth2 refresh_token, authorize_url and redirect_uri": {
        **OAUTH,
        **SECRET,
        "authorize_url": "https://idp.example/authorize",
        "redirect_uri": "https://app.example/cb",
    },
    "oauth2 refresh_token, authorize_url, public client": {
        **OAUTH,
        "client_auth": "none",
        "authorize_url": "https://idp.example/authorize",
    },
    "oauth2 refresh_token without authorize_url": {**OAUTH, **SECRET},
    "oauth2 password": {
        **OAUTH,
        **SECRET,
        "grant": "password",
        "username": "u",
        "password": "env:P",
    },
    "oauth2 client_credentials": {**OAUTH, **SECRET, "grant": "client_credentials"},
    "faxplus with redirect_uri": {
        "provider": "faxplus",
        "client_id": "APIK-1",
        **SECRET,
        "enhanced_security": True,
        "redirect_uri": "http://127.0.0.1:8765/callback",
    },
    "faxplus without redirect_uri": {
        "provider": "faxplus",
        "client_id": "APIK-1",
        **SECRET,
        "enhanced_security": False,
    },
    "faxplus-pat": {"provider": "faxplus-pat", "token": "env:T", "expires_at": "2027-01-31"},
    "bifit": {"provider": "bifit", "username": "79999999999", "password": "env:P"},
    "faxmax": {
        "provider": "faxmax",
        "domain": "fax.example.com",
        "username": "u",
        "password": "env:P",
    },
}


def config(settings: dict[str, Any], console: bool) -> Config:
    model = provider_class(settings["provider"]).settings_model
    account = model.model_validate({**settings, "sinks": SINKS})
    server = ServerSettings(
        listen="127.0.0.1:9464" if console else None,
        console=ConsoleSettings(public_url="https://r.example") if console else None,
    )
    return Config(server=server, accounts={"acct": account}, source="test.yaml")


def authorize_works(cfg: Config) -> bool:
    try:
        _provider(cfg, "acct")
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("console", [False, True])
@pytest.mark.parametrize("case", sorted(ACCOUNTS))
def test_the_named_command_works_for_the_account(case: str, console: bool) -> None:
    cfg = config(ACCOUNTS[case], console)
    settings = cfg.accounts["acct"]
    fix = grant_fix("acct", settings, console=console)
    provider = provider_class(settings.provider)("acct", settings)
    if fix.action == "rotator authorize acct":
        assert fix.reauthorize and authorize_works(cfg)
    else:
        assert not fix.reauthorize and "rotator authorize acct`" not in fix.action
        assert not authorize_works(cfg) or "rotator import" in fix.action
    if fix.action.startswith("rotator import acct"):
        assert provider.needs_seed  # a refresh token is what the account runs on
    if settings.provider == "faxplus-pat":
        assert "personal access token" in fix.action
    if settings.provider == "faxmax":
        assert "rotator probe acct" in fix.action
    if getattr(settings, "grant", "") in ("password", "client_credentials") or (
        settings.provider == "bifit"
    ):
        assert fix.action.endswith("rotator refresh acct")
    # every fix text says the same: the log line of a dead grant, and the alert's action
    assert fix.action in fix_for("acct", InvalidGrant("invalid_grant", "dead"), settings) or console
    dead = state(
        account="acct", failed=True, last_error_code="invalid_grant", refresh_expires_at=None
    )
    [cond] = [
        c for c in evaluate(dead, settings, ALERTS, T0, console=console) if c.kind is Kind.DEAD
    ]
    assert cond.action == fix.action and cond.reauthorize is fix.reauthorize


def test_exactly_the_configured_code_flows_are_authorize() -> None:
    told = {
        (case, console): grant_fix(
            "acct", config(ACCOUNTS[case], console).accounts["acct"], console=console
        ).reauthorize
        for case in ACCOUNTS
        for console in (False, True)
    }
    assert {case for (case, console), yes in told.items() if yes and not console} == {
        "oauth2 refresh_token, authorize_url and redirect_uri",
        "faxplus with redirect_uri",
    }
    assert {case for (case, console), yes in told.items() if yes and console} == {
        "oauth2 refresh_token, authorize_url and redirect_uri",
        "oauth2 refresh_token, authorize_url, public client",
        "faxplus with redirect_uri",
        "faxplus without redirect_uri",
    }
