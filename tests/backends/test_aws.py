"""The AWS Secrets Manager store against moto's server: staging labels,
idempotent retries, throttling, tags, KMS, validation.

Known moto deviation: after UpdateSecretVersionStage, GetSecretValue without a
VersionStage may still return the old value. The store always reads with
``VersionStage=AWSCURRENT`` and so do these tests (:func:`current`); no
fixture works around it otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as examples

from rotator.backends.aws import AwsStore
from rotator.backends.aws_client import ATTEMPTS, build_client
from rotator.backends.base import PATH_RULE, ValidationStatus
from rotator.errors import (
    StoreAuthError,
    StoreConflict,
    StoreError,
    StoreNotManaged,
    StorePermissionError,
    StoreUnavailable,
)
from rotator.waits import Waiter
from tests.backends.conftest import (
    MotoIam,
    aws_settings,
    hostile_paths,
    plain_paths,
    unique,
)
from tests.support import leakcheck
from tests.support.servers import AwsFaultProxy, MotoServer
from tests.support.wrappers import Counting

VIEW = {"access_token": "tok-aws", "token_type": "Bearer", "expires_at": "2030-01-01T00:00:00Z"}
VIEW2 = {**VIEW, "access_token": "tok-aws-2"}

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[AwsFaultProxy]:
    with AwsFaultProxy(moto.endpoint_url) as fault_proxy:
        yield fault_proxy


def stages(client: Any, secret: str) -> dict[str, list[str]]:
    answer = client.list_secret_version_ids(SecretId=secret, IncludeDeprecated=True)
    return {v["VersionId"]: sorted(v.get("VersionStages") or []) for v in answer["Versions"]}


def current(client: Any, secret: str) -> tuple[dict[str, str], str]:
    answer = client.get_secret_value(SecretId=secret, VersionStage="AWSCURRENT")
    return json.loads(answer["SecretString"]), answer["VersionId"]


def test_a_write_moves_awscurrent_and_leaves_no_pending(moto: MotoServer) -> None:
    store = AwsStore("aws", aws_settings(moto.endpoint_url))
    client = moto.client()
    path = f"apps/{unique()}"
    secret = f"rotator/{path}"
    first = store.write(path, VIEW, expected_version=None)
    second = store.write(path, VIEW2, expected_version=first.version)
    labels = stages(client, secret)
    assert labels[str(second.version)] == ["AWSCURRENT"]
    assert labels[str(first.version)] == ["AWSPREVIOUS"]
    assert not any("AWSPENDING" in s for s in labels.values())
    assert current(client, secret) == (VIEW2, second.version)


def test_someone_moving_awscurrent_meanwhile_is_a_conflict(
    moto: MotoServer, proxy: AwsFaultProxy
) -> None:
    store = AwsStore("aws", aws_settings(proxy.endpoint_url))
    client = moto.client()
    path = f"apps/{unique()}"
    secret = f"rotator/{path}"
    first = store.write(path, VIEW, expected_version=None)
    theirs = {"access_token": "theirs"}

    def other_writer() -> None:  # between our PutSecretValue and our stage move
        client.put_secret_value(SecretId=secret, SecretString=json.dumps(theirs))

    proxy.before("UpdateSecretVersionStage", other_writer)
    with pytest.raises(StoreConflict, match="AWSCURRENT moved"):
        store.write(path, VIEW2, expected_version=first.version)
    data, _ = current(client, secret)
    assert data == theirs
    assert not any("AWSPENDING" in s for s in stages(client, secret).values())


def test_a_lost_response_is_retried_with_the_same_request_token(
    moto: MotoServer, proxy: AwsFaultProxy
) -> None:
    store = AwsStore("aws", aws_settings(proxy.endpoint_url))
    client = moto.client()
    path = f"apps/{unique()}"
    secret = f"rotator/{path}"
    first = store.write(path, VIEW, expected_version=None)
    proxy.lose_response("PutSecretValue")  # it lands, but we are told 500
    second = store.write(path, VIEW2, expected_version=first.version)
    assert proxy.count("PutSecretValue") == 2
    assert len(stages(client, secret)) == 2  # the retry made no third version
    assert current(client, secret) == (VIEW2, second.version)


def test_a_lost_stage_move_response_is_recognised_as_our_own(
    moto: MotoServer, proxy: AwsFaultProxy
) -> None:
    store = AwsStore("aws", aws_settings(proxy.endpoint_url))
    client = moto.client()
    path = f"apps/{unique()}"
    secret = f"rotator/{path}"
    first = store.write(path, VIEW, expected_version=None)
    proxy.lose_response("UpdateSecretVersionStage")  # AWSCURRENT moves; we are told 500
    second = store.write(path, VIEW2, expected_version=first.version)
    # the retried move fails (AWSCURRENT left the old version): that was us, not a race
    assert proxy.count("UpdateSecretVersionStage") >= 2
    assert current(client, secret) == (VIEW2, second.version)
    assert not any("AWSPENDING" in s for s in stages(client, secret).values())


def test_a_write_retried_after_a_failure_midway_is_idempotent(
    moto: MotoServer, proxy: AwsFaultProxy
) -> None:
    store = AwsStore("aws", aws_settings(proxy.endpoint_url))
    client = moto.client()
    path = f"apps/{unique()}"
    secret = f"rotator/{path}"
    first = store.write(path, VIEW, expected_version=None)
    proxy.refuse("UpdateSecretVersionStage")  # the pending version exists, not current
    with pytest.raises(StorePermissionError):
        store.write(path, VIEW2, expected_version=first.version)
    assert current(client, secret)[0] == VIEW
    # a fresh store (a restarted daemon) repeats the same logical write
    again = AwsStore("aws", aws_settings(proxy.endpoint_url))
    result = again.write(path, VIEW2, expected_version=first.version)
    assert result.changed
    assert len(stages(client, secret)) == 2
    assert current(client, secret) == (VIEW2, result.version)


class RecordingWaiter(Waiter):
    """A Waiter that notes each wait it is asked for (and, like set_testing, waits none)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return super().sleep(seconds)


