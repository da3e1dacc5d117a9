"""Every Vault policy in the docs works, with exactly that policy, for what it is said to be for.

A policy is a ```hcl block (or the heredoc of a ``vault policy write NAME - <<'HCL'``
in a shell block) marked with what it is for and the configuration it goes with::

    <!-- policy: daemon configuration/example -->
    ```hcl
    path "secret/data/rotator/*" { ... }
    ```

``daemon`` or ``consumer``, and the ``test:`` name of a YAML configuration block
of the docs that has a ``type: vault`` store. The policy is written into the
session's OpenBao (tests/conftest.py) as printed, a token is made with it (and
OpenBao's ``default`` policy, which the docs say to keep attached), and:

- **daemon**: the paired configuration, run with that token, answers
  ``rotator check --online`` with every store ``READY``, and ``rotator refresh``
  lands a rotation: the access token the vendor issued is in every Vault sink.
  The docs say the daemon's policy covers the state as well as the sinks, so the
  same configuration with its state moved into each Vault store rotates with
  it too (a configuration that keeps its state in files would not show a policy
  that forgot ``state/``);
- **consumer**: after a rotation of the paired configuration (its state moved
  into Vault, so there is a state to refuse), a token with the policy reads
  every Vault sink and is refused reading the account's ``state/`` path
  (refresh tokens live there).

The configuration runs as printed except what a reader replaces (the scheme of
tests/support/docs.py): the Vault address and auth (a token from ``env:``), file
store directories and the spool (under the test's tmp), the vendor's token URL
(the OAuth2 emulator, tests/fakes/oauth2.py), the client secret, listeners
(none), and the account and sink names get a unique suffix, so tests share
OpenBao. The Vault ``mount``, ``prefix`` and the paths' shape, which is what a
policy is about, stay as printed.

The sample of ``rotator check --online``'s store lines (``stores/check-online``)
is what rotator prints, for the three kinds of store in the states it shows
(a Vault token that may not write the state, a secret not yet in Secrets
Manager, a writable directory): only ``(...)`` stands for text left out.

An ```hcl block without a ``policy:`` or ``test:`` marker fails the meta-test, as
does a shell block that writes a policy from a heredoc without one (a ``policy
write NAME FILE`` writes a policy that is a block of its own).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.conftest import REGION, aws_env
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import docs, leakcheck
from tests.support.proc import run_rotator
from tests.support.servers import MotoServer, OpenBao

ROLES = ("daemon", "consumer")
TOKEN_ENV = "ROTATOR_DOCS_POLICY_TOKEN"
_HEREDOC = re.compile(
    r"policy write \S+ - <<-?'?(?P<tag>\w+)'?\n(?P<body>.*?)\n\s*(?P=tag)\s*$", re.S | re.M
)


@dataclass(frozen=True)
class Policy:
    role: str
    config: str  # the test: name of the configuration block it goes with
    hcl: str
    where: str


def policies() -> list[Policy]:
    """Every block marked ``policy:``; a shell block's heredoc is its policy."""
    found = []
    for block in docs.fences():
        mark = block.markers.get("policy")
        if mark is None:
            continue
        role, _, config = mark.partition(" ")
        hcl = block.text
        if block.lang != "hcl":
            heredocs = _HEREDOC.findall(block.text)
            assert len(heredocs) == 1, (
                f"{block.where}: a 'policy:' marker on a ```{block.lang} block needs exactly one "
                f"`vault policy write NAME - <<'HCL'` heredoc (found {len(heredocs)})"
            )
            hcl = heredocs[0][1] + "\n"
        found.append(Policy(role, config.strip(), hcl, block.where))
    return found


POLICIES = policies()


