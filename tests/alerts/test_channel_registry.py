"""The channel registry: every config ``type`` has a channel, every channel keeps the contract."""

from __future__ import annotations

import inspect
import sys
import typing
from typing import Any

import pytest

from rotator.alerts.channels import CHANNELS, Channel, build_channels
from rotator.alerts.rules import Alert
from rotator.config import models
from rotator.config.models import CommandChannel, EmailChannel, WebhookChannel
from rotator.errors import ConfigError
from tests.support.alertkit import Recorder

#: one valid configuration per channel type (nothing is sent: built only)
EXAMPLES: dict[str, Any] = {
    "webhook": WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK"),
    "command": CommandChannel(type="command", argv=[sys.executable, "-c", "pass"]),
    "email": EmailChannel.model_validate(
        {"type": "email", "host": "127.0.0.1", "from": "r@example.org", "to": ["o@example.org"]}
    ),
}


def config_types() -> set[str]:
    """The ``type`` tags of the configuration's channel union."""
    union = typing.get_args(models.Channel)[0]
    return {typing.get_args(m.model_fields["type"].annotation)[0] for m in typing.get_args(union)}


def test_every_configured_type_has_a_channel_and_no_channel_lacks_a_type() -> None:
    assert set(CHANNELS.names()) == config_types() == set(EXAMPLES)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_every_registered_channel_keeps_the_channel_protocol(kind: str) -> None:
    cls = CHANNELS.load_all()[kind]
    channel = cls(EXAMPLES[kind], name=f"{kind}-x")
    assert isinstance(channel, Channel)
    assert channel.name == f"{kind}-x"
    send = type(channel).send
    assert list(inspect.signature(send).parameters) == ["self", "alert"]
    # the channel modules import Alert for type checking only: resolve it here
    hints = typing.get_type_hints(send, localns={"Alert": Alert})
    assert hints == {"alert": Alert, "return": type(None)}


def test_a_type_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"the alert channel type 'webhook' is already registered"):
        CHANNELS.register("webhook", "tests.support.alertkit:Recorder")
    assert CHANNELS.get("webhook").__name__ == "WebhookAlertChannel"


def test_channels_are_built_through_the_registry_and_named_by_type() -> None:
    built: list[tuple[Any, str]] = []

    def stand_in(settings: Any, *, name: str) -> Channel:
        built.append((settings, name))
        return Recorder(name)

    items = [EXAMPLES["webhook"], EXAMPLES["command"], EXAMPLES["webhook"]]
    with CHANNELS.override("webhook", stand_in):
        channels = build_channels(items)
    assert [c.name for c in channels] == ["webhook-1", "command", "webhook-2"]
    assert built == [(items[0], "webhook-1"), (items[2], "webhook-2")]
    assert type(channels[1]).__name__ == "CommandAlertChannel"


def test_an_unknown_type_names_the_known_ones() -> None:
    typo = EXAMPLES["command"].model_copy(update={"type": "webhok"})
    with pytest.raises(ConfigError) as caught:
        build_channels([EXAMPLES["webhook"], typo])
    assert str(caught.value) == (
        "alerts.channels[1].type: 'webhok' is not a known alert channel type "
        "(known: command, email, webhook); did you mean 'webhook'?"
    )
