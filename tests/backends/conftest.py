"""Real store servers for the backend tests, shared per session.

One OpenBao dev server and one in-process moto server serve every test (each
test uses its own paths / secret names). A second moto server, in its own
process, enforces IAM authentication (moto's ``/moto-api/reset-auth``) for the
auth-failure and permission-denied cases; it is separate because that switch is
process-wide.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st

from rotator import waits
from rotator.config.models import AwsStoreSettings, VaultStoreSettings
from tests.support import leakcheck
from tests.support.servers import MotoServer, OpenBao

REGION = "eu-central-1"

#: the daemon's policy from docs/stores.md, for the store prefix "rotator";
#: tests/backends/test_readme.py holds README to it
DAEMON_POLICY = """\
path "secret/data/rotator/*" {
  capabilities = ["create", "read", "update"]
}
"""
#: the daemon's policy of earlier releases (a metadata grant for the managed-by marker):
#: still works
EARLIER_DAEMON_POLICY = (
    DAEMON_POLICY
    + """\
path "secret/metadata/rotator/*" {
  capabilities = ["create", "update"]
}
"""
)

#: the consumer's read-only policy from docs/stores.md
CONSUMER_POLICY = """\
path "secret/data/rotator/apps/*" {
  capabilities = ["read"]
}
"""

#: what the tests add to the daemon's policy: deleting their paths, counting versions
TEST_POLICY = """\
path "secret/metadata/rotator/*" {
  capabilities = ["read", "delete"]
}
"""

#: the IAM policies of the two users of the IAM-enforcing moto server. moto checks
#: the actions only (it authorises every request against resource "*"), so the
#: resources are "*" here; docs/stores.md's policy scopes them to the prefix.
#: docs/stores.md's IAM policy for the daemon (resources "*" for moto)
AWS_DAEMON_ACTIONS = [
    "secretsmanager:CreateSecret",
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:TagResource",
]
AWS_WRITER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": AWS_DAEMON_ACTIONS, "Resource": "*"}],
}
AWS_READER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            "Resource": "*",
        }
    ],
}


@pytest.fixture(scope="session", autouse=True)
def _instant_backoff() -> Iterator[None]:
    """Retry waits (botocore's throttling backoff goes through rotator.waits) return at once."""
    waits.set_testing(True)
    yield
    waits.set_testing(False)


@pytest.fixture(scope="session")
def bao(bao: OpenBao) -> OpenBao:
    """The session's OpenBao (tests/conftest.py) with the README policies written."""
    bao.write_policy("rotator", DAEMON_POLICY)
    bao.write_policy("consumer", CONSUMER_POLICY)
    bao.write_policy("rotator-tests", TEST_POLICY)
    return bao


@dataclass(frozen=True)
class AwsUser:
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class MotoIam:
    server: MotoServer
    writer: AwsUser
    reader: AwsUser
    nobody: AwsUser  # a valid user without any Secrets Manager permission


@pytest.fixture(scope="session")
def moto_iam() -> Iterator[MotoIam]:
    """A moto server (own process) that enforces IAM auth, with a writer and a reader."""
    import boto3

    # as the daemon does (observability.py): botocore's DEBUG lines carry bodies,
    # here the new users' secret keys
    logging.getLogger("botocore").setLevel(logging.WARNING)
    with MotoServer(separate_process=True) as server:
        iam = boto3.session.Session(
            aws_access_key_id="setup",
            aws_secret_access_key="setup-secret",
            region_name=REGION,
        ).client("iam", endpoint_url=server.endpoint_url)
        users = {}
        nothing = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}],
        }
        for name, policy in (
            ("writer", AWS_WRITER_POLICY),
            ("reader", AWS_READER_POLICY),
            ("nobody", nothing),
        ):
            import json

            iam.create_user(UserName=f"rotator-{name}")
            iam.put_user_policy(
                UserName=f"rotator-{name}",
                PolicyName="secrets",
                PolicyDocument=json.dumps(policy),
            )
            key = iam.create_access_key(UserName=f"rotator-{name}")["AccessKey"]
            users[name] = AwsUser(
                key["AccessKeyId"],
                leakcheck.register(key["SecretAccessKey"], "aws secret access key"),
            )
        # from now on every request must be signed by a known IAM user
        httpx.post(f"{server.endpoint_url}/moto-api/reset-auth", content=b"0").raise_for_status()
        yield MotoIam(server, users["writer"], users["reader"], users["nobody"])


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The default credential chain finds moto's dummy keys in the environment only."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def token_env(monkeypatch: pytest.MonkeyPatch, token: str) -> str:
    """Put ``token`` into a fresh environment variable; returns the ``env:`` reference."""
    name = f"ROTATOR_TEST_VAULT_TOKEN_{secrets.token_hex(4).upper()}"
    monkeypatch.setenv(name, token)
    return f"env:{name}"


def vault_settings(url: str, auth: dict[str, Any], **extra: Any) -> VaultStoreSettings:
    return VaultStoreSettings.model_validate(
        {"type": "vault", "url": url, "prefix": "rotator", "auth": auth, **extra}
    )


def aws_settings(endpoint_url: str, **extra: Any) -> AwsStoreSettings:
    return AwsStoreSettings.model_validate(
        {
            "type": "aws",
            "region": REGION,
            "endpoint_url": endpoint_url,
            "prefix": "rotator/",
            **extra,
        }
    )


# -- hostile paths (issue "hardening" #11) ------------------------------------------------

#: segments that climb, or climb once a server percent-decodes them (once or twice)
CLIMBING = ["..", ".", "%2e%2e", "%2E%2e", ".%2e", "%2e.", "%2e", "%252e%252e", "%25%32%65."]
#: segments every store accepts (Secrets Manager names allow no '%' or space, and
#: the AWS store refuses '..' anywhere in a name, not only as a segment)
PLAIN = ["apps", "team-b", "victim", "v1.2", "x_y"]
#: control characters, raw and percent-encoded
CONTROL = ["\n", "\t", "\x00", "\x7f", "%0a", "%00", "%250d"]


@st.composite
def hostile_paths(draw: st.DrawFn) -> str:
    """A path that breaks the path rule: a climbing segment, an absolute start or a
    control character, each possibly percent-encoded, among plain segments."""
    segments = draw(st.lists(st.sampled_from(PLAIN), min_size=1, max_size=4))
    flaw = draw(st.sampled_from(["climb", "absolute", "control"]))
    if flaw == "climb":
        segments.insert(draw(st.integers(0, len(segments))), draw(st.sampled_from(CLIMBING)))
        start = ""
    elif flaw == "absolute":
        start = draw(st.sampled_from(["/", "%2f", "%2F", "%252f"]))
    else:
        index = draw(st.integers(0, len(segments) - 1))
        segments[index] += draw(st.sampled_from(CONTROL))
        start = ""
    return start + "/".join(segments)


def plain_paths(*extra: str) -> st.SearchStrategy[str]:
    """Paths of plain segments (and ``extra`` ones) that keep to the path rule."""
    return st.lists(st.sampled_from([*PLAIN, *extra]), min_size=1, max_size=4).map("/".join)
