"""The command channel: the alert on stdin, and a minimal environment for the child.

The daemon's environment holds its credentials (client secrets, VAULT_TOKEN, AWS
keys, a webhook URL); a real child dumps what it was given and none of them may
be there unless the channel's ``pass_env`` names it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.alerts.channels import AlertChannelError, CommandAlertChannel
from rotator.alerts.channels.command import BASE_ENV, alert_environment, child_environment
from rotator.config import parse_config
from rotator.config.models import CommandChannel
from rotator.errors import ConfigError
from tests.support import leakcheck
from tests.support.alertkit import Child, firing

#: what a daemon's environment typically holds besides the harmless part
DAEMON_SECRETS = {
    "IDP_CLIENT_SECRET": "client-secret-in-daemon-env-1a2b",
    "VAULT_TOKEN": "hvs.vault-token-in-daemon-env-3c4d",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-key-in-daemon-env-5e6f",
    "ROTATOR_SLACK_WEBHOOK": "https://hooks.slack.test/T000/B000/webhook-secret-7a8b",
}
ALERT_VARS = {
    "ROTATOR_ALERT_STATUS": "firing",
    "ROTATOR_ALERT_KIND": "refresh_token_expiry",
    "ROTATOR_ALERT_SEVERITY": "warning",
    "ROTATOR_ALERT_ACCOUNT": "acme-fax",
    "ROTATOR_ALERT_PROVIDER": "faxplus",
    "ROTATOR_ALERT_REPEAT": "false",
}


@pytest.fixture
def daemon_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The daemon's environment: its secrets, systemd's variables, the base set."""
    for name, value in DAEMON_SECRETS.items():
        monkeypatch.setenv(name, leakcheck.register(value, f"daemon env {name}"))
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    monkeypatch.setenv("HOME", "/var/lib/rotator")
    # a UTF-8 LANG also keeps the Python child from adding LC_CTYPE (PEP 538)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("LC_ALL", raising=False)
    return dict(os.environ)


def test_command_gets_the_json_on_stdin(tmp_path: Path) -> None:
    child = Child(tmp_path)
    CommandAlertChannel(CommandChannel(type="command", argv=child.argv)).send(firing())
    assert child.stdin() == firing().payload()


def test_the_child_sees_the_base_set_and_the_alert_and_no_daemon_secret(
    tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    child = Child(tmp_path)
    CommandAlertChannel(CommandChannel(type="command", argv=child.argv)).send(firing())
    seen = child.env()
    assert seen == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/var/lib/rotator",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        **ALERT_VARS,
    }
    given = child.env_file.read_text() + child.stdin_file.read_text()
    assert [name for name, value in DAEMON_SECRETS.items() if value in given] == []


def test_pass_env_hands_on_exactly_the_names_it_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon_env: dict[str, str]
) -> None:
    pager_key = leakcheck.register("pager-api-key-allow-listed-9c0d", "pager key")
    monkeypatch.setenv("PAGER_API_KEY", pager_key)
    child = Child(tmp_path)
    settings_ = CommandChannel(
        type="command", argv=child.argv, pass_env=["PAGER_API_KEY", "NOT_SET_ANYWHERE"]
    )
    CommandAlertChannel(settings_).send(firing(repeat=True))
    seen = child.env(leak_checked=False)  # it holds the pager key, handed on on purpose
    assert seen["PAGER_API_KEY"] == pager_key
    assert "NOT_SET_ANYWHERE" not in seen
    assert seen["ROTATOR_ALERT_REPEAT"] == "true"
    assert not set(DAEMON_SECRETS) & set(seen)


def test_a_failing_command_that_echoes_an_allow_listed_value_is_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pager_key = leakcheck.register("pager-api-key-echoed-on-failure", "pager key")
    monkeypatch.setenv("PAGER_API_KEY", pager_key)
    echo = "import os, sys; sys.exit('pager refused key ' + os.environ['PAGER_API_KEY'])"
    channel = CommandAlertChannel(
        CommandChannel(
            type="command", argv=[sys.executable, "-c", echo], pass_env=["PAGER_API_KEY"]
        )
    )
    with pytest.raises(AlertChannelError) as caught:
        channel.send(firing())
    assert str(caught.value) == (
        f"alert command {sys.executable!r} exited with 1: pager refused key ***"
    )


def test_command_failure_and_timeout_are_reported() -> None:
    failing = CommandAlertChannel(
        CommandChannel(
            type="command", argv=[sys.executable, "-c", "import sys; sys.exit('pager down')"]
        )
    )
    with pytest.raises(AlertChannelError, match="exited with 1: pager down"):
        failing.send(firing())
    slow = CommandAlertChannel(
        CommandChannel(
            type="command", argv=[sys.executable, "-c", "import time; time.sleep(30)"], timeout="1s"
        )
    )
    with pytest.raises(AlertChannelError, match="did not finish within 1s"):
        slow.send(firing())
    missing = CommandAlertChannel(CommandChannel(type="command", argv=["/nonexistent/pager"]))
    with pytest.raises(AlertChannelError, match="not found"):
        missing.send(firing())


_NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True)


@settings(max_examples=300)
@given(
    environ=st.dictionaries(_NAMES, st.text(min_size=1, max_size=20), max_size=25),
    pass_env=st.lists(_NAMES, max_size=6),
)
def test_child_environment_is_the_base_set_the_allow_list_and_the_alert(
    environ: dict[str, str], pass_env: list[str]
) -> None:
    """Whatever the daemon's environment: a name reaches the child only when it is in
    the base set or allow-listed (and never one of systemd's); its value is untouched."""
    env = child_environment(firing(), pass_env, environ)
    systemd = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"}
    handed = ({*BASE_ENV, *pass_env} & environ.keys()) - systemd - ALERT_VARS.keys()
    assert {name: env[name] for name in handed} == {name: environ[name] for name in handed}
    assert env.keys() == handed | {"PATH"} | ALERT_VARS.keys()
    assert {name: env[name] for name in ALERT_VARS} == alert_environment(firing())


@pytest.mark.parametrize(
    ("names", "refusal"),
    [
        (["OK", "BAD-NAME"], "pass_env[1] 'BAD-NAME' is not an environment variable name"),
        (["1ST"], "pass_env[0] '1ST' is not an environment variable name"),
        (
            ["ROTATOR_ALERT_KIND"],
            "pass_env[0] 'ROTATOR_ALERT_KIND': ROTATOR_ALERT_* are set by rotator for each alert",
        ),
        (
            ["NOTIFY_SOCKET"],
            "pass_env[0] 'NOTIFY_SOCKET': the command must not speak to systemd for rotator",
        ),
    ],
)
def test_pass_env_names_are_checked_by_the_configuration(names: list[str], refusal: str) -> None:
    text = json.dumps(
        {"alerts": {"channels": [{"type": "command", "argv": ["pager"], "pass_env": names}]}}
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).startswith(f"alerts.channels[0]: {refusal}")
