"""A real rotator publishing one account to OpenBao, Secrets Manager (moto) and files.

The README's consumer recipes (tests/docs/test_consumers_*.py) read what this
rotator writes. Each test gets its own account and its own sink paths: the
README's ``apps/idp/api`` becomes ``apps/<unique>/api`` (a path placeholder, see
tests/support/docs.py), so tests share the session's OpenBao and moto.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.proc import run_rotator
from tests.support.servers import MotoServer, OpenBao

REGION = "eu-central-1"
CLIENT_ID = "app"
CLIENT_SECRET = leakcheck.register("docs-cl!ent-s3cret-" + secrets.token_hex(6), "client secret")
VAULT_TOKEN_ENV = "ROTATOR_DOCS_VAULT_TOKEN"
#: the sink path the README's recipes name (under the stores' prefix `rotator`)
README_SINK = "apps/idp/api"


def aws_env(tmp: Path) -> dict[str, str]:
    """Credentials for moto, and nothing from this machine's own AWS configuration."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass
class Published:
    """One account of a real rotator, its sinks, and the tokens it published, by label."""

    tmp: Path
    bao: OpenBao
    moto: MotoServer
    server: OAuth2Emulator
    account: str
    sink: str  # the Vault and Secrets Manager sink path (the README's apps/idp/api)
    config: Path
    #: access tokens in the order the vendor issued them
    issued: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {VAULT_TOKEN_ENV: self.bao.root_token, **aws_env(self.tmp)}

    @property
    def tokens_dir(self) -> Path:
        return self.tmp / "tokens"

    def rotate(self) -> str:
        """`rotator refresh ACCOUNT`; returns the access token now in the Vault sink."""
        result = run_rotator(["refresh", "-c", str(self.config), self.account], env=self.env)
        assert result.returncode == 0, result.stderr[-2000:]
        return self.vault_token()

    def vault_token(self, *, missing: str | None = None) -> str:
        """The access token in the Vault sink; ``missing`` (e.g. "") when the sink is not
        written yet, else a 404 raises (the vendor issues a token before it is published)."""
        with self.bao.api() as client:
            answer = client.get(f"secret/data/rotator/{self.sink}")
        if answer.status_code == 404 and missing is not None:
            return missing
        answer.raise_for_status()
        token: str = answer.json()["data"]["data"]["access_token"]
        return token

    def label(self, token: str) -> str:
        """``T1``, ``T2``, ... by the order the vendor issued them: what a test may print."""
        return f"T{self.issued.index(token) + 1}" if token in self.issued else "unknown"


def write_config(tmp: Path, bao: OpenBao, moto: MotoServer, token_url: str, account: str) -> Path:
    secret_file = tmp / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    secret_file.chmod(0o600)
    sink = f"apps/{account}/api"
    config = tmp / "rotator.yaml"
    config.write_text(
        f"""\
server: {{workers: 2, shutdown_grace: 5s, spool_dir: {tmp / "spool"}}}
stores:
  vault:
    type: vault
    url: {bao.url}
    prefix: rotator
    auth: {{method: token, token: "env:{VAULT_TOKEN_ENV}"}}
  aws: {{type: aws, region: {REGION}, endpoint_url: {moto.endpoint_url}, prefix: rotator/}}
  files: {{type: file, directory: {tmp / "tokens"}}}
defaults:
  state: {{store: vault}}
  min_lifetime: 1s
  refresh_share: 0.5
  jitter: 0.1
  retry_initial: 1s
  retry_max: 2s
accounts:
  {account}:
    provider: oauth2
    token_url: {token_url}
    client_id: {CLIENT_ID}
    client_secret: file:{secret_file}
    sinks:
      - {{store: vault, path: {sink}}}
      - {{store: aws, path: {sink}}}
      - {{store: files, path: idp-api.token, format: token}}
      - {{store: files, path: myapp/idp-api.env, format: env}}
"""
    )
    return config


@contextmanager
def published(
    tmp: Path, bao: OpenBao, moto: MotoServer, **emulator_args: Any
) -> Iterator[Published]:
    account = "idp-" + secrets.token_hex(4)
    with emulator(clients={CLIENT_ID: CLIENT_SECRET}, **emulator_args) as server:
        issued: list[str] = []

        def on_issue(value: str, kind: str) -> None:
            leakcheck.register(value, kind)
            if kind == "access":
                issued.append(value)

        server.on_issue = on_issue
        config = write_config(tmp, bao, moto, server.url, account)
        pub = Published(
            tmp, bao, moto, server, account, f"apps/{account}/api", config, issued=issued
        )
        seeded = run_rotator(
            ["import", "-c", str(config), account],
            env=pub.env,
            stdin=server.issue_grant(CLIENT_ID) + "\n",
        )
        assert seeded.returncode == 0, seeded.stderr[-2000:]
        yield pub


@pytest.fixture
def pub(tmp_path: Path, bao: OpenBao, moto: MotoServer) -> Iterator[Published]:
    """An account whose tokens live 5 minutes: it rotates only when a test says so."""
    with published(tmp_path, bao, moto) as account:
        yield account


def consumer_policy(bao: OpenBao, readme_policy: str) -> str:
    """The README's read-only consumer policy, installed under a fresh name."""
    name = "consumer-" + secrets.token_hex(4)
    bao.write_policy(name, readme_policy)
    return name