def test_every_policy_is_marked_with_its_use() -> None:
    unmarked = [
        block.where
        for block in docs.fences()
        if (block.lang == "hcl" and not block.markers.keys() & {"policy", "test"})
        or (
            block.lang != "hcl"
            and _HEREDOC.search(block.text)
            and not block.markers.keys() & {"policy", "test"}
        )
    ]
    assert unmarked == [], (
        "mark each Vault policy '<!-- policy: daemon|consumer CONFIG -->' (CONFIG: the test: "
        "name of the configuration it goes with), or an hcl block that is no policy "
        "'<!-- test: NAME -->' with a test that runs it"
    )
    configs = docs.blocks()
    for policy in POLICIES:
        assert policy.role in ROLES, (
            f"{policy.where}: 'policy: {policy.role}' is not one of {ROLES}"
        )
        assert policy.config in configs, (
            f"{policy.where}: the policy names the configuration '{policy.config}', and no "
            "block of the docs is marked '<!-- test: " + policy.config + " -->'"
        )
        paired = configs[policy.config]
        assert paired.lang in ("yaml", "yml") and "config" not in paired.markers, (
            f"{policy.where}: '{policy.config}' ({paired.where}) is not a complete configuration"
        )
        assert vault_stores(yaml.safe_load(paired.text)), (
            f"{policy.where}: '{policy.config}' ({paired.where}) has no type: vault store"
        )
    assert {p.role for p in POLICIES} == set(ROLES), "the docs show a daemon and a consumer policy"


def vault_stores(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: store
        for name, store in (config.get("stores") or {}).items()
        if store.get("type") == "vault"
    }


@dataclass
class Run:
    """The paired configuration, adapted to this machine, and what its rotation published."""

    config: Path
    accounts: list[str]
    #: (mount, KV path) of each Vault sink
    sinks: list[tuple[str, str]]
    #: access tokens in the order the vendor issued them
    issued: list[str] = field(default_factory=list)

    def env(self, token: str) -> dict[str, str]:
        # the configuration's other env: references (an alert webhook) resolve to stand-ins
        return {TOKEN_ENV: token, "ROTATOR_WEBHOOK": "http://127.0.0.1:9/hook"}


def adapt(
    text: str, tmp: Path, bao: OpenBao, token_url: str, client: tuple[str, Path]
) -> tuple[dict[str, Any], list[str]]:
    """The configuration with a reader's replacements (module docstring), and its accounts."""
    config: dict[str, Any] = yaml.safe_load(text)
    suffix = secrets.token_hex(3)
    server_settings = config.get("server") or {}
    for key in ("listen", "console", "coordination"):
        server_settings.pop(key, None)
    server_settings["spool_dir"] = str(tmp / "spool")
    config["server"] = server_settings
    for name, store in (config.get("stores") or {}).items():
        if store["type"] == "vault":
            store["url"] = bao.url
            store["auth"] = {"method": "token", "token": f"env:{TOKEN_ENV}"}
        elif store["type"] == "file":
            store["directory"] = str(tmp / "stores" / name)
    accounts = {}
    for name, account in (config.get("accounts") or {}).items():
        assert account.get("provider") == "oauth2", "a policy is paired with oauth2 accounts"
        account["token_url"] = token_url
        account["client_id"] = client[0]
        account["client_secret"] = f"file:{client[1]}"
        for sink in account.get("sinks", []):
            sink["path"] = f"{sink['path']}-{suffix}"
        accounts[f"{name}-{suffix}"] = account
    config["accounts"] = accounts
    return config, list(accounts)


def kv_path(store: dict[str, Any], path: str) -> tuple[str, str]:
    prefix = str(store.get("prefix", "")).strip("/")
    return str(store.get("mount", "secret")), f"{prefix}/{path}" if prefix else path


@pytest.fixture
def vendor() -> Iterator[tuple[OAuth2Emulator, str, str]]:
    """The OAuth2 emulator and its one client (id, secret)."""
    client_id = "docs-" + secrets.token_hex(3)
    client_secret = leakcheck.register("docs-policy-s3cret-" + secrets.token_hex(6), "secret")
    with emulator(clients={client_id: client_secret}) as server:
        yield server, client_id, client_secret