def test_throttling_is_retried_with_backoff_on_the_stores_waiter(
    moto: MotoServer, proxy: AwsFaultProxy
) -> None:
    waiter = RecordingWaiter()
    store = AwsStore("aws", aws_settings(proxy.endpoint_url), waiter=waiter)
    path = f"apps/{unique()}"
    proxy.throttle = 3
    result = store.write(path, VIEW, expected_version=None)
    assert result.changed and proxy.throttled == 3
    # botocore's standard mode: jittered, doubling from 1s for throttling
    assert len(waiter.waits) == 3
    for attempt, delay in enumerate(waiter.waits):
        assert 0 <= delay <= 2**attempt
    assert current(moto.client(), f"rotator/{path}")[0] == VIEW


def test_throttling_that_does_not_stop_is_unavailable(proxy: AwsFaultProxy) -> None:
    store = AwsStore("aws", aws_settings(proxy.endpoint_url))
    proxy.throttle = ATTEMPTS
    with pytest.raises(StoreUnavailable, match="ThrottlingException") as caught:
        store.read(f"apps/{unique()}")
    assert caught.value.transient
    assert proxy.throttled == ATTEMPTS


def test_a_closed_store_stops_retrying_at_once(proxy: AwsFaultProxy) -> None:
    """close() (the daemon stopping) ends a throttling backoff: no more attempts."""
    waiter = RecordingWaiter()
    store = AwsStore("aws", aws_settings(proxy.endpoint_url), waiter=waiter)
    waiter.stop()
    proxy.throttle = ATTEMPTS
    with pytest.raises(StoreUnavailable, match="ThrottlingException"):
        store.read(f"apps/{unique()}")
    assert proxy.throttled == 1 and len(waiter.waits) == 1


def test_a_server_that_does_not_answer_in_time_is_reported_at_once() -> None:
    """A read timeout is not retried six times: the account's lease would be held
    for six timeouts; rotation retries on its own schedule."""
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        waiter = RecordingWaiter()
        store = AwsStore("aws", aws_settings(url, timeout="1s"), waiter=waiter)
        with pytest.raises(StoreUnavailable, match="ReadTimeoutError"):
            store.read(f"apps/{unique()}")
        assert waiter.waits == []


def test_created_secrets_are_tagged_and_foreign_ones_refused(moto: MotoServer) -> None:
    store = AwsStore("aws", aws_settings(moto.endpoint_url))
    client = moto.client()
    ours = f"apps/{unique()}"
    store.write(ours, VIEW, expected_version=None)
    tags = client.describe_secret(SecretId=f"rotator/{ours}")["Tags"]
    assert {"Key": "managed-by", "Value": "rotator"} in tags

    foreign = f"apps/{unique()}"
    client.create_secret(Name=f"rotator/{foreign}", SecretString=json.dumps({"a": "b"}))
    record = store.read(foreign)
    assert record is not None
    with pytest.raises(StoreNotManaged, match="adopt: true"):
        store.write(foreign, VIEW, expected_version=record.version)
    assert len(stages(client, f"rotator/{foreign}")) == 1
    adopted = store.write(foreign, VIEW, expected_version=record.version, adopt=True)
    assert adopted.changed
    tags = client.describe_secret(SecretId=f"rotator/{foreign}")["Tags"]
    assert {"Key": "managed-by", "Value": "rotator"} in tags


def test_kms_key_id_is_used_for_new_secrets(moto: MotoServer) -> None:
    import boto3

    kms = boto3.session.Session(region_name="eu-central-1").client(
        "kms", endpoint_url=moto.endpoint_url
    )
    key_id = kms.create_key(Description="rotator test")["KeyMetadata"]["KeyId"]
    store = AwsStore("aws", aws_settings(moto.endpoint_url, kms_key_id=key_id))
    path = f"apps/{unique()}"
    store.write(path, VIEW, expected_version=None)
    assert moto.client().describe_secret(SecretId=f"rotator/{path}")["KmsKeyId"] == key_id
    record = store.read(path)
    assert record is not None and dict(record.data) == VIEW


