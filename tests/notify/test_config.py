"""The ``notify:`` configuration: entries, defaults, and what ``check`` says of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.config import parse_config
from rotator.config.models import ExecNotify, WebhookNotify
from rotator.errors import ConfigError
from tests.notify.kit import HOOK_SECRET
from tests.test_cli import run_main

BASE = """
stores: {{files: {{type: file, directory: {out}}}}}
defaults:
  notify:
    - {{type: webhook, url: env:HOOK_URL, secret: env:HOOK_SECRET}}
accounts:
  acme:
    provider: oauth2
    grant: client_credentials
    token_url: https://idp.example/token
    client_id: app
    client_secret: env:CLIENT_SECRET
    sinks: [{{store: files, path: acme.json}}]
{extra}
"""


def config_text(extra: str = "", out: str = "/tmp/rotator-notify-out") -> str:
    return BASE.format(out=out, extra="\n".join(f"    {line}" for line in extra.splitlines()))


def test_defaults_apply_and_an_account_list_replaces_them() -> None:
    inherited = parse_config(config_text()).accounts["acme"].notify
    assert [type(e) for e in inherited] == [WebhookNotify]
    assert inherited[0].events == ["rotated", "reauthorized", "failed", "recovered"]
    assert inherited[0].attempts == 5 and inherited[0].timeout.total_seconds() == 10
    own = parse_config(
        config_text("notify: [{type: exec, argv: [systemctl, reload, faxapp]}]")
    ).accounts["acme"]
    [entry] = own.notify
    assert isinstance(entry, ExecNotify)
    assert entry.events == ["rotated"] and entry.token == "none"
    assert entry.timeout.total_seconds() == 30


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("notify: [{type: exek, argv: [x]}]", "notify[0].type: 'exek' is not valid"),
        ("notify: [{type: exec, argv: []}]", "notify[0].argv"),
        ("notify: [{type: exec, argv: [x], events: [rotatd]}]", "events[0]: 'rotatd'"),
        ("notify: [{type: exec, argv: [x], events: []}]", "notify[0].events"),
        ("notify: [{type: exec, argv: [x], events: [failed, failed]}]", "an event twice"),
        ("notify: [{type: exec, argv: [x], token: argv}]", "notify[0].token: 'argv': Input should"),
        ("notify: [{type: exec, argv: [x], pass_env: [ROTATOR_EVENT]}]", "ROTATOR_* are set"),
        ("notify: [{type: exec, argv: [x], pass_env: [NOTIFY_SOCKET]}]", "speak to systemd"),
        ("notify: [{type: exec, argv: [x], colour: red}]", "notify[0].colour: unknown key"),
        ("notify: [{type: webhook, url: env:U}]", "notify[0].secret: required key is missing"),
        ("notify: [{type: webhook, url: 'https://h/x', secret: env:S}]", "notify[0].url"),
        ("notify: [{type: webhook, url: env:U, secret: hunter2}]", "notify[0].secret"),
        ("notify: [{type: webhook, url: env:U, secret: env:S, attempts: 0}]", "attempts"),
        ("notify: [{type: webhook, url: env:U, secret: env:S, timeout: 0s}]", "timeout"),
    ],
)
def test_a_bad_entry_is_refused_with_its_key_path(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(extra))
    assert "accounts.acme.notify[0]" in str(caught.value)
    assert message in str(caught.value)


def test_check_reports_a_bad_entry_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rotator.yaml"
    path.write_text(config_text("notify: [{type: exec, argv: [x], events: [rotatd]}]"))
    code, _, err = run_main(["check", "-c", str(path)], capsys)
    assert code == 2
    assert "accounts.acme.notify[0].events[0]" in err


def test_check_online_resolves_the_webhook_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rotator.yaml"
    path.write_text(config_text(out=str(tmp_path / "out")))
    monkeypatch.setenv("CLIENT_SECRET", "client-secret-for-check")
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/x")
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    code, out, _ = run_main(["check", "-c", str(path), "--online"], capsys)
    assert code == 1
    assert "accounts.acme.notify[0].secret: ERROR env:HOOK_SECRET" in out
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    code, out, _ = run_main(["check", "-c", str(path), "--online"], capsys)
    assert code == 0, out
    assert HOOK_SECRET not in out


def test_the_notify_record_is_a_path_of_its_own() -> None:
    text = config_text("notify: [{type: exec, argv: [x]}]").replace(
        "path: acme.json", "path: notify/acme"
    )
    text = text.replace("defaults:\n", "defaults:\n  state: {store: files}\n")
    with pytest.raises(ConfigError, match="notify record"):
        parse_config(text)