def rotate(
    block: docs.Block,
    tmp: Path,
    bao: OpenBao,
    token: str,
    vendor: tuple[OAuth2Emulator, str, str],
    *,
    label: str,
    state_in: str | None = None,
) -> Run:
    """Seed (when the grant needs it) and ``rotator refresh`` every account, with ``token``.

    ``state_in`` names a store to keep the state in instead of the printed one.
    """
    server, client_id, client_secret = vendor
    tmp.mkdir(parents=True, exist_ok=True)
    secret_file = tmp / "client-secret"
    secret_file.write_text(client_secret + "\n")
    secret_file.chmod(0o600)
    config, accounts = adapt(block.text, tmp, bao, server.url, (client_id, secret_file))
    if state_in is not None:
        config["defaults"] = {**(config.get("defaults") or {}), "state": {"store": state_in}}
    stores = config["stores"]
    sinks = [
        kv_path(stores[sink["store"]], sink["path"])
        for account in config["accounts"].values()
        for sink in account.get("sinks", [])
        if stores[sink["store"]]["type"] == "vault"
    ]
    path = tmp / "rotator.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = Run(path, accounts, sinks)

    def on_issue(value: str, kind: str) -> None:
        leakcheck.register(value, kind)
        if kind == "access":
            run.issued.append(value)

    server.on_issue = on_issue
    for name in accounts:
        if config["accounts"][name].get("grant", "refresh_token") == "refresh_token":
            seeded = run_rotator(
                ["import", "-c", str(path), name],
                env=run.env(token),
                stdin=server.issue_grant(client_id) + "\n",
            )
            assert seeded.returncode == 0, f"{label}: rotator import\n{seeded.stderr[-2000:]}"
    for name in accounts:
        done = run_rotator(["refresh", "-c", str(path), name], env=run.env(token))
        assert done.returncode == 0, f"{label}: rotator refresh\n{done.stderr[-2000:]}"
    return run


def assert_ready(run: Run, token: str, label: str) -> None:
    """``rotator check --online`` exits 0 and says READY for every store."""
    checked = run_rotator(["check", "--online", "-c", str(run.config)], env=run.env(token))
    stores = [line for line in checked.stdout.splitlines() if line.startswith("store ")]
    assert checked.returncode == 0 and stores, (
        f"{label}: rotator check --online exited {checked.returncode}\n"
        f"{checked.stdout}{checked.stderr[-2000:]}"
    )
    not_ready = [line for line in stores if not line.split(": ", 1)[1].startswith("READY")]
    assert not_ready == [], label


def read(bao: OpenBao, token: str, mount: str, path: str) -> tuple[int, dict[str, Any]]:
    with bao.api(token) as client:
        answer = client.get(f"{mount}/data/{path}")
    body = answer.json() if answer.status_code == 200 else {}
    data: dict[str, Any] = (body.get("data") or {}).get("data") or {}
    return answer.status_code, data


def policy_token(bao: OpenBao, hcl: str) -> str:
    name = "docs-" + secrets.token_hex(4)
    bao.write_policy(name, hcl)
    return bao.create_token([name])


def assert_landed(run: Run, bao: OpenBao, where: str) -> None:
    """Every Vault sink holds the last access token the vendor issued (compared, never shown)."""
    assert run.sinks, f"{where}: the configuration has no Vault sink"
    for mount, path in run.sinks:
        status, data = read(bao, bao.root_token, mount, path)
        assert status == 200, f"{where}: no sink at {mount}/data/{path} (HTTP {status})"
        assert run.issued and data.get("access_token") == run.issued[-1], (
            f"{where}: {mount}/data/{path} does not hold the token the vendor issued last"
        )


DAEMON = [p for p in POLICIES if p.role == "daemon"]
CONSUMER = [p for p in POLICIES if p.role == "consumer"]


@pytest.mark.parametrize("policy", DAEMON, ids=[p.where for p in DAEMON])
def test_the_daemon_works_with_exactly_its_policy(
    policy: Policy, tmp_path: Path, bao: OpenBao, vendor: tuple[OAuth2Emulator, str, str]
) -> None:
    token = policy_token(bao, policy.hcl)
    block = docs.block(policy.config)
    label = f"{policy.where} (policy) with {block.where} ('{policy.config}')"
    run = rotate(block, tmp_path / "printed", bao, token, vendor, label=label)
    assert_landed(run, bao, label)
    assert_ready(run, token, label)
    # the daemon's policy covers the state too ("state and sinks under the prefix"): the
    # same configuration with its state in each Vault store rotates with it as well (the
    # import of a refresh token, the lease, the state written first)
    for name in vault_stores(yaml.safe_load(block.text)):
        moved = f"{label}, its state in store {name}"
        run = rotate(block, tmp_path / name, bao, token, vendor, label=moved, state_in=name)
        assert_landed(run, bao, moved)


