"""Alert channels: webhook (JSON or Slack), command (JSON on stdin), e-mail over SMTP.

Each channel has one method, ``send(alert)``, which raises on failure; the
:class:`~rotator.alerts.dispatch.Dispatcher` retries and logs. A channel type is
found in :data:`CHANNELS` by its configuration ``type``, the same way providers
and stores are: a new type is a module here, one ``register`` line, and one
config model; a typo names the valid types. Credentials (the webhook URL, which
for Slack *is* the credential, and the SMTP password) are secret references
resolved at the moment of sending, so a rotated value is picked up without a
reload and never sits in a log line or an exception message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rotator.alerts.channels.base import AlertChannelError, Channel, ChannelType
from rotator.alerts.channels.command import CommandAlertChannel
from rotator.alerts.channels.mail import EmailAlertChannel
from rotator.alerts.channels.webhook import WebhookAlertChannel, slack_payload
from rotator.registry import Registry

if TYPE_CHECKING:
    from rotator.config.models import CommandChannel, EmailChannel, WebhookChannel

__all__ = [
    "CHANNELS",
    "AlertChannelError",
    "Channel",
    "ChannelType",
    "CommandAlertChannel",
    "EmailAlertChannel",
    "WebhookAlertChannel",
    "build_channels",
    "slack_payload",
]

#: configuration ``type`` -> channel class
CHANNELS: Registry[ChannelType] = Registry("alert channel type")
CHANNELS.register("webhook", "rotator.alerts.channels.webhook:WebhookAlertChannel")
CHANNELS.register("command", "rotator.alerts.channels.command:CommandAlertChannel")
CHANNELS.register("email", "rotator.alerts.channels.mail:EmailAlertChannel")


def build_channels(
    settings: Sequence[WebhookChannel | CommandChannel | EmailChannel],
) -> list[Channel]:
    """One channel object per configured channel, named ``<type>`` or ``<type>-<n>``.

    An unknown ``type`` (only possible past the config models) is a ConfigError at
    ``alerts.channels[i].type`` that lists the registered types.
    """
    counts: dict[str, int] = {}
    for item in settings:
        counts[item.type] = counts.get(item.type, 0) + 1
    seen: dict[str, int] = {}
    out: list[Channel] = []
    for index, item in enumerate(settings):
        kind = CHANNELS.get(item.type, path=f"alerts.channels[{index}].type")
        seen[item.type] = seen.get(item.type, 0) + 1
        name = item.type if counts[item.type] == 1 else f"{item.type}-{seen[item.type]}"
        out.append(kind(item, name=name))
    return out
