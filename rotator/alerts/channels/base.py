"""What every alert channel is: one ``send(alert)`` that raises, and a name.

Kept apart from the channels themselves so the dispatcher (which only calls
``send``) and the registry (which only builds channels) depend on this small
contract, not on urllib, smtplib or subprocess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rotator.errors import RotatorError

if TYPE_CHECKING:
    from rotator.alerts.rules import Alert

__all__ = ["AlertChannelError", "Channel", "ChannelType"]


class AlertChannelError(RotatorError):
    """A channel did not take an alert (the message never carries a secret).

    ``retry_after``: the pause the receiver asked for (an HTTP ``Retry-After``, read as
    the vendors' is), or None. Slack answers ``429`` with one when a channel sends too
    fast; retrying sooner only earns another 429.
    """

    retry_after: float | None = None

    def pause(self, backoff: float, *, longest: float) -> float:
        """How long to wait before the next attempt: the backoff, or longer when the
        receiver asked for it (up to ``longest``)."""
        return max(backoff, min(self.retry_after or 0.0, longest))


@runtime_checkable
class Channel(Protocol):
    """Somewhere alerts go. ``send`` raises on failure; the dispatcher retries."""

    name: str

    def send(self, alert: Alert) -> None: ...


class ChannelType(Protocol):
    """What the channel registry holds: a channel class, built from its config model.

    ``settings`` is typed ``Any`` because each type takes its own model
    (``WebhookChannel``, ``CommandChannel``, ...); the registry is keyed by that
    model's ``type``, so a channel never receives another type's settings.
    """

    def __call__(self, settings: Any, *, name: str) -> Channel: ...
