"""``server.console``: where the console's links point, how long they live, their key.

Its own module so that the models module stays within the house's line budget;
:mod:`rotator.config.models` re-exports it.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, model_validator

from rotator.config.fields import HttpUrl, PositiveDuration, Ref

__all__ = ["ConsoleSettings"]


class ConsoleSettings(BaseModel):
    """``server.console``: re-authorization links (and the status page) on ``server.listen``."""

    # as rotator.config.models.Model (which imports this module)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    #: how people's browsers reach the listener; the redirect URI is {public_url}/oauth/callback
    public_url: HttpUrl
    #: a link in an alert is valid this long, and once
    link_ttl: PositiveDuration = timedelta(hours=24)
    #: the links' HMAC key (default: a 0600 file generated beside the spool key)
    signing_key: Ref | None = None
    #: the status page's token (default: the page answers loopback only)
    viewer_token: Ref | None = None

    @model_validator(mode="after")
    def _check_url(self) -> ConsoleSettings:
        if "?" in self.public_url or "#" in self.public_url:
            raise ValueError("public_url must not have a query or fragment")
        if self.link_ttl > timedelta(days=30):
            raise ValueError("link_ttl must be at most 30d (a link is a key to the account)")
        return self

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def callback_url(self) -> str:
        """The one redirect URI to register at every vendor."""
        return f"{self.base_url}/oauth/callback"
