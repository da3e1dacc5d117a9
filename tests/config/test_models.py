"""Configuration validation (rotator/config/): every refusal names the key path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.config import (
    Config,
    config_path,
    load_config,
    parse_config,
    parse_duration,
    state_store,
)
from rotator.config.loading import INTERNAL
from rotator.errors import ConfigError
from rotator.providers.oauth2 import OAuth2Settings
from rotator.secrets import SecretRef
from tests.support.proc import run_rotator

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


def test_empty_file_is_an_empty_configuration() -> None:
    assert parse_config("").accounts == {}


def test_config_path_order() -> None:
    assert config_path("a.yaml", {"ROTATOR_CONFIG": "b.yaml"}) == "a.yaml"
    assert config_path(None, {"ROTATOR_CONFIG": "b.yaml"}) == "b.yaml"
    assert config_path(None, {}) == "/etc/rotator/rotator.yaml"


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist \(give -c FILE"):
        load_config(str(tmp_path / "nope.yaml"))


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
        "acounts: unknown section (valid: server, stores, defaults, alerts, accounts)",
    ),
    "unknown account key": (
        lambda r: account(r).update(colour="blue"),
        "accounts.idp-api.colour: unknown key (valid keys: ca_bundle, client_auth, client_id,",
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


def test_invalid_yaml_names_the_line() -> None:
    message = refused("accounts:\n  idp-api:\n    provider: [oauth2\n  other: 1\n")
    assert message.startswith("<string>: not valid YAML at line 4")


def test_key_given_twice_is_refused_with_its_line() -> None:
    text = yaml.safe_dump(base()) + "accounts: {}\n"
    message = refused(text)
    assert "key 'accounts' appears twice" in message
    assert "not valid YAML at line" in message


def test_yaml_merge_keys_still_work() -> None:
    text = """
stores: {files: {type: file, directory: /tmp/r}}
defaults: &common {provider: oauth2, refresh_share: 0.5}
accounts:
  a: {<<: *common, refresh_share: 0.6, token_url: "https://idp/t", client_auth: none,
      sinks: [{store: files, path: a.json}]}
  b: {<<: *common, token_url: "https://idp/t", client_auth: none,
      sinks: [{store: files, path: b.json}]}
