"""Sending alerts, once: the dispatcher and its memory of what was sent.

:class:`Dispatcher` evaluates an account (:func:`rotator.alerts.rules.evaluate`),
decides against what was already sent (:func:`rotator.alerts.rules.plan`), and sends
new, repeated and resolved alerts to the log and every channel
(:mod:`rotator.alerts.channels`), retrying a failing channel.

What was sent is an :class:`AlertMemory`. The daemon keeps it in the account's
state store under ``alerts/<account>`` (:class:`StoreAlertMemory`), so a restart
does not re-send. Why a record of its own rather than the ``alerts`` field of the
state record: the state record is written by rotation with compare-and-set on
the version it read; a sweep writing alert bookkeeping there would make a
rotation in flight lose its compare-and-set. A separate record never contends
with the grant, and its own compare-and-set lets two replicas claim an alert so
it goes out once. A record a newer release wrote
(:data:`rotator.records.ALERT_RECORD`) is neither read nor written over: the
account's alerts are decided from this process's memory, as in a store outage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import structlog

from rotator.alerts.channels.base import AlertChannelError, Channel
from rotator.alerts.rules import Alert, Sent, Severity, evaluate, plan
from rotator.errors import StoreConflict, StoreError
from rotator.locks import NamedLocks
from rotator.records import ALERT_RECORD, MARK_KEYS
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.backends.base import SecretStore
    from rotator.config.models import AccountSettings, AlertsSettings
    from rotator.state import AccountState

__all__ = [
    "AlertMemory",
    "Channel",
    "Dispatcher",
    "MemoryAlertMemory",
    "StoreAlertMemory",
    "alert_record_path",
]

_log = structlog.get_logger("rotator.alerts")
#: the longest a receiver's Retry-After holds a channel's next attempt back
_LONGEST_PAUSE = 300.0

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- memory of what was sent ----------------------------------------------------------


def alert_record_path(account: str) -> str:
    return f"alerts/{account}"


class AlertMemory(Protocol):
    """Where the dispatcher remembers what it sent, per account."""

    def load(self, account: str) -> tuple[dict[str, Sent], object]: ...

    def save(self, account: str, sent: Mapping[str, Sent], token: object) -> bool:
        """Store ``sent`` if nobody else did since ``load`` returned ``token``; False if lost."""
        ...


class MemoryAlertMemory:
    """In-process memory: for tests, and for embedding the dispatcher without a store."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[dict[str, Sent], int]] = {}

    def load(self, account: str) -> tuple[dict[str, Sent], object]:
        sent, version = self._data.get(account, ({}, 0))
        return dict(sent), version

    def save(self, account: str, sent: Mapping[str, Sent], token: object) -> bool:
        _, version = self._data.get(account, ({}, 0))
        if version != token:
            return False
        self._data[account] = (dict(sent), version + 1)
        return True


class StoreAlertMemory:
    """``alerts/<account>`` in the account's state store, written with compare-and-set.

    Two replicas sweeping the same account race on this record; the one that loses
    the compare-and-set does not send, so an alert goes out once.
    """

    def __init__(self, store_for: Callable[[str], SecretStore]) -> None:
        self._store_for = store_for

    def load(self, account: str) -> tuple[dict[str, Sent], object]:
        record = self._store_for(account).read(alert_record_path(account))
        if record is None:
            return {}, None
        data = record.strings()
        ALERT_RECORD.check(account, data)  # a newer release's record: NewerFormat, unread
        sent: dict[str, Sent] = {}
        for key, text in data.items():
            if key in MARK_KEYS:
                continue
            try:
                sent[key] = Sent.load(text)
            except (ValueError, KeyError, TypeError):
                _log.warning("ignoring a damaged alert record entry", account=account, key=key)
        return sent, record.version

    def save(self, account: str, sent: Mapping[str, Sent], token: object) -> bool:
        data = {**ALERT_RECORD.mark(account), **{key: value.dump() for key, value in sent.items()}}
        try:
            self._store_for(account).write(
                alert_record_path(account),
                data,
                expected_version=token,  # type: ignore[arg-type]
            )
        except StoreConflict:
            return False
        return True


# --- dispatch -------------------------------------------------------------------------


