"""The webhook alert channel: the alert as JSON, or as a Slack incoming-webhook message.

The URL is a secret reference resolved at the moment of sending (for Slack the
URL *is* the credential), so a rotated value is picked up without a reload and
never sits in a log line or an exception message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rotator import __version__
from rotator.alerts.channels.base import AlertChannelError
from rotator.errors import scrub
from rotator.politeness import retry_after_seconds
from rotator.secrets import resolve

if TYPE_CHECKING:
    from rotator.alerts.rules import Alert
    from rotator.config.models import WebhookChannel

__all__ = ["HttpRefused", "WebhookAlertChannel", "post_json", "slack_payload"]


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
    if alert.reauthorize_url:
        # a signed one-time link: unfurling would spend nothing (a link is spent by its
        # callback) but would fetch it from Slack's servers, so it is not unfurled
        text += f"\n<{alert.reauthorize_url}|Re-authorize {alert.account}> (valid once)"
        return {"text": text, "unfurl_links": False, "unfurl_media": False}
    return {"text": text}


class WebhookAlertChannel:
    """POST the alert as JSON (``format: json``) or as a Slack message (``format: slack``)."""

    def __init__(self, settings: WebhookChannel, *, name: str = "webhook") -> None:
        self.name = name
        self.settings = settings

    def send(self, alert: Alert) -> None:
        body = slack_payload(alert) if self.settings.format == "slack" else alert.payload()
        post_json(
            resolve(self.settings.url).reveal(),
            json.dumps(body).encode(),
            where=f"webhook {self.settings.url}",  # the reference, never the URL
            timeout=self.settings.timeout.total_seconds(),
        )


class HttpRefused(AlertChannelError):
    """A webhook did not take a POST; ``status`` is its HTTP status (None: no answer).

    ``misconfigured``: the request was never sent (not an http(s) URL); no retry helps.
    ``retry_after``: the receiver's ``Retry-After`` in seconds
    (:func:`rotator.politeness.retry_after_seconds`), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        misconfigured: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.misconfigured = misconfigured
        self.retry_after = retry_after


def post_json(
    url: str,
    body: bytes,
    *,
    where: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> int:
    """POST ``body`` (JSON) to ``url``; the HTTP status, or :class:`HttpRefused`.

    Sent with the standard library rather than httpx on purpose: httpx logs every
    request URL at INFO, and a webhook URL (Slack's above all) is a credential.
    ``where`` names the target in messages: the secret reference, never the URL.
    """
    import urllib.error  # here, not at the top: the daemon starts without them
    import urllib.request

    if not url.startswith(("https://", "http://")):
        raise HttpRefused(f"{where} does not hold an http:// or https:// URL", misconfigured=True)
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"rotator/{__version__}",
            **(headers or {}),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(4096)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        text = exc.read(512).decode("utf-8", "replace")
        pause = retry_after_seconds(exc.headers.get("Retry-After"), time.time())
        raise HttpRefused(
            f"{where} answered HTTP {exc.code}: {scrub(text, 120)}",
            status=exc.code,
            retry_after=pause,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HttpRefused(f"{where} did not answer: {type(reason).__name__}") from None
