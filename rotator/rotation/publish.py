"""Publishing the consumer view of a state to every sink of its account.

Sinks come after the state (rule 1): a sink that fails never costs the grant,
and the next run comes back for it, backing off while it stays broken. Each
sink is written against the version this process last left it at, so a run
whose token did not change costs one compare-and-set per sink and no read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import structlog

from rotator.backends.base import SecretStore, Version, WriteResult
from rotator.config.models import Sink
from rotator.errors import StoreConflict, StoreDamaged, StoreError
from rotator.state import AccountState
from rotator.tokens import ConsumerView, TokenSet

if TYPE_CHECKING:
    from rotator.rotation.accounts import Account

__all__ = ["UNREAD", "Published", "Publisher", "publish"]

_log = structlog.get_logger("rotator.rotation")


@dataclass(frozen=True, slots=True)
class Published:
    """What one publish run did, and the failing streak that backs off the next."""

    written: int = 0
    unchanged: int = 0
    failed: int = 0
    #: consecutive runs of the account with a failed sink (0: all sinks fine)
    streak: int = 0


@dataclass
class Publisher:
    """Keeps every account's sinks in step with its state. Thread-safe per account
    (the rotator holds the account's lock around :meth:`sync`)."""

    #: (store, path) -> the version this process last left a sink at: the next
    #: publish writes against it without reading the sink first
    versions: dict[tuple[str, str], Version] = field(default_factory=dict)
    #: consecutive publish runs with a failed sink, per account (for the backoff)
    failures: dict[str, int] = field(default_factory=dict)

    def sync(
        self,
        account: Account,
        state: AccountState,
        *,
        tokens: TokenSet | None = None,
        new_sinks: bool = False,
    ) -> Published:
        """Write ``state``'s token to every sink (unchanged: no write).

        ``new_sinks``: the account's first token, so its sinks are not read first.
        """
        tokens = tokens or state.tokenset()
        if tokens is None:
            return Published()
        view = account.provider.consumer_view(tokens)
        written = unchanged = failed = 0
        for store, sink in account.sinks:
            key = (sink.store, sink.path)
            try:
                # as this process last left it; a first token's sinks are new
                known = self.versions.get(key, None if new_sinks else UNREAD)
                done = publish(store, sink, view, expected=known)
                self.versions[key] = done.version
                if done.changed:
                    written += 1
                else:
                    unchanged += 1
            except StoreError as exc:
                self.versions.pop(key, None)
                failed += 1
                _log.warning(
                    "publish failed",
                    account=account.name,
                    sink=f"{sink.store}:{sink.path}",
                    error=str(exc),
                )
        streak = 0
        if failed:
            streak = self.failures.get(account.name, 0) + 1
            self.failures[account.name] = streak
        else:
            self.failures.pop(account.name, None)
        return Published(written, unchanged, failed, streak)


class _Unread(enum.Enum):
    UNREAD = "unread"


#: for :func:`publish`: no version known, read the sink first
UNREAD: Final = _Unread.UNREAD


def publish(
    store: SecretStore,
    sink: Sink,
    view: ConsumerView,
    *,
    expected: Version | _Unread | None = UNREAD,
    attempts: int = 3,
) -> WriteResult:
    """Write the consumer view to one sink; retries a lost compare-and-set.

    ``expected`` is the version the sink is believed to be at (None: absent), as
    this process last left it; the write then goes against it without reading the
    sink first. A wrong belief costs one lost compare-and-set and a read, as a
    writer between a read and the write always did.
    """
    reads = 0  # a belief that proves wrong is not one of the attempts
    while True:
        if expected is UNREAD:
            try:
                current = store.read(sink.path, fmt=sink.format)
                expected = current.version if current else None
            except StoreDamaged as exc:
                # a sink is rendered from the state: replace what cannot be read (the
                # store refuses unless rotator owns it or the sink says adopt)
                expected = exc.version
            reads += 1
        try:
            return store.write(
                sink.path, view, expected_version=expected, fmt=sink.format, adopt=sink.adopt
            )
        except StoreConflict:
            if reads >= attempts:
                raise
            expected = UNREAD
