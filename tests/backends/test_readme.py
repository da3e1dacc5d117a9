"""docs/stores.md tells the truth: the policies it shows are the ones
the tests run the stores under, and every store key is documented."""

from __future__ import annotations

import json
import re

from rotator.config.models import AwsStoreSettings, VaultStoreSettings
from tests.backends.conftest import AWS_DAEMON_ACTIONS, CONSUMER_POLICY, DAEMON_POLICY
from tests.support.proc import ROOT


def stores_section() -> str:
    return (ROOT / "docs" / "stores.md").read_text(encoding="utf-8")


def test_the_vault_policies_are_the_tested_ones() -> None:
    blocks = re.findall(r"```hcl\n(.*?)```", stores_section(), re.S)
    assert DAEMON_POLICY in blocks
    assert CONSUMER_POLICY in blocks


def test_the_iam_policy_is_the_tested_one() -> None:
    (block,) = re.findall(r"```json\n(.*?)```", stores_section(), re.S)
    policy = json.loads(block)
    assert policy["Statement"][0]["Action"] == AWS_DAEMON_ACTIONS


def test_every_store_key_is_documented() -> None:
    section = stores_section()
    for model in (VaultStoreSettings, AwsStoreSettings):
        for key in model.model_fields:
            if key not in ("type", "auth"):
                assert f"`{key}`" in section, key
    for key in ("role_id", "secret_id", "role", "jwt_path", "token"):
        assert f"`{key}`" in section, key