def test_a_secret_that_is_not_a_json_object_is_an_error(moto: MotoServer) -> None:
    store = AwsStore("aws", aws_settings(moto.endpoint_url))
    path = f"apps/{unique()}"
    moto.client().create_secret(Name=f"rotator/{path}", SecretString="plain text")
    with pytest.raises(StoreError, match="does not hold a JSON object"):
        store.read(path)


def test_a_secret_scheduled_for_deletion_says_how_to_restore_it(moto: MotoServer) -> None:
    store = AwsStore("aws", aws_settings(moto.endpoint_url))
    client = moto.client()
    path = f"apps/{unique()}"
    first = store.write(path, VIEW, expected_version=None)
    client.delete_secret(SecretId=f"rotator/{path}", RecoveryWindowInDays=7)
    with pytest.raises(StoreError) as caught:
        store.write(path, VIEW2, expected_version=first.version)
    assert "restore" in str(caught.value)


def test_invalid_names_are_refused_before_any_call(moto: MotoServer) -> None:
    store = AwsStore("aws", aws_settings(moto.endpoint_url))
    with pytest.raises(StoreError, match="not valid for Secrets Manager"):
        store.read("apps/with space")


@pytest.fixture(scope="module")
def counted(moto: MotoServer) -> Iterator[tuple[AwsStore, Counting]]:
    with pytest.MonkeyPatch.context() as patch:  # aws_env is function-scoped
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        settings = aws_settings(moto.endpoint_url)
        client = Counting(build_client(settings, "aws", Waiter()))
        store = AwsStore("aws", settings, client=client)
        yield store, client
        store.close()


def test_the_percent_encoded_escape_of_issue_11_is_refused(
    moto: MotoServer, counted: tuple[AwsStore, Counting]
) -> None:
    store, client = counted
    client.calls.clear()
    victim = f"team-b/{unique('victim')}"
    hostile = f"apps/%2e%2e/%2e%2e/{victim}"
    with pytest.raises(StoreError, match=re.escape(PATH_RULE)):
        store.write(hostile, VIEW, expected_version=None, adopt=True)
    with pytest.raises(StoreError, match=re.escape(PATH_RULE)):
        store.read(hostile)
    with pytest.raises(StoreError, match=re.escape(PATH_RULE)):
        store.delete(hostile)
    refused = store.validate(hostile)
    assert refused.status is ValidationStatus.ERROR and PATH_RULE in refused.reason
    assert client.calls == []
    names = [s["Name"] for s in moto.client().list_secrets()["SecretList"]]
    assert not any(victim in name for name in names)


@examples(max_examples=40, deadline=None)
@given(path=hostile_paths())
def test_every_hostile_path_is_refused_before_any_request(
    counted: tuple[AwsStore, Counting], path: str
) -> None:
    store, client = counted
    client.calls.clear()
    with pytest.raises(StoreError, match=re.escape(PATH_RULE)):
        store.write(path, VIEW, expected_version=None, adopt=True)
    with pytest.raises(StoreError, match=re.escape(PATH_RULE)):
        store.read(path)
    assert client.calls == []


@examples(max_examples=15, deadline=None)
@given(path=plain_paths())
def test_plain_paths_land_under_the_prefix(
    moto: MotoServer, counted: tuple[AwsStore, Counting], path: str
) -> None:
    store, _ = counted
    full = f"{unique()}/{path}"
    written = store.write(full, VIEW, expected_version=None)
    assert current(moto.client(), f"rotator/{full}") == (VIEW, written.version)


def test_validate(moto: MotoServer, moto_iam: MotoIam, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AwsStore("aws", aws_settings(moto.endpoint_url))
    path = f"apps/{unique()}"
    assert store.validate().status is ValidationStatus.READY
    missing = store.validate(path)
    assert missing.status is ValidationStatus.UNKNOWN and "will be created" in missing.reason
    store.write(path, VIEW, expected_version=None)
    ready = store.validate(path)
    assert ready.status is ValidationStatus.READY, ready.reason

    bogus = leakcheck.register("bogus-" + unique() + unique(), "bogus aws secret key")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bogus)
    refused = AwsStore("aws", aws_settings(moto_iam.server.endpoint_url)).validate(path)
    assert refused.status is ValidationStatus.ERROR
    assert "refused the credentials" in refused.reason and bogus not in refused.reason

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_iam.nobody.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_iam.nobody.secret_access_key)
    denied = AwsStore("aws", aws_settings(moto_iam.server.endpoint_url)).validate()
    assert denied.status is ValidationStatus.ERROR
    assert denied.reason.startswith("permission denied: secretsmanager:DescribeSecret")


def test_no_credentials_at_all_is_an_auth_error(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = AwsStore("aws", aws_settings(moto.endpoint_url))
    with pytest.raises(StoreAuthError, match="no AWS credentials"):
        store.read(f"apps/{unique()}")


def test_an_unknown_profile_is_an_auth_error(moto: MotoServer) -> None:
    with pytest.raises(StoreAuthError, match="profile 'nobody'"):
        AwsStore("aws", aws_settings(moto.endpoint_url, profile="nobody"))
