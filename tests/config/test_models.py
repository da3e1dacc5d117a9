"""The configuration models (rotator/config/models.py): what a valid file is; every
refusal names the key path. Reading files, YAML and `rotator check`: test_loading.py."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import yaml

from rotator.config import (
    Config,
    parse_config,
    parse_duration,
    state_store,
)
from rotator.errors import ConfigError
from rotator.providers.oauth2 import OAuth2Settings
from rotator.secrets import SecretRef

# The example of DESIGN.md ("Configuration"), with the accounts of providers that exist.
DESIGN_EXAMPLE = """
server:
  listen: 127.0.0.1:9464        # /metrics /healthz /readyz; leave out to disable
stores:
  files:  {type: file, directory: /var/lib/rotator, mode: "0600"}
  vault:  {type: vault, url: https://vault:8200, mount: secret,
           auth: {method: kubernetes, role: rotator}}
  vault2: {type: vault, url: https://vault:8200, auth: {method: token, token: env:VAULT_TOKEN}}
  vault3: {type: vault, url: https://vault:8200,
           auth: {method: approle, role_id: file:/etc/rotator/role-id,
                  secret_id: file:/etc/rotator/secret-id}}
  aws:    {type: aws, region: eu-central-1}
defaults:
  state: {store: files}
  refresh_share: 0.67
alerts:
  refresh_token_warn: [7d, 3d, 1d]
  channels:
    - {type: webhook, url: env:ROTATOR_WEBHOOK, format: slack}
accounts:
  idp-api:
    provider: oauth2
    token_url: https://idp.example/oauth/token
    grant: client_credentials    # refresh_token | client_credentials | password
    client_id: svc
    client_secret: file:/etc/rotator/idp-secret
    client_auth: basic           # basic | post | none
    params_in: body              # body | query
    scope: api:read
    refresh_share: 0.67
    jitter: 0.1
    max_lifetime: 1h
    sinks: [{store: files, path: idp-api.token, format: token}]
  crm:
    provider: oauth2
    token_url: https://crm.example/token
    client_id: crm-client
    client_secret: cred:crm-secret
    refresh_before: 5m
    sinks:
      - {store: vault, path: apps/crm}
      - {store: aws, path: apps/crm}
      - {store: files, path: crm.env, format: env}
"""

# A small valid configuration the refusal tests break one key at a time.
BASE: dict[str, Any] = {
    "stores": {
        "files": {"type": "file", "directory": "/tmp/rotator-test"},
        "vault": {
            "type": "vault",
            "url": "https://vault:8200",
            "auth": {"method": "token", "token": "env:VAULT_TOKEN"},
        },
    },
    "defaults": {"state": {"store": "files"}},
    "accounts": {
        "idp-api": {
            "provider": "oauth2",
            "token_url": "https://idp.example/oauth/token",
            "client_id": "svc",
            "client_secret": "env:IDP_SECRET",
            "sinks": [{"store": "files", "path": "idp-api.json"}],
        }
    },
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def account(raw: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = raw["accounts"]["idp-api"]
    return result


def refused(raw: dict[str, Any] | str) -> str:
    text = raw if isinstance(raw, str) else yaml.safe_dump(raw)
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


# -- good files -----------------------------------------------------------------------


def test_design_example_parses() -> None:
    config = parse_config(DESIGN_EXAMPLE, source="design.yaml")
    assert isinstance(config, Config)
    assert config.source == "design.yaml"
    assert config.server.listen == "127.0.0.1:9464"
    assert config.stores["files"].type == "file"
    assert config.stores["files"].mode == 0o600
    assert config.alerts.refresh_token_warn == [
        timedelta(days=7),
        timedelta(days=3),
        timedelta(days=1),
    ]
    idp = config.accounts["idp-api"]
    assert isinstance(idp, OAuth2Settings)
    assert idp.grant == "client_credentials"
    assert idp.client_secret == SecretRef("file", "/etc/rotator/idp-secret")
    assert idp.max_lifetime == timedelta(hours=1)
    assert idp.sinks[0].format == "token"
    assert idp.state is not None and idp.state.store == "files"  # from defaults
    assert idp.state_path("idp-api") == "state/idp-api"
    crm = config.accounts["crm"]
    assert isinstance(crm, OAuth2Settings)
    assert crm.client_secret == SecretRef("cred", "crm-secret")
    assert crm.refresh_before == timedelta(minutes=5)
    assert [s.store for s in crm.sinks] == ["vault", "aws", "files"]
    assert state_store(config, "crm") == "files"


def test_defaults_fill_in_and_accounts_override() -> None:
    raw = base()
    raw["defaults"].update(refresh_share=0.5, jitter=0.2)
    account(raw)["jitter"] = 0.0
    settings = parse_config(yaml.safe_dump(raw)).accounts["idp-api"]
    assert settings.refresh_share == 0.5
    assert settings.jitter == 0.0


def test_single_file_store_keeps_the_state_without_being_named() -> None:
    raw = base()
    del raw["defaults"]
    config = parse_config(yaml.safe_dump(raw))
    assert state_store(config, "idp-api") == "files"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), ("1h30m", 5400), (90, 90)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


# -- refusals: each names the key path ------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


def _two_file_stores(raw: dict[str, Any]) -> None:
    del raw["defaults"]
    raw["stores"]["spool"] = {"type": "file", "directory": "/tmp/rotator-spool"}


def _vault_token_sink(raw: dict[str, Any]) -> None:
    account(raw)["sinks"].append({"store": "vault", "path": "apps/idp", "format": "token"})


def _duplicate_sink(raw: dict[str, Any]) -> None:
    account(raw)["sinks"].append({"store": "files", "path": "idp-api.json", "format": "env"})


def _sink_on_state(raw: dict[str, Any]) -> None:
    account(raw)["sinks"].append({"store": "files", "path": "state/idp-api"})


REFUSALS: dict[str, tuple[Mutation, str]] = {
    "unknown section": (
        lambda r: r.update(acounts={}),
        "acounts: unknown section (valid: server, include, stores, defaults, alerts, accounts); "
        "did you mean 'accounts'?",
    ),
    "unknown account key": (
        lambda r: account(r).update(colour="blue"),
        "accounts.idp-api.colour: unknown key (valid keys: authorize_params, authorize_url,",
    ),
    "undefined sink store": (
        lambda r: account(r)["sinks"][0].update(store="fils"),
        "accounts.idp-api.sinks[0].store: 'fils' is not a defined store (defined: files, vault)",
    ),
    "bad grant": (
        lambda r: account(r).update(grant="implicit"),
        "accounts.idp-api.grant: 'implicit': Input should be 'refresh_token', "
        "'client_credentials' or 'password'",
    ),
    "bad client_auth": (
        lambda r: account(r).update(client_auth="jwt"),
        "accounts.idp-api.client_auth: 'jwt': Input should be 'basic', 'post' or 'none'",
    ),
    "bad params_in": (
        lambda r: account(r).update(params_in="header"),
        "accounts.idp-api.params_in: 'header': Input should be 'body' or 'query'",
    ),
    "literal secret": (
        lambda r: account(r).update(client_secret="hunter2-literal"),
        "accounts.idp-api.client_secret: must be a secret reference: env:NAME, "
        "file:/absolute/path or cred:NAME",
    ),
    "relative file ref": (
        lambda r: account(r).update(client_secret="file:secret.txt"),
        "accounts.idp-api.client_secret: file: reference needs an absolute path",
    ),
    "bad duration": (
        lambda r: account(r).update(max_lifetime="5 minutes"),
        "accounts.idp-api.max_lifetime: '5 minutes' is not a duration; write it like 30s",
    ),
    "bad file mode": (
        lambda r: r["stores"]["files"].update(mode="rw"),
        "stores.files.mode: 'rw' is not an octal file mode",
    ),
    "executable file mode": (
        lambda r: r["stores"]["files"].update(mode="0755"),
        "stores.files.mode: 0o755 must not be executable",
    ),
    "missing provider": (
        lambda r: account(r).pop("provider"),
        "accounts.idp-api.provider: required key is missing "
        "(one of: bifit, faxmax, faxplus, faxplus-pat, oauth2)",
    ),
    "unknown provider": (
        lambda r: account(r).update(provider="oauth3"),
        "accounts.idp-api.provider: 'oauth3' is not a known provider "
        "(known: bifit, faxmax, faxplus, faxplus-pat, oauth2)",
    ),
    "password grant without username": (
        lambda r: account(r).update(grant="password", password="env:PW"),
        "accounts.idp-api: grant 'password' needs username and password",
    ),
    "defaults key no provider knows": (
        lambda r: r["defaults"].update(colour="blue"),
        "defaults.colour: is not an account key of any provider",
    ),
    "format token on a vault store": (
        _vault_token_sink,
        "accounts.idp-api.sinks[1].format: format 'token' is for file stores",
    ),
    "duplicate sink path": (
        _duplicate_sink,
        "accounts.idp-api.sinks[1].path: ",
    ),
    "sink on the state path": (
        _sink_on_state,
        "accounts.idp-api.sinks[1].path: ",
    ),
    "missing state store choice": (
        _two_file_stores,
        "accounts.idp-api.state: which store keeps the state? set state.store here or "
        "defaults.state.store (defined: files, spool, vault)",
    ),
    "undefined state store": (
        lambda r: r["defaults"].update(state={"store": "nope"}),
        "accounts.idp-api.state.store: 'nope' is not a defined store",
    ),
    "bad vault auth method": (
        lambda r: r["stores"]["vault"]["auth"].update(method="ldap"),
        "stores.vault.auth.method: 'ldap' is not valid (valid: 'token', 'approle', 'kubernetes')",
    ),
    "missing vault auth method": (
        lambda r: r["stores"]["vault"]["auth"].pop("method"),
        "stores.vault.auth.method: required key is missing (valid: token, approle, kubernetes)",
    ),
    "unknown vault auth key": (
        lambda r: r["stores"]["vault"]["auth"].update(role="x"),
        "stores.vault.auth.role: unknown key (valid keys: method, token)",
    ),
    "unknown approle auth key": (
        lambda r: r["stores"]["vault"].update(
            auth={"method": "approle", "role_id": "env:R", "secret_id": "env:S", "token": "x"}
        ),
        "stores.vault.auth.token: unknown key (valid keys: method, mount, role_id, secret_id)",
    ),
    "unknown store key": (
        lambda r: r["stores"]["files"].update(dir="/x"),
        "stores.files.dir: unknown key (valid keys: directory, mode, type)",
    ),
    "unknown email channel key": (
        lambda r: r.update(
            alerts={"channels": [{"type": "email", "host": "h", "from": "a", "to": ["b"], "x": 1}]}
        ),
        "alerts.channels[0].x: unknown key (valid keys: from, host, password, port,",
    ),
    "bad store type": (
        lambda r: r["stores"]["files"].update(type="s3"),
        "stores.files.type: 's3' is not valid (valid: 'file', 'vault', 'aws')",
    ),
    "bad channel type": (
        lambda r: r.update(alerts={"channels": [{"type": "pager"}]}),
        "alerts.channels[0].type: 'pager' is not valid",
    ),
    "bad account name": (
        lambda r: r["accounts"].update({"bad name": {}}),
        "accounts.bad name: account names use letters, digits",
    ),
    "refresh_share out of range": (
        lambda r: account(r).update(refresh_share=1.5),
        "accounts.idp-api.refresh_share: 1.5: Input should be less than 1",
    ),
    "token_url not http": (
        lambda r: account(r).update(token_url="ftp://idp"),
        "accounts.idp-api.token_url: 'ftp://idp' is not an http:// or https:// URL",
    ),
    "bad listen": (
        lambda r: r.update(server={"listen": "9464"}),
        "server.listen: '9464' is not HOST:PORT",
    ),
    "no sinks": (
        lambda r: account(r).update(sinks=[]),
        "accounts.idp-api.sinks: ",
    ),
    "reserved extra_params": (
        lambda r: account(r).update(extra_params={"grant_type": "x"}),
        "accounts.idp-api: extra_params must not set grant_type",
    ),
    "client_auth basic without secret": (
        lambda r: account(r).pop("client_secret"),
        "accounts.idp-api: client_auth 'basic' needs client_id and client_secret",
    ),
    "timeout not shorter than the lease": (
        lambda r: account(r).update(timeout="5m", lease_ttl="2m"),
        "accounts.idp-api: timeout must be shorter than lease_ttl",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_names_the_key_path(case: str) -> None:
    mutate, expected = REFUSALS[case]
    raw = base()
    mutate(raw)
    assert expected in refused(raw)


def test_several_problems_are_listed() -> None:
    raw = base()
    account(raw).update(grant="implicit", params_in="header")
    message = refused(raw)
    assert "accounts.idp-api.grant" in message
    assert "also accounts.idp-api.params_in" in message


@pytest.mark.parametrize(
    "key", ["retry_initial", "retry_max", "timeout", "lease_ttl", "max_lifetime"]
)
def test_zero_durations_that_would_busy_loop_are_refused(key: str) -> None:
    raw = base()
    account(raw)[key] = "0s"
    assert f"accounts.idp-api.{key}: must be longer than 0s" in refused(raw)


# -- rate_limit (politeness toward vendors) ------------------------------------------------


def test_rate_limit_defaults_to_the_politeness_defaults_and_comes_from_defaults() -> None:
    from rotator.politeness import DEFAULT_LIMIT, RateLimit

    settings = parse_config(yaml.safe_dump(base())).accounts["idp-api"]
    assert settings.rate_limit.limit() == DEFAULT_LIMIT == RateLimit(10, 20, 8)
    assert settings.vendor_urls() == ("https://idp.example/oauth/token",)
    raw = base()
    raw["defaults"]["rate_limit"] = {"per_second": 2, "burst": 3}
    settings = parse_config(yaml.safe_dump(raw)).accounts["idp-api"]
    assert settings.rate_limit.limit() == RateLimit(2, 3, 8)
    account(raw)["rate_limit"] = {"concurrency": 1}  # an account's own replaces the default
    settings = parse_config(yaml.safe_dump(raw)).accounts["idp-api"]
    assert settings.rate_limit.limit() == RateLimit(10, 20, 1)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"per_second": 0}, ["rate_limit.per_second", "greater than 0"]),
        ({"burst": 0}, ["rate_limit.burst", "greater than or equal to 1"]),
        ({"concurrency": 1000}, ["rate_limit.concurrency", "256"]),
        ({"per_minute": 5}, ["rate_limit.per_minute"]),
    ],
)
def test_a_bad_rate_limit_names_its_key(value: dict[str, int], words: list[str]) -> None:
    raw = base()
    account(raw)["rate_limit"] = value
    message = refused(raw)
    for word in words:
        assert word in message, message
