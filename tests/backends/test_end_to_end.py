"""End to end: a `rotator run` daemon whose state lives in OpenBao and whose sinks
are OpenBao, Secrets Manager (moto) and a file. Consumers read with plain hvac
(a read-only token under README's consumer policy) and boto3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.backends.conftest import REGION, unique
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.proc import DaemonProcess, run_rotator, wait_for
from tests.support.servers import MotoServer, OpenBao

SECRET = leakcheck.register("e2e-cl!ent-secret-" + unique(), "client secret")
ROTATIONS = 3


def write_config(tmp: Path, bao_url: str, moto_url: str, token_url: str, account: str) -> Path:
    secret_file = tmp / "client-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    config = tmp / "rotator.yaml"
    config.write_text(
        f"""\
server: {{workers: 4, shutdown_grace: 5s}}
stores:
  vault:
    type: vault
    url: {bao_url}
    prefix: rotator
    auth: {{method: token, token: env:ROTATOR_E2E_VAULT_TOKEN}}
  aws: {{type: aws, region: {REGION}, endpoint_url: {moto_url}, prefix: rotator/}}
  files: {{type: file, directory: {tmp / "out"}}}
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
    client_id: app
    client_secret: file:{secret_file}
    sinks:
      - {{store: vault, path: apps/{account}}}
      - {{store: aws, path: apps/{account}}}
      - {{store: files, path: {account}.json}}
"""
    )
    return config


def daemon_env(tmp: Path, vault_token: str) -> dict[str, str]:
    return {
        "ROTATOR_E2E_VAULT_TOKEN": vault_token,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def oauth() -> Any:
    with emulator(clients={"app": SECRET}, access_ttl=3.0) as server:
        yield server


def test_consumers_read_fresh_tokens_from_every_store(
    tmp_path: Path, bao: OpenBao, moto: MotoServer, oauth: OAuth2Emulator
) -> None:
    account = unique("e2e")
    config = write_config(tmp_path, bao.url, moto.endpoint_url, oauth.url, account)
    env = daemon_env(tmp_path, bao.create_token(["rotator"]))

    checked = run_rotator(["check", "-c", str(config), "--online"], env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        "store vault: READY logged in (token); may read and write "
        f"secret/data/rotator/state/{account}" in checked.stdout
    )
    assert "store aws: UNKNOWN" in checked.stdout  # the sink does not exist yet
    assert "store files: READY" in checked.stdout

    seeded = run_rotator(
        ["import", "-c", str(config), account], env=env, stdin=oauth.issue_grant("app")
    )
    assert seeded.returncode == 0, seeded.stderr

    vault_reader = hvac.Client(url=bao.url, token=bao.create_token(["consumer"]))
    aws_reader = moto.client()
    kv_path, secret_id = f"rotator/apps/{account}", f"rotator/apps/{account}"
    file_path = tmp_path / "out" / f"{account}.json"

    def from_vault() -> str | None:
        try:
            answer = vault_reader.secrets.kv.v2.read_secret_version(
                path=kv_path, mount_point="secret", raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        return str(answer["data"]["data"]["access_token"])

    def from_aws() -> str | None:
        try:
            answer = aws_reader.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        except aws_reader.exceptions.ResourceNotFoundException:
            return None
        return str(json.loads(answer["SecretString"])["access_token"])

    def from_file() -> str | None:
        try:
            return str(json.loads(file_path.read_text())["access_token"])
        except (FileNotFoundError, ValueError):
            return None

    seen: list[str] = []
    with DaemonProcess(config, env=env) as daemon:
        for rotation in range(1, ROTATIONS + 1):
            daemon.wait_log('"event": "rotated"', count=rotation, timeout=30)

            def published() -> str | None:
                tokens = {from_vault(), from_aws(), from_file()}
                if len(tokens) == 1 and None not in tokens and not tokens & set(seen):
                    return tokens.pop()
                return None

            token = wait_for(published, timeout=10, interval=0.02, what=f"rotation {rotation}")
            assert oauth.access_valid(token), "consumers must see a live token"
            seen.append(token)
        assert daemon.stop() == 0
        rotations = daemon.output().count('"event": "rotated"')

    assert rotations >= ROTATIONS and len(set(seen)) == ROTATIONS
    # exactly one new version per rotation, in both versioned stores
    assert bao.kv_versions(kv_path) == rotations
    assert len(aws_reader.list_secret_version_ids(SecretId=secret_id)["Versions"]) >= 1
    versions = aws_reader.list_secret_version_ids(SecretId=secret_id, IncludeDeprecated=True)
    assert len(versions["Versions"]) == rotations
    # the last token published everywhere is the last one the vendor issued
    assert from_vault() == from_aws() == from_file()
    state = bao.call("GET", f"secret/data/rotator/state/{account}")["data"]
    grant = oauth.grant_for(state["data"]["refresh_token"])
    assert grant is not None and grant.current_refresh == state["data"]["refresh_token"]
    # rotator's by its record: no marker call, no metadata written
    assert not state["metadata"]["custom_metadata"]
    assert oauth.reuse_detected == 0


def test_check_online_names_what_the_vault_policy_lacks(
    tmp_path: Path, bao: OpenBao, moto: MotoServer, oauth: OAuth2Emulator
) -> None:
    account = unique("e2e")
    config = write_config(tmp_path, bao.url, moto.endpoint_url, oauth.url, account)
    env = daemon_env(tmp_path, bao.create_token(["consumer"]))
    checked = run_rotator(["check", "-c", str(config), "--online"], env=env)
    assert checked.returncode == 1
    assert (
        f"store vault: ERROR permission denied writing secret/data/rotator/state/{account} "
        "(the policy lacks create/update)"
    ) in checked.stdout
