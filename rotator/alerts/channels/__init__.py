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
    "channel_names",
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
    """One channel object per configured channel, named by :func:`channel_names`.

    An unknown ``type`` (only possible past the config models) is a ConfigError at
    ``alerts.channels[i].type`` that lists the registered types.
    """
    names = channel_names([item.type for item in settings])
    return [
        CHANNELS.get(item.type, path=f"alerts.channels[{index}].type")(item, name=name)
        for index, (item, name) in enumerate(zip(settings, names, strict=True))
    ]


def channel_names(types: Sequence[str]) -> list[str]:
    """The ``channel`` label of each configured channel: its type, and from the second
    of a type on ``<type>-<n>`` (``webhook``, ``webhook-2``, ``webhook-3``).

    The first of a type keeps its bare name whatever follows, so adding a second
    webhook never renames the first one's series: a dashboard or alert rule on
    ``channel="webhook"`` goes on counting it, where ``webhook-1``/``webhook-2``
    would have ended that series and started another.
    """
    seen: dict[str, int] = {}
    names: list[str] = []
    for kind in types:
        seen[kind] = seen.get(kind, 0) + 1
        names.append(kind if seen[kind] == 1 else f"{kind}-{seen[kind]}")
    return names
