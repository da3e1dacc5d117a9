"""The one error of the notify room: a consumer was not told (the message holds no secret)."""

from __future__ import annotations

from rotator.errors import RotatorError

__all__ = ["NotifyError"]


class NotifyError(RotatorError):
    """A notification was not delivered; ``retry`` says whether another attempt may help."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry
