"""What consumers are told: the four events, derived from what a run did. Pure.

- ``rotated``: what the sinks hold changed: a sink took a new consumer view (a new
  token; or the same token with a new expiry, which a ``json`` sink shows). A
  publish that wrote nothing new is no event. Derived from the run's sink writes,
  not from its outcome, so a sink that catches up later (a replica publishing what
  another rotated, a restart after the sinks were lost) is the same event again,
  which the claim lets through once.
- ``reauthorized``: a human put a new grant in place (``rotator import``,
  ``rotator authorize``).
- ``failed``: the account stopped on a permanent error (the run that stopped
  it; later runs that find it stopped tell nothing new).
- ``recovered``: a rotation succeeded for an account that had stopped (after a
  reload or ``rotator refresh`` once the cause was fixed): it follows a
  ``failed``. Transient errors that retries absorb are no events: the token in
  the sinks stays valid meanwhile, and the alerts report long streaks.

Every event has an :attr:`Event.id` made from what the event *is* (the
account, the type, and the token or failure it is about), never from when or
where it was noticed: two replicas that notice one rotation make one id, which
the claim in the state store (:mod:`rotator.notify.claims`) lets through once,
and which is the ``webhook-id`` of every attempt to deliver it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rotator.schedule import Outcome
from rotator.secrets import Secret
from rotator.tokens import format_time

if TYPE_CHECKING:
    from rotator.config.models import AccountSettings, NotifyEvent
    from rotator.rotation.result import RotationResult
    from rotator.state import AccountState

__all__ = ["Event", "events_of", "reauthorized", "sinks_of"]


def _digest(*parts: str) -> str:
    # One-way and truncated: the id may be built from a token but never reveals it.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to one account, as consumers are told it."""

    type: NotifyEvent
    account: str
    #: the same on every replica that notices this event (see the module docstring)
    id: str
    at: datetime
    expires_at: datetime | None
    #: every sink of the account as ``store:path``
    sinks: tuple[str, ...]
    #: the access token, only for an ``exec`` entry with ``token: stdin`` (prints as ***)
    token: Secret | None = None

    def payload(self, replica: str) -> dict[str, Any]:
        """The webhook body: what happened and where to read the token; never the token."""
        return {
            "type": f"token.{self.type}",
            "timestamp": format_time(self.at),
            "data": {
                "event": self.type,
                "account": self.account,
                "expires_at": format_time(self.expires_at) if self.expires_at else None,
                "sinks": list(self.sinks),
                "replica": replica,
            },
        }


def sinks_of(settings: AccountSettings) -> tuple[str, ...]:
    return tuple(f"{sink.store}:{sink.path}" for sink in settings.sinks)


def _event(
    kind: NotifyEvent,
    state: AccountState,
    settings: AccountSettings,
    at: datetime,
    *identity: str,
) -> Event:
    return Event(
        type=kind,
        account=state.account,
        id="msg_" + _digest(state.account, kind, *identity),
        at=at,
        expires_at=state.expires_at,
        sinks=sinks_of(settings),
        token=state.access_token if kind in ("rotated", "recovered") else None,
    )


def events_of(result: RotationResult, settings: AccountSettings, at: datetime) -> list[Event]:
    """The events one job run makes, in the order consumers should hear them."""
    state = result.state
    if state is None:
        return []
    issued = format_time(state.issued_at) if state.issued_at else ""
    token = state.access_token.reveal() if state.access_token else ""
    out: list[Event] = []
    if result.sinks_written and token:
        out.append(_event("rotated", state, settings, at, issued, token))
    if result.revived and token:
        out.append(_event("recovered", state, settings, at, issued, token))
    if result.result is Outcome.PERMANENT and state.failed:
        out.append(
            _event(
                "failed",
                state,
                settings,
                at,
                issued,
                str(state.consecutive_failures),
                state.last_error_code,
            )
        )
    return out


def reauthorized(state: AccountState, settings: AccountSettings, at: datetime, grant: str) -> Event:
    """A human put ``grant`` (the new refresh token) in place."""
    return _event("reauthorized", state, settings, at, format_time(at), grant)