"""
    config = parse_config(text)
    assert config.accounts["a"].refresh_share == 0.6
    assert config.accounts["b"].refresh_share == 0.5


def test_top_level_must_be_a_mapping() -> None:
    assert "the top level must be a mapping" in refused("- 1\n- 2\n")


def test_several_problems_are_listed() -> None:
    raw = base()
    account(raw).update(grant="implicit", params_in="header")
    message = refused(raw)
    assert "accounts.idp-api.grant" in message
    assert "also accounts.idp-api.params_in" in message


# -- the same refusals through `rotator check` -------------------------------------------


def _write(tmp_path: Path, name: str, raw: dict[str, Any] | str) -> Path:
    path = tmp_path / f"{name.replace(' ', '-')}.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    return path


# The refusals issue 2 names, each also run through the command line (every case
# above is checked in-process; a subprocess costs ~0.3 s).
CLI_CASES = [
    "unknown section",
    "unknown account key",
    "undefined sink store",
    "bad grant",
    "bad client_auth",
    "bad params_in",
    "literal secret",
    "bad duration",
    "bad file mode",
    "missing provider",
    "unknown provider",
    "password grant without username",
    "defaults key no provider knows",
    "format token on a vault store",
    "duplicate sink path",
    "missing state store choice",
    "bad vault auth method",
]


def test_check_exits_2_naming_the_key_for_every_bad_file(tmp_path: Path) -> None:
    jobs: list[tuple[str, Path, str]] = []
    for case in CLI_CASES:
        mutate, expected = REFUSALS[case]
        raw = base()
        # The store directory must not be created by a refused check.
        raw["stores"]["files"]["directory"] = str(tmp_path / "store")
        mutate(raw)
        jobs.append((case, _write(tmp_path, case, raw), expected))
    jobs.append(("bad yaml", _write(tmp_path, "bad yaml", "a: [\n"), "not valid YAML at line"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: run_rotator(["check", "-c", str(job[1])]), jobs))
    for (case, _path, expected), proc in zip(jobs, results, strict=True):
        assert proc.returncode == 2, (case, proc.stderr)
        assert expected in proc.stderr, (case, proc.stderr)
        assert proc.stderr.startswith("rotator: config: "), (case, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "configuration OK" not in proc.stdout
    assert not (tmp_path / "store").exists()


def test_check_accepts_a_good_file(tmp_path: Path) -> None:
    raw = base()
    raw["stores"]["files"]["directory"] = str(tmp_path / "store")
    proc = run_rotator(["check", "-c", str(_write(tmp_path, "good", raw))])
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK: 1 accounts, 2 stores" in proc.stdout
    proc = run_rotator(["check", "-c", str(_write(tmp_path, "design", DESIGN_EXAMPLE))])
    assert proc.returncode == 0, proc.stderr


def test_check_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run_rotator(["check", "-c", str(tmp_path / "absent.yaml")])
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


# -- nothing but ConfigError escapes -------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False)
_words = st.sampled_from(
    [
        "server",
        "stores",
        "defaults",
        "alerts",
        "accounts",
        "files",
        "type",
        "file",
        "vault",
        "aws",
        "directory",
        "mode",
        "provider",
        "oauth2",
        "sinks",
        "store",
        "path",
        "format",
        "json",
        "token",
        "env",
        "state",
        "token_url",
        "client_id",
        "client_secret",
        "env:X",
        "https://a",
        "0600",
        "grant",
        "password",
        "auth",
        "method",
        "listen",
        "channels",
        "refresh_share",
        "5m",
        "a",
        "",
        "x:y",
    ]
)
_values = st.recursive(
    _scalars | _words | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(_words | st.integers(0, 3), children, max_size=4)
    ),
    max_leaves=20,
)
_configs = st.dictionaries(_words, _values, max_size=5)


def _plausible(draw: st.DrawFn) -> dict[str, Any]:
    raw = base()
    for _ in range(draw(st.integers(1, 3))):
        node: Any = raw
        for _depth in range(draw(st.integers(0, 3))):
            if isinstance(node, dict) and node:
                node = node[draw(st.sampled_from(sorted(node, key=str)))]
            elif isinstance(node, list) and node:
                node = node[draw(st.integers(0, len(node) - 1))]
        if isinstance(node, dict):
            node[draw(_words)] = draw(_values)
        elif isinstance(node, list):
            node.append(draw(_values))
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(_configs, st.composite(_plausible)()))
def test_parse_config_returns_a_config_or_a_config_error(raw: dict[str, Any]) -> None:
    text = yaml.safe_dump(raw)
    try:
        config = parse_config(text)
    except ConfigError as exc:
        assert str(exc)
        assert INTERNAL not in str(exc)
        return
    assert isinstance(config, Config)


@pytest.mark.parametrize(
    "key", ["retry_initial", "retry_max", "timeout", "lease_ttl", "max_lifetime"]
)
def test_zero_durations_that_would_busy_loop_are_refused(key: str) -> None:
    raw = base()
    account(raw)[key] = "0s"
    assert f"accounts.idp-api.{key}: must be longer than 0s" in refused(raw)


def test_two_accounts_cannot_write_the_same_path() -> None:
    text = """
stores:
  files: {type: file, directory: /tmp/rotator-x}
accounts:
  a:
    provider: oauth2
    token_url: https://idp.example/token
    client_id: x
    client_secret: env:X
    sinks: [{store: files, path: shared.json}]
  b:
    provider: oauth2
    token_url: https://idp.example/token
    client_id: x
    client_secret: env:X
    sinks: [{store: files, path: alerts/a}]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("alerts/a", "shared.json"))
    assert str(caught.value) == (
        "accounts.b.sinks[0].path: files:shared.json is already written by "
        "accounts.a.sinks[0].path; give each its own path"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert "accounts.b.sinks[0].path: files:alerts/a is already written by accounts.a" in str(
        caught.value
    )
