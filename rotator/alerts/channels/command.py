"""The command alert channel: run the operator's program with the alert on stdin."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

from rotator.alerts.channels.base import AlertChannelError
from rotator.errors import scrub

if TYPE_CHECKING:
    from rotator.alerts.rules import Alert
    from rotator.config.models import CommandChannel

__all__ = ["CommandAlertChannel"]


class CommandAlertChannel:
    """Run ``argv`` with the alert JSON on stdin; a non-zero exit or a timeout is a failure."""

    def __init__(self, settings: CommandChannel, *, name: str = "command") -> None:
        self.name = name
        self.settings = settings

    def send(self, alert: Alert) -> None:
        argv = list(self.settings.argv)
        try:
            done = subprocess.run(  # noqa: S603 - argv comes from the operator's configuration
                argv,
                input=json.dumps(alert.payload()).encode(),
                capture_output=True,
                timeout=self.settings.timeout.total_seconds(),
                check=False,
                env=_child_env(alert),
            )
        except FileNotFoundError:
            raise AlertChannelError(f"alert command {argv[0]!r} not found") from None
        except PermissionError:
            raise AlertChannelError(f"alert command {argv[0]!r} is not executable") from None
        except subprocess.TimeoutExpired:
            raise AlertChannelError(
                f"alert command {argv[0]!r} did not finish within "
                f"{self.settings.timeout.total_seconds():g}s"
            ) from None
        if done.returncode != 0:
            stderr = scrub(done.stderr.decode("utf-8", "replace"), 200)
            raise AlertChannelError(
                f"alert command {argv[0]!r} exited with {done.returncode}: {stderr}"
            )


def _child_env(alert: Alert) -> dict[str, str]:
    # The child must not speak to systemd in our name.
    env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ONLY}
    env["ROTATOR_ALERT_STATUS"] = alert.status
    return env


_SYSTEMD_ONLY = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"})
