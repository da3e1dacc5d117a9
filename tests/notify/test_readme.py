"""docs/notify.md ("Notifying consumers") tells the truth: its configuration loads, and its
receiver snippet, run as written, accepts what rotator sends and refuses a forgery."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from rotator.config import parse_config
from rotator.config.models import ExecNotify, WebhookNotify
from rotator.notify import sign, signing_key
from tests.notify.kit import HOOK_SECRET, event
from tests.notify.test_config import config_text
from tests.support.proc import ROOT


def section() -> str:
    return (ROOT / "docs" / "notify.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), flags=re.DOTALL)


def test_the_configuration_example_loads() -> None:
    [example] = blocks("yaml")
    account = yaml.safe_load(example)["accounts"]["acme-fax"]
    text = config_text(f"notify: {json.dumps(account['notify'])}")
    notify = parse_config(text).accounts["acme"].notify
    assert [type(e) for e in notify] == [ExecNotify, ExecNotify, WebhookNotify]
    assert notify[0].events == ["rotated"] and notify[1].token == "stdin"
    assert notify[2].events == ["rotated", "reauthorized", "failed", "recovered"]


def test_the_receiver_snippet_verifies_what_rotator_sends(tmp_path: Path) -> None:
    [snippet] = blocks("python")
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(HOOK_SECRET + "\n")
    reloaded: list[Any] = []
    scope: dict[str, Any] = {"reload_token": reloaded.append}
    exec(snippet.replace("/etc/faxapp/hook.secret", str(secret_file)), scope)  # noqa: S102
    on_post = scope["on_post"]

    body = json.dumps(event().payload("r")).encode()
    now = int(time.time())
    headers = {
        "webhook-id": event().id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(signing_key(HOOK_SECRET, "s"), event().id, now, body),
    }
    assert on_post(body, headers) == 204
    assert reloaded == [["files:acme.json", "vault:apps/acme"]]
    forged = body.replace(b"acme", b"evil")
    assert on_post(forged, headers) == 400
    assert reloaded == [["files:acme.json", "vault:apps/acme"]]
