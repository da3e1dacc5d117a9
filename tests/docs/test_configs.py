"""Every YAML block of the docs that is a rotator configuration passes ``rotator check``.

A reader copies a configuration out of the docs and runs it; so does this
module, for every ```yaml block of README.md and docs/**/*.md (tests/support/docs.py),
parametrised by ``file:line`` so a failure names the block. Each block is one of:

- **a configuration** (no ``config:`` marker): written to a file exactly as
  printed and checked by ``rotator check``'s own code (``load_config`` and
  ``commands.check.check``, offline: the file is read, validated and every
  plugged-in module imported; no secret is read and no store is asked). So a
  configuration in the docs carries its ``stores`` block: a vendor example whose
  sink names ``vault`` without defining it fails with the message a reader would
  get (``'vault' is not a defined store (defined: none)``).
- **a fragment** (``<!-- config: fragment -->``): it shows some keys and elides
  the rest, and is checked merged into a minimal configuration:

  * its top level is rotator's top-level keys (``server``, ``stores``,
    ``defaults``, ``alerts``, ``accounts``, ``include``): each is deep-merged into
    :func:`minimal` (mappings merge key by key, the fragment's value wins;
    a list replaces the list under it);
  * its top level is an account's keys (``provider``, ``sinks``, ...): it is one
    account's body, checked as ``accounts: {example: BODY}``;
  * every account of a fragment is merged over a complete account of its
    provider (:data:`BASE_ACCOUNTS`; ``oauth2`` when the fragment names none),
    which fills in what the fragment elides with ``# ...``. What the fragment
    writes must still be valid: a misspelt key or a wrong value fails.

  A fragment never sits under ``server`` or ``defaults`` alone (``console:``
  without ``server:`` above it): write the key path from the top, so a reader
  sees where the keys go. The minimal configuration defines the store names the
  docs use (``files``, ``vault``, ``aws``) with the types those names say.
- **not a configuration** (``<!-- config: none -->``: Helm values, Kubernetes
  manifests, Prometheus rules): skipped, but it must not look like one. An
  unmarked block with no top-level rotator key fails too, asking for the
  marker: nobody can add a YAML block and forget to say which it is.

``env:`` references get placeholder values (the offline check reads none of
them, but a reader's configuration may be checked online later with them set;
nothing here depends on a real secret). ``file:`` and ``cred:`` paths are left
as printed: the offline check does not open them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.commands.check import check
from rotator.config import load_config
from rotator.errors import ConfigError
from tests.support import docs

#: rotator's top-level keys (rotator/config/loading.py refuses any other)
TOP_KEYS = frozenset({"server", "include", "stores", "defaults", "alerts", "accounts"})
CONFIG_MARKS = ("fragment", "none")

#: a complete account per provider: what a fragment's elided keys are filled with
BASE_ACCOUNTS: dict[str, dict[str, Any]] = {
    "oauth2": {
        "provider": "oauth2",
        "token_url": "https://idp.example/oauth/token",
        "grant": "client_credentials",
        "client_id": "svc",
        "client_secret": "env:DOCS_CLIENT_SECRET",
        "sinks": [{"store": "files", "path": "example.json"}],
    },
    "faxplus": {
        "provider": "faxplus",
        "client_id": "APIK-1a2b3c4d",
        "client_secret": "env:DOCS_CLIENT_SECRET",
        "enhanced_security": True,
        "sinks": [{"store": "files", "path": "example.json"}],
    },
    "faxplus-pat": {
        "provider": "faxplus-pat",
        "token": "env:DOCS_PAT",
        "expires_at": "2030-01-31",
        "sinks": [{"store": "files", "path": "example.json"}],
    },
    "bifit": {
        "provider": "bifit",
        "username": "79991234567",
        "password": "env:DOCS_PASSWORD",
        "sinks": [{"store": "files", "path": "example.json"}],
    },
    "faxmax": {
        "provider": "faxmax",
        "domain": "fax.example.com",
        "username": "robot@example.com",
        "password": "env:DOCS_PASSWORD",
        "sinks": [{"store": "files", "path": "example.json"}],
    },
}


def minimal(tmp: Path) -> dict[str, Any]:
    """The configuration a fragment is merged into: the stores the docs name, state in files."""
    return {
        "stores": {
            "files": {"type": "file", "directory": str(tmp / "files")},
            "vault": {
                "type": "vault",
                "url": "https://vault.example:8200",
                "prefix": "rotator",
                "auth": {"method": "token", "token": "env:VAULT_TOKEN"},
            },
            "aws": {"type": "aws", "region": "eu-central-1", "prefix": "rotator/"},
        },
        "defaults": {"state": {"store": "files"}},
    }


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def merged_fragment(fragment: Any, tmp: Path) -> dict[str, Any]:
    """The complete configuration a fragment is checked as (the rules: module docstring)."""
    if not isinstance(fragment, dict) or not fragment:
        raise AssertionError("a fragment is a YAML mapping (top-level keys, or an account's)")
    keys = set(fragment)
    if not keys <= TOP_KEYS:
        if keys & TOP_KEYS:
            raise AssertionError(
                f"a fragment mixes top-level keys ({', '.join(sorted(keys & TOP_KEYS))}) with "
                f"others ({', '.join(sorted(map(str, keys - TOP_KEYS)))}): write each key "
                "under its section"
            )
        fragment = {"accounts": {"example": fragment}}
    accounts = fragment.get("accounts") or {}
    if not isinstance(accounts, dict):
        raise AssertionError("accounts: is a mapping of account name to its keys")
    filled = {}
    for name, written in accounts.items():
        body = written or {}
        provider = body.get("provider", "oauth2") if isinstance(body, dict) else "oauth2"
        base = BASE_ACCOUNTS.get(provider, {"provider": provider})
        filled[name] = deep_merge(base, body) if isinstance(body, dict) else body
    return deep_merge(minimal(tmp), {**fragment, "accounts": filled})


def yaml_blocks() -> list[docs.Block]:
    return [block for block in docs.fences() if block.lang in ("yaml", "yml")]


def load_all(text: str) -> list[Any]:
    """Every YAML document of the text, or [] when it is not YAML (a template)."""
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []


def looks_like_config(text: str) -> bool:
    """A mapping with any of rotator's top-level keys, in any document of the block."""
    return any(isinstance(doc, dict) and set(doc) & TOP_KEYS for doc in load_all(text))


