"""The ``webhook`` notification: a JSON event, signed per Standard Webhooks.

Each attempt POSTs the event's body with three headers
(https://www.standardwebhooks.com, the ``standardwebhooks`` package verifies them):

- ``webhook-id``: the event's id, the same on every attempt and on every
  replica (a receiver drops repeats by it);
- ``webhook-timestamp``: the attempt's time, unix seconds (receivers refuse old ones);
- ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 over ``id.timestamp.body``.

The key is the entry's ``secret`` as Standard Webhooks writes it: ``whsec_``
and base64. Without the prefix the value is still read as base64, exactly as
the ``standardwebhooks`` package's ``Webhook(secret)`` reads it, so the one
string configures both ends; a value that is not base64, or shorter than 16
bytes decoded, is refused (a passphrase would sign with whatever its letters
happen to decode to). The secret and the URL are references resolved at each
delivery: a rotated secret is picked up without a reload.

Failures are retried ``attempts`` times in all, backing off 1 s, 2 s, 4 s, ...
(at most 60 s) through a :class:`~rotator.waits.Waiter`, except a 4xx answer
other than 408 and 429: the receiver refused this request and would refuse it
again. The body never holds a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from rotator.alerts.channels.webhook import HttpRefused, post_json
from rotator.errors import SecretRefError
from rotator.notify.errors import NotifyError
from rotator.secrets import resolve

if TYPE_CHECKING:
    from rotator.config.models import WebhookNotify
    from rotator.notify.events import Event
    from rotator.waits import Waiter

__all__ = ["post_webhook", "sign", "signing_key"]

_log = structlog.get_logger("rotator.notify")
_PREFIX = "whsec_"
_MIN_KEY = 16
_MAX_BACKOFF = 60.0
#: the longest a receiver's Retry-After holds the next attempt back (the queue waits too)
_LONGEST_PAUSE = 300.0
#: 4xx answers worth another try: a timeout on the receiver's side, and "slow down"
_RETRY_4XX = frozenset({408, 429})


def signing_key(secret: str, where: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` (or bare base64) secret; NotifyError if neither."""
    text = secret.strip()
    text = text.removeprefix(_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < _MIN_KEY:
        raise NotifyError(
            f"{where} is not a Standard Webhooks secret: write whsec_ and the base64 of at "
            f"least {_MIN_KEY} random bytes (e.g. python3 -c 'import base64, os; "
            'print("whsec_" + base64.b64encode(os.urandom(32)).decode())\')',
            retry=False,
        )
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def post_webhook(
    entry: WebhookNotify,
    event: Event,
    *,
    replica: str,
    waiter: Waiter,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Deliver ``event`` to the entry's receiver, retrying; the attempts it took.

    Raises :class:`NotifyError` when no attempt was taken (the message names the
    references, never the URL or the secret).
    """
    where = f"webhook {entry.url}"
    body = json.dumps(event.payload(replica), separators=(",", ":")).encode()
    delay = 1.0
    for attempt in range(1, entry.attempts + 1):
        try:
            url = resolve(entry.url).reveal()
            key = signing_key(resolve(entry.secret).reveal(), f"notify secret {entry.secret}")
        except SecretRefError as exc:
            raise NotifyError(str(exc), retry=False) from None
        timestamp = int(clock().timestamp())
        headers = {
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, event.id, timestamp, body),
        }
        try:
            post_json(
                url, body, where=where, timeout=entry.timeout.total_seconds(), headers=headers
            )
        except HttpRefused as exc:
            refused = exc.status is not None and 400 <= exc.status < 500
            final = exc.misconfigured or (refused and exc.status not in _RETRY_4XX)
            if final or attempt == entry.attempts:
                raise NotifyError(f"{exc} (attempt {attempt} of {entry.attempts})") from None
            _log.warning(
                "notify webhook failed; trying again",
                account=event.account,
                notify_event=event.type,
                attempt=attempt,
                attempts=entry.attempts,
                error=str(exc),
            )
            if not waiter.sleep(exc.pause(delay, longest=_LONGEST_PAUSE)):
                raise NotifyError(f"{exc} (stopped after attempt {attempt})") from None
            delay = min(delay * 2, _MAX_BACKOFF)
            continue
        return attempt
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover
