"""The webhook and e-mail channels against real receivers (the command: test_command.py)."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest

from rotator.alerts.channels import AlertChannelError, EmailAlertChannel, WebhookAlertChannel
from rotator.alerts.rules import Severity
from rotator.config.models import EmailChannel, WebhookChannel
from tests.support import leakcheck
from tests.support.alertkit import Hook, Mailbox, firing, hook
from tests.support.net import free_port

__all__ = ["hook"]  # the fixture, imported so pytest finds it here


def test_webhook_json(hook: Hook, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_path = leakcheck.register("T0001/B0002/hooksecretvalue123", "webhook url")
    monkeypatch.setenv("ROTATOR_TEST_HOOK", f"http://127.0.0.1:{hook.port}/{secret_path}")
    channel = WebhookAlertChannel(WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK"))
    channel.send(firing())
    [(path, body)] = hook.got
    assert path == f"/{secret_path}"
    assert body == {
        "version": 1,
        "status": "firing",
        "repeat": False,
        "kind": "refresh_token_expiry",
        "severity": "warning",
        "account": "acme-fax",
        "provider": "faxplus",
        "summary": firing().summary,
        "action": "rotator authorize acme-fax",
        "expires_at": "2026-12-01T10:00:00Z",
        "since": "2026-11-01T10:00:00Z",
        "time": "2026-11-01T10:00:00Z",
    }


def test_webhook_slack_and_a_refusal_that_names_no_secret(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_path = leakcheck.register("T0001/B0002/slacksecretvalue456", "webhook url")
    monkeypatch.setenv("ROTATOR_TEST_SLACK", f"http://127.0.0.1:{hook.port}/{secret_path}")
    channel = WebhookAlertChannel(
        WebhookChannel(type="webhook", url="env:ROTATOR_TEST_SLACK", format="slack")
    )
    channel.send(firing(severity=Severity.CRITICAL, repeat=True))
    assert hook.got[0][1] == {
        "text": f":rotating_light: *[CRITICAL] {firing().summary}* _(reminder)_"
    }
    hook.status = 500
    with pytest.raises(AlertChannelError) as caught:
        channel.send(firing())
    assert "env:ROTATOR_TEST_SLACK answered HTTP 500" in str(caught.value)
    assert secret_path not in str(caught.value)


def test_email_reaches_a_local_smtp_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    password = leakcheck.register("smtp-password-value-789", "smtp password")
    logins: list[str] = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password.decode() == password
        logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    box = Mailbox()
    port = free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        monkeypatch.setenv("ROTATOR_TEST_SMTP", password)
        channel = EmailAlertChannel(
            EmailChannel.model_validate(
                {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": port,
                    "security": "none",
                    "from": "rotator@example.org",
                    "to": ["oncall@example.org", "ops@example.org"],
                    "username": "rotator",
                    "password": "env:ROTATOR_TEST_SMTP",
                }
            )
        )
        channel.send(firing())
        assert box.event.wait(10)
        [envelope] = box.messages
        assert envelope.mail_from == "rotator@example.org"
        assert envelope.rcpt_tos == ["oncall@example.org", "ops@example.org"]
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert mail["Subject"] == f"[rotator] [WARNING] {firing().summary}"
        assert mail["Date"].datetime == firing().at
        assert mail["Message-ID"].endswith("@example.org>")
        text = mail.get_content()
        assert "What to do: rotator authorize acme-fax" in text
        assert logins == ["rotator"]

        monkeypatch.setenv("ROTATOR_TEST_SMTP", "wrong-password-value")
        leakcheck.register("wrong-password-value", "smtp password")
        with pytest.raises(AlertChannelError, match="refused the login of 'rotator'") as caught:
            channel.send(firing())
        assert "wrong-password-value" not in str(caught.value)
    finally:
        controller.stop()


def test_email_to_nowhere_is_a_clear_error() -> None:
    channel = EmailAlertChannel(
        EmailChannel.model_validate(
            {
                "type": "email",
                "host": "127.0.0.1",
                "port": 1,
                "security": "none",
                "from": "rotator@example.org",
                "to": ["oncall@example.org"],
                "timeout": "2s",
            }
        )
    )
    with pytest.raises(AlertChannelError, match=r"cannot reach SMTP server 127\.0\.0\.1:1\b"):
        channel.send(firing())


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made for this test."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_starttls_and_tls_verifies_the_server(tmp_path: Path, security: str) -> None:
    import ssl

    from aiosmtpd.controller import Controller

    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    box = Mailbox()
    port = free_port()
    if security == "tls":
        controller = Controller(box, hostname="127.0.0.1", port=port, ssl_context=server_tls)
    else:
        controller = Controller(
            box, hostname="127.0.0.1", port=port, tls_context=server_tls, require_starttls=True
        )
    controller.start()
    try:
        settings = EmailChannel.model_validate(
            {
                "type": "email",
                "host": "127.0.0.1",
                "port": port,
                "security": security,
                "from": "rotator@example.org",
                "to": ["oncall@example.org"],
                "timeout": "5s",
            }
        )
        trusting = ssl.create_default_context(cafile=str(cert))
        EmailAlertChannel(settings, ssl_context=trusting).send(firing())
        assert box.event.wait(10)
        assert box.messages[0].rcpt_tos == ["oncall@example.org"]
        # the system trust store does not know this certificate: refused, clearly
        with pytest.raises(AlertChannelError, match="SSLCertVerificationError"):
            EmailAlertChannel(settings).send(firing())
    finally:
        controller.stop()
