"""Alert channels: webhook (JSON or Slack), command (JSON on stdin), e-mail over SMTP.

Each channel has one method, ``send(alert)``, which raises on failure; the
:class:`~rotator.alerts.dispatch.Dispatcher` retries and logs. Credentials (the webhook
URL, which for Slack *is* the credential, and the SMTP password) are secret
references resolved at the moment of sending, so a rotated value is picked up
without a reload and never sits in a log line or an exception message.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rotator import __version__
from rotator.errors import RotatorError, scrub
from rotator.secrets import resolve

if TYPE_CHECKING:
    import smtplib
    from email.message import EmailMessage

    from rotator.alerts.dispatch import Channel
    from rotator.alerts.rules import Alert
    from rotator.config.models import CommandChannel, EmailChannel, WebhookChannel

__all__ = [
    "AlertChannelError",
    "CommandAlertChannel",
    "EmailAlertChannel",
    "WebhookAlertChannel",
    "build_channels",
    "slack_payload",
]


class AlertChannelError(RotatorError):
    """A channel did not take an alert (the message never carries a secret)."""


_SLACK_ICONS = {
    "critical": ":rotating_light:",
    "warning": ":warning:",
    "info": ":white_check_mark:",
}


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: one line of text, markdown."""
    icon = _SLACK_ICONS.get(str(alert.severity), "")
    text = f"{icon} *{alert.title}*"
    if alert.repeat:
        text += " _(reminder)_"
    return {"text": text}


class WebhookAlertChannel:
    """POST the alert as JSON (``format: json``) or as a Slack message (``format: slack``).

    Sent with the standard library rather than httpx on purpose: httpx logs every
    request URL at INFO, and a webhook URL (Slack's above all) is a credential.
    """

    def __init__(self, settings: WebhookChannel, *, name: str = "webhook") -> None:
        self.name = name
        self.settings = settings

    def send(self, alert: Alert) -> None:
        import urllib.error  # here, not at the top: the daemon starts without them
        import urllib.request

        url = resolve(self.settings.url).reveal()
        where = f"webhook {self.settings.url}"  # the reference, never the URL
        if not url.startswith(("https://", "http://")):
            raise AlertChannelError(f"{where} does not hold an http:// or https:// URL")
        body = slack_payload(alert) if self.settings.format == "slack" else alert.payload()
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "User-Agent": f"rotator/{__version__}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - scheme checked above
                request, timeout=self.settings.timeout.total_seconds()
            ) as response:
                response.read(4096)
        except urllib.error.HTTPError as exc:
            text = exc.read(512).decode("utf-8", "replace")
            raise AlertChannelError(
                f"{where} answered HTTP {exc.code}: {scrub(text, 120)}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AlertChannelError(f"{where} did not answer: {type(reason).__name__}") from None


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


def build_channels(
    settings: Sequence[WebhookChannel | CommandChannel | EmailChannel],
) -> list[Channel]:
    """One channel object per configured channel, named ``<type>`` or ``<type>-<n>``."""
    from rotator.config.models import CommandChannel, EmailChannel, WebhookChannel

    counts: dict[str, int] = {}
    for item in settings:
        counts[item.type] = counts.get(item.type, 0) + 1
    seen: dict[str, int] = {}
    out: list[Channel] = []
    for item in settings:
        seen[item.type] = seen.get(item.type, 0) + 1
        name = item.type if counts[item.type] == 1 else f"{item.type}-{seen[item.type]}"
        if isinstance(item, WebhookChannel):
            out.append(WebhookAlertChannel(item, name=name))
        elif isinstance(item, CommandChannel):
            out.append(CommandAlertChannel(item, name=name))
        elif isinstance(item, EmailChannel):
            out.append(EmailAlertChannel(item, name=name))
    return out
