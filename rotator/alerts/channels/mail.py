"""The e-mail alert channel: a plain-text message over SMTP (STARTTLS, TLS or plain).

The SMTP password is a secret reference resolved at the moment of sending; a
refusal names the server and the user, never the password.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from rotator.alerts.channels.base import AlertChannelError
from rotator.secrets import resolve

if TYPE_CHECKING:
    import smtplib
    from email.message import EmailMessage

    from rotator.alerts.rules import Alert
    from rotator.config.models import EmailChannel

__all__ = ["EmailAlertChannel"]


class EmailAlertChannel:
    """Send the alert as a plain-text e-mail over SMTP (STARTTLS, TLS or plain)."""

    def __init__(
        self,
        settings: EmailChannel,
        *,
        name: str = "email",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._ssl = ssl_context

    def message(self, alert: Alert) -> EmailMessage:
        import email.utils  # here, not at the top: the daemon starts without them
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["Subject"] = f"[rotator] {alert.title}"
        msg["From"] = self.settings.sender
        msg["To"] = ", ".join(self.settings.to)
        msg["Date"] = email.utils.format_datetime(alert.at)
        msg["Message-ID"] = email.utils.make_msgid(domain=self.settings.sender.rpartition("@")[2])
        payload = alert.payload()
        lines = [alert.summary, ""]
        if alert.action:
            lines += [f"What to do: {alert.action}", ""]
        if alert.reauthorize_url:
            lines += [f"Re-authorize in a browser (valid once): {alert.reauthorize_url}", ""]
        lines += [f"{key}: {value}" for key, value in payload.items() if value not in (None, "")]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def send(self, alert: Alert) -> None:
        import smtplib  # here, not at the top: the daemon starts without it

        s = self.settings
        timeout = s.timeout.total_seconds()
        context = self._ssl or ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout, context=context)
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=timeout)
            with smtp:
                if s.security == "starttls":
                    smtp.starttls(context=context)
                if s.username and s.password is not None:
                    smtp.login(s.username, resolve(s.password).reveal())
                smtp.send_message(self.message(alert))
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertChannelError(
                f"SMTP server {s.host}:{s.port} refused the login of {s.username!r} "
                f"(code {exc.smtp_code})"
            ) from None
        except smtplib.SMTPException as exc:
            raise AlertChannelError(
                f"SMTP server {s.host}:{s.port} refused the alert: {type(exc).__name__}"
                f"{_smtp_code(exc)}"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise AlertChannelError(
                f"cannot reach SMTP server {s.host}:{s.port}: {type(exc).__name__}: {exc}"
            ) from None


def _smtp_code(exc: smtplib.SMTPException) -> str:
    code = getattr(exc, "smtp_code", None)
    return f" (code {code})" if code else ""
