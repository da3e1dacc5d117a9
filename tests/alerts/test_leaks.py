"""No secret leaves through an alert: every channel, seen by its real receiver.

An account's tokens, a vendor error that echoes the refresh token, the webhook
URL, the SMTP password and the daemon's own credentials in its environment are
registered with the suite-wide leak check; the alerts then go to a loopback
HTTP receiver (JSON and Slack), an aiosmtpd server and a real child process.
What those receivers got is asserted here and handed to the session-end check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rotator.alerts.channels import build_channels
from rotator.alerts.dispatch import Dispatcher, MemoryAlertMemory
from rotator.alerts.rules import Kind
from rotator.config.models import CommandChannel, EmailChannel, WebhookChannel
from rotator.secrets import Secret
from tests.support import leakcheck
from tests.support.alertkit import (
    ALERTS,
    T0,
    Child,
    Clock,
    Hook,
    Mailbox,
    hook,
    mail_text,
)
from tests.support.alertkit import settings as account_settings
from tests.support.alertkit import state as account_state
from tests.support.net import free_port

__all__ = ["hook"]  # the fixture, imported so pytest finds it here


def test_no_channel_carries_a_secret_even_when_the_vendor_echoes_one(
    hook: Hook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    refresh = leakcheck.register("rt-leak-test-3f9a7c1e5b2d", "refresh token")
    access = leakcheck.register("at-leak-test-8e4b2a6c0d1f", "access token")
    hook_path = leakcheck.register("T0LEAK/B0LEAK/webhook-leak-secret-42", "webhook url")
    password = leakcheck.register("smtp-leak-test-password-77", "smtp password")
    daemon_secrets = {
        "IDP_CLIENT_SECRET": "client-secret-leak-test-91",
        "VAULT_TOKEN": "hvs.vault-token-leak-test-93",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-key-leak-test-95",
    }
    for name, value in daemon_secrets.items():
        monkeypatch.setenv(name, leakcheck.register(value, f"daemon env {name}"))
    monkeypatch.setenv("ROTATOR_LEAK_HOOK", f"http://127.0.0.1:{hook.port}/{hook_path}")
    monkeypatch.setenv("ROTATOR_LEAK_SMTP", password)
    # by kind: a failing assertion names where and what kind, never the value
    secrets = {
        "refresh token": refresh,
        "access token": access,
        "webhook url": hook_path,
        "smtp password": password,
        **{f"daemon env {name}": value for name, value in daemon_secrets.items()},
    }

    def login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password.decode() == password
        return AuthResult(success=ok, handled=False)

    box, port = Mailbox(), free_port()
    smtp = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=login, auth_require_tls=False
    )
    smtp.start()
    child = Child(tmp_path)
    try:
        channels = build_channels(
            [
                WebhookChannel(type="webhook", url="env:ROTATOR_LEAK_HOOK"),
                WebhookChannel(type="webhook", url="env:ROTATOR_LEAK_HOOK", format="slack"),
                CommandChannel(type="command", argv=child.argv),
                EmailChannel.model_validate(
                    {
                        "type": "email",
                        "host": "127.0.0.1",
                        "port": port,
                        "security": "none",
                        "from": "rotator@example.org",
                        "to": ["oncall@example.org"],
                        "username": "rotator",
                        "password": "env:ROTATOR_LEAK_SMTP",
                    }
                ),
            ]
        )
        delivered: list[str] = []
        d = Dispatcher(
            alerts=ALERTS,
            channels=channels,
            memory=MemoryAlertMemory(),
            clock=Clock(T0),
            on_sent=lambda channel, kind: delivered.append(channel),
        )
        # the vendor refused the refresh token and said so, token included
        dead = account_state(
            refresh_token=Secret(refresh),
            access_token=Secret(access),
            failed=True,
            consecutive_failures=4,
            last_error=f"invalid_grant: refresh token {refresh} was revoked (access {access})",
            last_error_code="invalid_grant",
        )
        [alert] = d.check(dead, account_settings())
        assert alert.kind is Kind.DEAD
        assert delivered == ["log", "webhook", "webhook-2", "command", "email"]
        assert box.event.wait(10)
    finally:
        smtp.stop()

    [mail] = box.messages
    text = mail_text(mail.content)  # decoded: quoted-printable may split a value in two
    seen = {
        "webhook json": hook.raw[0],
        "slack": hook.raw[1],
        "e-mail": text,
        "command stdin": child.stdin_file.read_text(),
        "command env": child.env_file.read_text(),
    }
    assert {
        where: [kind for kind, value in secrets.items() if value in got]
        for where, got in seen.items()
    } == {where: [] for where in seen}
    # and each receiver did get the alert, with the vendor's text scrubbed, not dropped
    told = "can no longer be refreshed (last error: invalid_grant: refresh token *** was revoked"
    assert [told in got for got in (seen["webhook json"], seen["slack"], text)] == [True] * 3
    assert child.stdin()["summary"] == alert.summary
    assert child.env()["ROTATOR_ALERT_KIND"] == "dead"
