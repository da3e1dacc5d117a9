"""The command channel: the alert on stdin, a failure or a timeout reported."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rotator.alerts.channels import AlertChannelError, CommandAlertChannel
from rotator.config.models import CommandChannel
from tests.support.alertkit import Child, firing


def test_command_gets_the_json_on_stdin(tmp_path: Path) -> None:
    child = Child(tmp_path)
    CommandAlertChannel(CommandChannel(type="command", argv=child.argv)).send(firing())
    assert child.stdin() == firing().payload()


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
