"""One delivery per event per replica set: the claim in the state store.

Before it delivers an event, a process writes the event's id into
``notify/<account>`` in the account's state store with compare-and-set, as the
alert dispatcher claims an alert. Two replicas that noticed one event (a
rotation by one, the catching-up publish of the other) race on that record; the
one that loses finds the id there and does not deliver. The record keeps the
last id per event type, so it stays a few lines long.

Claimed first, then delivered: a process that dies between the two loses that
one notification rather than sending it twice. When the store cannot be read or
written the event is delivered anyway (a repeat, which the receiver can drop by
its id, is better than a consumer never told of a new token). So is a record a
newer release wrote (:data:`rotator.records.NOTIFY_RECORD`): not read, not
written over, the event delivered unclaimed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from rotator.errors import NewerFormat, StoreConflict, StoreError
from rotator.records import NOTIFY_RECORD

if TYPE_CHECKING:
    from rotator.backends.base import SecretStore
    from rotator.notify.events import Event

__all__ = ["StoreClaims", "notify_record_path"]

_log = structlog.get_logger("rotator.notify")
#: compare-and-set rounds against a record other writers keep changing
_ROUNDS = 5


def notify_record_path(account: str) -> str:
    return f"notify/{account}"


class StoreClaims:
    """Claims in ``notify/<account>`` of the account's state store."""

    def __init__(self, store_for: Callable[[str], SecretStore]) -> None:
        self._store_for = store_for

    def claim(self, event: Event) -> bool:
        """True when this process is the one to deliver ``event``."""
        path = notify_record_path(event.account)
        try:
            store = self._store_for(event.account)
            for _ in range(_ROUNDS):
                record = store.read(path)
                data = dict(record.data) if record is not None else {}
                # a newer release's record is not read, nor written: NewerFormat, below
                NOTIFY_RECORD.check(event.account, data)
                if data.get(event.type) == event.id:
                    return False
                data.update({**NOTIFY_RECORD.mark(event.account), event.type: event.id})
                try:
                    store.write(path, data, expected_version=record.version if record else None)
                except StoreConflict:
                    continue
                return True
        except StoreError as exc:
            _log.warning(
                "notify record of a newer rotator; delivering unclaimed"
                if isinstance(exc, NewerFormat)
                else "notify claim not recorded; delivering anyway",
                account=event.account,
                notify_event=event.type,
                error=str(exc),
            )
            return True
        _log.warning(
            "notify record kept changing; not delivering",
            account=event.account,
            notify_event=event.type,
        )
        return False