@dataclass
class Dispatcher:
    """Evaluates, decides against memory, sends. Thread-safe per account.

    ``waiter`` pauses between attempts of a failing channel: the daemon gives it
    its stop event, so a stop ends the retries at once (each remaining channel
    still gets its one attempt: the alert is claimed, and one attempt is no wait);
    tests call :func:`rotator.waits.set_testing`. ``on_sent(channel, kind)`` feeds
    ``rotator_alerts_sent_total``.
    """

    alerts: AlertsSettings
    channels: Sequence[Channel]
    memory: AlertMemory
    clock: Clock = _utcnow
    attempts: int = 3
    backoff: float = 2.0
    waiter: Waiter = field(default_factory=Waiter)
    on_sent: Callable[[str, str], None] | None = None
    #: a fresh signed console link for an account (None: it cannot be authorized);
    #: None when the console is off
    link_for: Callable[[str], str | None] | None = None
    #: one lock per account, alive only while a check holds or waits for it
    _locks: NamedLocks = field(default_factory=NamedLocks, init=False, repr=False)
    #: accounts known to have nothing sent: a healthy account costs no store read
    _quiet: set[str] = field(default_factory=set, init=False, repr=False)
    #: what this process sent, per account: the fallback while the store is down
    _local: dict[str, dict[str, Sent]] = field(default_factory=dict, init=False, repr=False)
    #: accounts whose record lacks what this process sent during a store outage
    _unsynced: set[str] = field(default_factory=set, init=False, repr=False)

    def settled(self, state: AccountState, settings: AccountSettings) -> bool:
        """True when :meth:`check` would do nothing: nothing sent and nothing holds.

        No I/O and no lock, for the rotation's own thread: a healthy account's check
        then costs no hand-off to another thread.
        """
        return state.account in self._quiet and not evaluate(
            state, settings, self.alerts, self.clock(), console=self.link_for is not None
        )

    def check(self, state: AccountState, settings: AccountSettings) -> list[Alert]:
        """Evaluate one account and send what is due. Never raises; returns what was sent."""
        try:
            with self._locks(state.account):
                return self._check(state, settings)
        except Exception as exc:  # an alert problem must never stop rotation or the sweep
            _log.error(
                "alert evaluation failed",
                account=state.account,
                error=f"{type(exc).__name__}: {exc}",
            )
            return []

    def _check(self, state: AccountState, settings: AccountSettings) -> list[Alert]:
        account = state.account
        now = self.clock()
        conditions = evaluate(state, settings, self.alerts, now, console=self.link_for is not None)
        if not conditions and account in self._quiet:
            return []
        durable = True
        try:
            sent, token = self.memory.load(account)
            if account in self._unsynced:
                # Back from an outage: what was sent meanwhile is not in the record yet.
                sent = {**self._local.get(account, {}), **sent}
        except StoreError as exc:
            # The store is down, which is when alerts matter most: decide from what
            # this process sent (a restart during the outage may repeat an alert once).
            _log.warning(
                "alert record unreadable; deciding from this process's memory",
                account=account,
                error=str(exc),
            )
            sent, token, durable = dict(self._local.get(account, {})), None, False
        due, after = plan(
            account, settings.provider, conditions, sent, now=now, repeat=self.alerts.repeat
        )
        if not sent and not conditions:
            self._quiet.add(account)
            return []
        if not due and after == sent and account not in self._unsynced:
            return []
        persisted = False
        if durable:
            # Claim first, then send: a replica that lost the claim does not send twice.
            try:
                persisted = self.memory.save(account, after, token)
            except StoreError as exc:
                _log.warning("alert record not written", account=account, error=str(exc))
            else:
                if not persisted:
                    _log.info("another worker sent these alerts", account=account)
                    return []
        if persisted:
            self._unsynced.discard(account)
        else:
            self._unsynced.add(account)
        self._local[account] = after
        if after:
            self._quiet.discard(account)
        else:
            self._quiet.add(account)
        due = [self._with_link(alert) for alert in due]  # a fresh link per sending
        for alert in due:
            delivered = self._deliver(alert)
            if not delivered and self.channels:
                _log.error(
                    "no alert channel took the alert; it will be sent again at the next check",
                    account=alert.account,
                    kind=str(alert.kind),
                )
                self._unclaim(account, alert, sent)
        return due

    def _unclaim(self, account: str, alert: Alert, sent_before: Mapping[str, Sent]) -> None:
        key = str(alert.kind)

        def undo(record: dict[str, Sent]) -> dict[str, Sent]:
            if key in sent_before:
                record[key] = sent_before[key]
            else:
                record.pop(key, None)
            return record

        self._local[account] = undo(dict(self._local.get(account, {})))
        self._quiet.discard(account)
        try:
            current, token = self.memory.load(account)
            self.memory.save(account, undo(current), token)
        except StoreError as exc:
            _log.warning("cannot update the alert record", account=account, error=str(exc))

    def _with_link(self, alert: Alert) -> Alert:
        """The alert with a fresh re-authorization link, when it calls for one."""
        if self.link_for is None or alert.status != "firing" or not alert.reauthorize:
            return alert
        try:
            link = self.link_for(alert.account)
        except Exception as exc:  # an alert goes out without its link rather than not at all
            _log.error("no re-authorization link", account=alert.account, error=type(exc).__name__)
            return alert
        return replace(alert, reauthorize_url=link)

    def _deliver(self, alert: Alert) -> bool:
        _log.log(
            _LEVELS[alert.severity],
            alert.summary,
            account=alert.account,
            alert=str(alert.kind),
            status=alert.status,
            repeat=alert.repeat,
        )
        self._count("log", alert)
        delivered = False
        for channel in self.channels:
            delay = 1.0
            for attempt in range(1, self.attempts + 1):
                try:
                    channel.send(alert)
                except Exception as exc:
                    _log.warning(
                        "alert channel failed",
                        channel=channel.name,
                        account=alert.account,
                        attempt=attempt,
                        attempts=self.attempts,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    pause = (
                        exc.pause(delay, longest=_LONGEST_PAUSE)
                        if isinstance(exc, AlertChannelError)
                        else delay
                    )
                    if attempt < self.attempts and self.waiter.sleep(pause):
                        delay *= self.backoff
                        continue
                    break
                self._count(channel.name, alert)
                delivered = True
                break
        return delivered

    def _count(self, channel: str, alert: Alert) -> None:
        if self.on_sent is not None:
            self.on_sent(channel, str(alert.kind))


_LEVELS = {Severity.INFO: 20, Severity.WARNING: 30, Severity.CRITICAL: 40}
