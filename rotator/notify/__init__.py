"""Telling consumers that a token changed: the ``notify:`` entries of an account.

The rotation only reports what a run did; this room turns that into events
(:mod:`.events`), claims each one once per replica set (:mod:`.claims`), and
delivers it off the rotation's thread (:mod:`.dispatch`) by running a program
(:mod:`.exec`) or posting a signed webhook (:mod:`.webhook`).
"""

from __future__ import annotations

from rotator.notify.claims import StoreClaims, notify_record_path
from rotator.notify.dispatch import QUEUE_SIZE, STOP_WAIT, Notifications
from rotator.notify.errors import NotifyError
from rotator.notify.events import Event, events_of, reauthorized, sinks_of
from rotator.notify.exec import event_environment, run_exec
from rotator.notify.webhook import post_webhook, sign, signing_key

__all__ = [
    "QUEUE_SIZE",
    "STOP_WAIT",
    "Event",
    "Notifications",
    "NotifyError",
    "StoreClaims",
    "event_environment",
    "events_of",
    "notify_record_path",
    "post_webhook",
    "reauthorized",
    "run_exec",
    "sign",
    "signing_key",
    "sinks_of",
]