@pytest.mark.parametrize("policy", CONSUMER, ids=[p.where for p in CONSUMER])
def test_the_consumer_reads_the_sinks_and_not_the_state(
    policy: Policy, tmp_path: Path, bao: OpenBao, vendor: tuple[OAuth2Emulator, str, str]
) -> None:
    block = docs.block(policy.config)
    label = f"{policy.where} (policy) with {block.where} ('{policy.config}')"
    # rotated by root (the daemon's policies have their test above), with the state in
    # Vault, so that refusing to read it refuses something that is there
    vault, settings = next(iter(vault_stores(yaml.safe_load(block.text)).items()))
    run = rotate(block, tmp_path, bao, bao.root_token, vendor, label=label, state_in=vault)
    assert_landed(run, bao, label)
    token = policy_token(bao, policy.hcl)
    for mount, path in run.sinks:
        status, data = read(bao, token, mount, path)
        assert status == 200, f"{label}: the consumer cannot read {mount}/data/{path}"
        assert data.get("access_token") == run.issued[-1]
    for mount, path in (kv_path(settings, f"state/{name}") for name in run.accounts):
        assert read(bao, bao.root_token, mount, path)[0] == 200, f"no state at {path}"
        status, _ = read(bao, token, mount, path)
        assert status == 403, f"{label}: the consumer read {mount}/data/{path}: HTTP {status}"


READ_ONLY_STATE = """\
path "secret/data/state/*" {
  capabilities = ["read"]
}
"""
#: the account of the sample (its state in Vault, its sinks in Secrets Manager and files)
BASE_FAXPLUS = {
    "provider": "faxplus",
    "client_id": "APIK-1a2b3c4d",
    "client_secret": "env:FAXPLUS_SECRET",
    "enhanced_security": True,
}


def test_the_check_online_sample_is_what_rotator_prints(
    tmp_path: Path, bao: OpenBao, moto: MotoServer
) -> None:
    sample = docs.block("stores/check-online")
    secret = "apps/fax/acme-" + secrets.token_hex(3)  # moto is the session's: a fresh name
    replacements = {"/var/lib/rotator": str(tmp_path / "files"), "apps/fax/acme": secret}
    expected = docs.substitute(sample.text, replacements).splitlines()
    config = {
        "server": {"spool_dir": str(tmp_path / "spool")},
        "stores": {
            "vault": {
                "type": "vault",
                "url": bao.url,
                "auth": {"method": "token", "token": f"env:{TOKEN_ENV}"},
            },
            "aws": {"type": "aws", "region": REGION, "endpoint_url": moto.endpoint_url},
            "files": {"type": "file", "directory": str(tmp_path / "files")},
        },
        "defaults": {"state": {"store": "vault"}},
        "accounts": {
            "acme-fax": {
                **BASE_FAXPLUS,
                "sinks": [
                    {"store": "aws", "path": secret},
                    {"store": "files", "path": "acme-fax.json"},
                ],
            }
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    token = policy_token(bao, READ_ONLY_STATE)
    env = {TOKEN_ENV: token, "FAXPLUS_SECRET": "unused", **aws_env(tmp_path)}
    checked = run_rotator(["check", "--online", "-c", str(path)], env=env)
    assert checked.returncode == 1, "a store with an ERROR fails check --online"
    printed = [line for line in checked.stdout.splitlines() if line.startswith("store ")]
    for line in expected:
        pattern = re.escape(line).replace(re.escape("(...)"), r"\(.*\)")
        assert any(re.fullmatch(pattern, out) for out in printed), (
            f"{sample.where}: {line!r} is not what rotator prints:\n" + "\n".join(printed)
        )
