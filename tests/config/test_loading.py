"""Reading a configuration (rotator/config/loading.py): files, YAML, the passes across
accounts, and `rotator check`; nothing but ConfigError escapes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.config import Config, config_path, load_config, parse_config
from rotator.config.loading import INTERNAL
from rotator.errors import ConfigError
from tests.config.test_models import DESIGN_EXAMPLE, REFUSALS, account, base, refused
from tests.support.proc import run_rotator


def test_empty_file_is_an_empty_configuration() -> None:
    assert parse_config("").accounts == {}


def test_config_path_order() -> None:
    assert config_path("a.yaml", {"ROTATOR_CONFIG": "b.yaml"}) == "a.yaml"
    assert config_path(None, {"ROTATOR_CONFIG": "b.yaml"}) == "b.yaml"
    assert config_path(None, {}) == "/etc/rotator/rotator.yaml"


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist \(give -c FILE"):
        load_config(str(tmp_path / "nope.yaml"))


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


def test_one_place_has_one_spelling_however_it_is_percent_encoded() -> None:
    raw = base()
    account(raw)["sinks"] = [
        {"store": "vault", "path": "apps/idp"},
        {"store": "vault", "path": "apps%2Fidp"},
    ]
    assert "accounts.idp-api.sinks[1].path: vault:apps%2Fidp is already written by" in refused(raw)


@pytest.mark.parametrize(
    ("prefix", "path"),
    [("", "apps/idp api"), ("", "apps/idp#1"), ("team b/", "idp"), ("", "/".join(["b" * 200] * 3))],
)
def test_a_name_secrets_manager_refuses_is_refused_in_check(prefix: str, path: str) -> None:
    raw = base()
    raw["stores"]["aws"] = {"type": "aws", "region": "eu-central-1", "prefix": prefix}
    account(raw)["sinks"].append({"store": "aws", "path": path})
    message = refused(raw)
    assert message.startswith("accounts.idp-api.sinks[1].path: ")
    assert "is not a Secrets Manager name" in message