def refused(text: str, tmp: Path) -> str:
    """``rotator check`` on the text as a file: "" when it passes, else its refusal."""
    path = tmp / "rotator.yaml"
    path.write_text(text, encoding="utf-8")
    out = io.StringIO()
    try:
        code = check(load_config(str(path)), out=out)
    except ConfigError as exc:
        return f"rotator check: config: {exc}"
    return "" if code == 0 else f"rotator check exited {code}: {out.getvalue()}"


@pytest.fixture(autouse=True)
def _placeholder_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for block in yaml_blocks():
        for name in re.findall(r"\benv:([A-Za-z_][A-Za-z0-9_]*)", block.text):
            monkeypatch.setenv(name, f"placeholder-{name.lower()}")


def _ids(blocks: list[docs.Block]) -> list[str]:
    return [block.where for block in blocks]


CONFIGS = [b for b in yaml_blocks() if "config" not in b.markers]
FRAGMENTS = [b for b in yaml_blocks() if b.markers.get("config") == "fragment"]
NOT_CONFIGS = [b for b in yaml_blocks() if b.markers.get("config") == "none"]


@pytest.mark.parametrize("block", CONFIGS, ids=_ids(CONFIGS))
def test_a_configuration_passes_check_as_printed(block: docs.Block, tmp_path: Path) -> None:
    if not looks_like_config(block.text):
        pytest.fail(
            f"{block.where}: this YAML block has none of rotator's top-level keys "
            f"({', '.join(sorted(TOP_KEYS))}); if it is not a rotator configuration, mark it "
            "'<!-- config: none -->' on the line before its fence (a partial one: "
            "'<!-- config: fragment -->')",
            pytrace=False,
        )
    refusal = refused(block.text, tmp_path)
    if refusal:
        pytest.fail(
            f"{block.where}: {refusal}\n(a configuration in the docs passes `rotator check` as "
            "printed; a partial one is marked '<!-- config: fragment -->')",
            pytrace=False,
        )


