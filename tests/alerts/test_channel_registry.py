"""The channel registry: every config ``type`` has a channel, every channel keeps the contract."""

from __future__ import annotations

import contextlib
import inspect
import sys
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.alerts.channels import CHANNELS, Channel, build_channels, channel_names
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
    assert [c.name for c in channels] == ["webhook", "command", "webhook-2"]
    assert built == [(items[0], "webhook"), (items[2], "webhook-2")]
    assert type(channels[1]).__name__ == "CommandAlertChannel"


def test_an_unknown_type_names_the_known_ones() -> None:
    typo = EXAMPLES["command"].model_copy(update={"type": "webhok"})
    with pytest.raises(ConfigError) as caught:
        build_channels([EXAMPLES["webhook"], typo])
    assert str(caught.value) == (
        "alerts.channels[1].type: 'webhok' is not a known alert channel type "
        "(known: command, email, webhook); did you mean 'webhook'?"
    )


# -- the `channel` label of rotator_alerts_sent_total ------------------------------------


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
@pytest.mark.parametrize("times", [1, 2, 3])
def test_every_type_configured_once_or_more_is_labelled_as_documented(
    kind: str, times: int
) -> None:
    """`webhook`, then `webhook-2`, `webhook-3` (the metrics table's rule), on /metrics."""
    from rotator.alerts.dispatch import Dispatcher, MemoryAlertMemory
    from rotator.service.metrics import Metrics
    from tests.support.alertkit import ALERTS, T0, Clock, settings, state

    others = [EXAMPLES[k] for k in sorted(EXAMPLES) if k != kind]
    items = [EXAMPLES[kind], *others[:1], *[EXAMPLES[kind]] * (times - 1), *others[1:]]
    expected = [kind] + [f"{kind}-{n}" for n in range(2, times + 1)]
    stand_ins = {k: (lambda _settings, *, name: Recorder(name)) for k in EXAMPLES}
    with contextlib.ExitStack() as stack:
        for k, stand_in in stand_ins.items():
            stack.enter_context(CHANNELS.override(k, stand_in))
        channels = build_channels(items)
    assert [c.name for c in channels if c.name.startswith(kind)] == expected
    assert [c.name for c in channels if not c.name.startswith(kind)] == sorted(
        set(EXAMPLES) - {kind}
    )
    metrics = Metrics()
    Dispatcher(
        alerts=ALERTS,
        channels=channels,
        memory=MemoryAlertMemory(),
        clock=Clock(T0),
        on_sent=metrics.alert_sent,
    ).check(state(failed=True, last_error_code="invalid_grant"), settings())
    labelled = {
        sample.labels["channel"]
        for family in metrics.registry.collect()
        if family.name == "rotator_alerts_sent"
        for sample in family.samples
        if sample.name == "rotator_alerts_sent_total"
    }
    assert labelled == {"log", *(c.name for c in channels)}


@given(st.lists(st.sampled_from(sorted(EXAMPLES)), max_size=12), st.sampled_from(sorted(EXAMPLES)))
def test_adding_a_channel_never_renames_the_others(types: list[str], added: str) -> None:
    """A dashboard on channel="webhook" keeps its series when a second webhook is added."""
    names = channel_names(types)
    assert len(set(names)) == len(names)
    assert channel_names([*types, added])[: len(types)] == names
    for kind in set(types):
        assert names[types.index(kind)] == kind  # the first of a type: its bare name
