"""The small records rotator keeps beside the state, and their formats.

Besides ``state/<account>``, an account's state store holds three records of
rotator's bookkeeping: what alerts were sent (``alerts/<account>``), which
notification events were claimed (``notify/<account>``) and the console's
sign-ins in flight and spent links (``console/<account>``). They hold no grant,
but an older release that misread a newer one's record would act on what it
guessed (send an alert again, claim an event the newer record says is taken,
treat a spent link as fresh) and then write its own reading back over the
newer record. So they follow the rule of the state records
(:mod:`rotator.state`): each says its format and the oldest release that reads
it (``format``, ``requires``); a reader reads its own format and every older one
(a record without ``format`` is format 1: one written by hand, or before the
marking) and refuses a newer one with :class:`~rotator.errors.NewerFormat`, naming
the record and the release to upgrade to, and never writes it. What the caller
does meanwhile is its own (each format says it, for the message).

Each kind has its own format number, raised on its own when an older release
would misread that kind (a new optional key an older release may drop keeps it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from rotator import __version__
from rotator.errors import NewerFormat, StoreError
from rotator.state import requires_release

__all__ = [
    "ALERT_RECORD",
    "CONSOLE_RECORD",
    "MARK_KEYS",
    "NOTIFY_RECORD",
    "RECORD_FORMATS",
    "RecordFormat",
]

_FORMAT = re.compile(r"[1-9][0-9]{0,8}")
#: the keys the marking takes in a record (never an entry of its data)
MARK_KEYS = frozenset({"format", "requires", "account"})


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """The format of one kind of record: what is written, and what is read."""

    #: the record's name in messages ("alert record")
    kind: str
    #: the format this rotator writes, and the newest it reads
    format: int
    #: the oldest release that reads ``format``, written beside it
    requires: str
    #: what the caller does while it cannot read a newer record (for the message)
    meanwhile: str

    def mark(self, account: str) -> dict[str, str]:
        """The ``format``, ``requires`` and ``account`` fields every record of this kind
        is written with: they also make the record say whose it is (a Vault store
        decides ownership by the record, rotator/backends/base.py written_by_rotator)."""
        return {"format": str(self.format), "requires": self.requires, "account": account}

    def check(self, account: str, data: Mapping[str, object]) -> None:
        """Refuse a record this rotator must not read: a newer format (NewerFormat)
        or a ``format`` that is no format number (StoreError, damaged)."""
        what = f"the {self.kind} of {account}"
        raw = data.get("format", "1")
        if not isinstance(raw, str) or _FORMAT.fullmatch(raw) is None:
            # never the value itself: a record is read from a store and may hold anything
            raise StoreError(
                f"{what} is damaged: field 'format' is not a format number; it must be "
                f"{self.format} (or left out) for this rotator to read it; the record holds "
                "no grant: delete it and rotator writes it anew"
            )
        found = int(raw)
        if found <= self.format:
            return
        requires = data.get("requires", "")
        release = requires_release(requires if isinstance(requires, str) else "")
        upgrade = (
            f"upgrade rotator to at least {release}"
            if release
            else f"upgrade rotator to a release that reads {self.kind} format {found} "
            "(see the CHANGELOG)"
        )
        raise NewerFormat(
            f"{what} is in {self.kind} format {found}, written by a newer rotator; rotator "
            f"{__version__} reads {self.kind} formats up to {self.format}, so it leaves the "
            f"record as it is ({self.meanwhile.format(account=account)}): {upgrade}",
            found=found,
            known=self.format,
            requires=release,
        )


#: the oldest release that reads format 1 of each record: the first release
_FIRST = "rotator>=0.1.0"

ALERT_RECORD = RecordFormat(
    "alert record",
    1,
    _FIRST,
    "alerts of {account} are decided from this process's memory and may repeat",
)
NOTIFY_RECORD = RecordFormat(
    "notify record",
    1,
    _FIRST,
    "notifications of {account} go out unclaimed and may repeat",
)
CONSOLE_RECORD = RecordFormat(
    "console record",
    1,
    _FIRST,
    "console sign-ins of {account} are refused",
)
#: every kind, by the folder of its records in the state store
RECORD_FORMATS: dict[str, RecordFormat] = {
    "alerts": ALERT_RECORD,
    "notify": NOTIFY_RECORD,
    "console": CONSOLE_RECORD,
}