@pytest.mark.parametrize("block", FRAGMENTS, ids=_ids(FRAGMENTS))
def test_a_fragment_passes_check_merged_into_a_minimal_configuration(
    block: docs.Block, tmp_path: Path
) -> None:
    documents = load_all(block.text)
    assert len(documents) == 1, f"{block.where}: a fragment is one YAML document"
    config = merged_fragment(documents[0], tmp_path)
    refusal = refused(yaml.safe_dump(config, sort_keys=False), tmp_path)
    if refusal:
        pytest.fail(f"{block.where} (a fragment, merged): {refusal}", pytrace=False)


@pytest.mark.parametrize("block", NOT_CONFIGS, ids=_ids(NOT_CONFIGS))
def test_a_block_marked_none_is_not_a_configuration(block: docs.Block) -> None:
    assert not looks_like_config(block.text), (
        f"{block.where} is marked '<!-- config: none -->' but has rotator's top-level keys: "
        "it is a configuration (drop the marker) or a fragment ('<!-- config: fragment -->')"
    )


def test_every_config_marker_says_fragment_or_none() -> None:
    wrong = [
        f"{b.where}: 'config: {b.markers['config']}'"
        for b in docs.fences()
        if "config" in b.markers and b.markers["config"] not in CONFIG_MARKS
    ]
    assert wrong == [], "a config: marker is 'fragment' or 'none'"
    on_other = [
        f"{b.where} ({b.lang or 'no language'})"
        for b in docs.fences()
        if "config" in b.markers and b.lang not in ("yaml", "yml")
    ]
    assert on_other == [], "config: markers belong on ```yaml blocks"


def test_the_docs_hold_configurations_of_each_kind() -> None:
    # the machinery above found what it is for (a parser that saw nothing would pass)
    assert len(CONFIGS) >= 3
    assert FRAGMENTS
    assert NOT_CONFIGS


@pytest.mark.parametrize(
    ("fragment", "refusal"),
    [
        ({"accounts": {"a": {"provider": "faxplus", "rate_limt": {"burst": 1}}}}, "rate_limt"),
        ({"accounts": {"a": {"sinks": [{"store": "vaul", "path": "x"}]}}}, "'vaul'"),
        ({"provider": "bifit", "username": 79991234567}, "username"),
        ({"server": {"console": {"public_url": "ftp://x"}}}, "public_url"),
        ({"alerts": {"repeat": "soon"}}, "repeat"),
    ],
)
def test_a_fragment_is_still_held_to_what_it_writes(
    fragment: dict[str, Any], refusal: str, tmp_path: Path
) -> None:
    # the merge fills in what a fragment leaves out; it never excuses what it says
    assert refusal in refused(yaml.safe_dump(merged_fragment(fragment, tmp_path)), tmp_path)


@pytest.mark.parametrize(
    "fragment",
    [
        {"accounts": {"a": {"provider": "faxmax", "session_ttl": "30m"}}},
        {"provider": "faxplus-pat", "scopes": ["fax:fax:read"]},
        {"accounts": {"a": {"notify": [{"type": "exec", "argv": ["true"]}]}}},
        {"defaults": {"rate_limit": {"per_second": 1}}, "accounts": {"b": {"provider": "bifit"}}},
    ],
)
def test_a_fragment_is_completed_by_its_providers_base_account(
    fragment: dict[str, Any], tmp_path: Path
) -> None:
    assert refused(yaml.safe_dump(merged_fragment(fragment, tmp_path)), tmp_path) == ""


def test_a_fragment_that_mixes_sections_and_account_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="mixes top-level keys"):
        merged_fragment({"stores": {}, "provider": "oauth2"}, tmp_path)


def test_what_looks_like_a_configuration() -> None:
    assert looks_like_config("accounts: {}\n")
    assert looks_like_config("kind: X\n---\nstores: {}\n")  # any document of the block
    assert not looks_like_config("groups: [{name: x}]\n")
    assert not looks_like_config("config: {stores: {}}\n")  # Helm values hold one, are none
    assert not looks_like_config("{{ template }}: [\n")  # not YAML at all
