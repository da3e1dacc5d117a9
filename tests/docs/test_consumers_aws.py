"""README "Consuming tokens": the boto3 recipe, run as printed against a Secrets Manager sink.

moto's server stands in for Secrets Manager; the recipe takes its endpoint, region
and credentials from the environment as it would on AWS (``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.docs.conftest import README_SINK, REGION, Published, aws_env
from tests.support import docs


def test_boto3_recipe_reads_the_current_version(
    pub: Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**aws_env(pub.tmp), "AWS_ENDPOINT_URL": pub.moto.endpoint_url}.items():
        monkeypatch.setenv(name, value)
    source = docs.substitute(docs.block("consumer/boto3").text, {README_SINK: pub.sink})
    namespace: dict[str, object] = {"__name__": "readme_boto3"}
    exec(compile(source, "docs/consuming.md:consumer/boto3", "exec"), namespace)  # noqa: S102
    access_token: Callable[[], str] = namespace["access_token"]  # type: ignore[assignment]

    pub.rotate()
    assert pub.label(access_token()) == "T1"
    pub.rotate()
    assert pub.label(access_token()) == "T2"

    # Mid-write, the next value stands as AWSPENDING before AWSCURRENT moves to it:
    # the recipe keeps reading the current one.
    client = pub.moto.client(REGION)
    client.put_secret_value(
        SecretId=f"rotator/{pub.sink}",
        SecretString=json.dumps({"access_token": "pending-not-yet-current"}),
        VersionStages=["AWSPENDING"],
    )
    assert pub.label(access_token()) == "T2"
