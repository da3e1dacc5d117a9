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
    """A channel did not take an alert (the message never carries a secret)."""


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
