"""The re-authorization link in every channel: webhook JSON, Slack, e-mail, command env."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from rotator.alerts.channels import CommandAlertChannel, EmailAlertChannel, WebhookAlertChannel
from rotator.alerts.channels.command import alert_environment
from rotator.config.models import CommandChannel, EmailChannel, WebhookChannel
from tests.support.alertkit import Child, Hook, Mailbox, firing, hook
from tests.support.net import free_port

__all__ = ["hook"]

LINK = "https://rotator.example.com/authorize/acme-fax?exp=1798000000&nonce=" + "a" * 32 + "&sig=x"
WITH_LINK = firing(reauthorize=True, reauthorize_url=LINK)


def test_webhook_json_and_slack_carry_the_link(hook: Hook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_TEST_HOOK", f"http://127.0.0.1:{hook.port}/h")
    for fmt in ("json", "slack"):
        WebhookAlertChannel(
            WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK", format=fmt)  # type: ignore[arg-type]
        ).send(WITH_LINK)
    [(_, as_json), (_, as_slack)] = hook.got
    assert as_json["reauthorize_url"] == LINK
    assert f"<{LINK}|Re-authorize acme-fax>" in as_slack["text"]
    assert as_slack["unfurl_links"] is False
    # without a link, no key at all (the payload of an account that cannot be authorized)
    assert "reauthorize_url" not in firing().payload()


def test_the_command_gets_the_link_in_its_environment(tmp_path: Path) -> None:
    child = Child(tmp_path)
    CommandAlertChannel(CommandChannel(type="command", argv=child.argv)).send(WITH_LINK)
    assert child.env()["ROTATOR_REAUTHORIZE_URL"] == LINK
    assert child.stdin()["reauthorize_url"] == LINK
    assert "ROTATOR_REAUTHORIZE_URL" not in alert_environment(firing())


def test_the_mail_body_carries_the_link() -> None:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        EmailAlertChannel(
            EmailChannel.model_validate(
                {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": port,
                    "security": "none",
                    "from": "rotator@example.org",
                    "to": ["oncall@example.org"],
                }
            )
        ).send(WITH_LINK)
        assert box.event.wait(10)
    finally:
        controller.stop()
    [envelope] = box.messages
    text = email.message_from_bytes(envelope.content, policy=email.policy.default).get_content()
    assert f"Re-authorize in a browser (valid once): {LINK}" in text
