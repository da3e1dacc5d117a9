"""Delivering events off the rotation's thread: a bounded queue and its workers.

A rotation (or the first run, or a reload's retry) hands its result to
:meth:`Notifications.after_rotation`, an :class:`~rotator.rotation.result.Observer`:
the events the run made (:func:`rotator.notify.events.events_of`) that some
entry of the account listens to are put on a bounded queue without waiting. A
full queue drops the event, with a log line and ``outcome="dropped"`` in the
metric: a consumer missing one notification is bad, a rotation waiting on a
consumer is worse. Two worker threads take events, claim each one
(:mod:`rotator.notify.claims`) and run every entry that listens to it, so a
hanging ``exec`` holds up one worker for its ``timeout``, never a rotation.

The commands (``rotator refresh``, ``import``) call :meth:`Notifications.deliver`
instead: at once, in their own thread, bounded by each entry's timeout and
attempts, after their work is done.

At the daemon's stop (:meth:`Notifications.close`) the queue gets a bounded time
to empty (:data:`STOP_WAIT`); what is left is dropped and counted, and webhook
retries still waiting give up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from rotator.notify.errors import NotifyError
from rotator.notify.events import Event, events_of
from rotator.notify.exec import run_exec
from rotator.notify.webhook import post_webhook
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.config.models import AccountSettings, ExecNotify, WebhookNotify
    from rotator.notify.claims import StoreClaims
    from rotator.rotation.accounts import Account
    from rotator.rotation.result import RotationResult

__all__ = ["QUEUE_SIZE", "STOP_WAIT", "Notifications", "Outcome"]

_log = structlog.get_logger("rotator.notify")
#: events waiting for delivery, at most (then new ones are dropped)
QUEUE_SIZE = 1000
#: at stop, how long queued notifications may take to go out (seconds)
STOP_WAIT = 10.0
_WORKERS = 2

#: (account, entry type, event, outcome) -> None; feeds rotator_notify_total
Outcome = Callable[[str, str, str, str], None]
_Entries = tuple["ExecNotify | WebhookNotify", ...]
#: the events of one run, delivered in order by one worker (rotated before recovered)
_Item = tuple[tuple[Event, _Entries], ...]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Notifications:
    """Turns job runs into events and delivers them once per replica set. Thread-safe."""

    def __init__(
        self,
        accounts: Callable[[], Mapping[str, Account]],
        *,
        claims: StoreClaims | None,
        replica: str,
        on_outcome: Outcome | None = None,
        clock: Callable[[], datetime] = _utcnow,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._accounts = accounts
        self._claims = claims
        self.replica = replica
        self._on_outcome = on_outcome
        self.clock = clock
        #: backoffs between webhook attempts; stopped at the end of :meth:`close`
        self.waiter = Waiter()
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self._workers: list[threading.Thread] = []
        self._guard = threading.Lock()
        self._closed = False

    # -- emitting --------------------------------------------------------------------

    def after_rotation(self, result: RotationResult) -> None:
        account = self._accounts().get(result.account)
        if account is None or not account.settings.notify:
            return  # the common case: costs one lookup
        self.emit(events_of(result, account.settings, self.clock()), account.settings)

    def emit(self, events: Sequence[Event], settings: AccountSettings) -> None:
        """Queue ``events`` (one run's, in order) for the entries listening; never waits."""
        item = tuple((e, entries) for e in events if (entries := _listening(e, settings)))
        if not item:
            return
        with self._guard:
            closed = self._closed
            if not closed:
                self._start_workers()
        if closed:
            self._dropped(item, "the daemon is stopping")
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped(item, f"{self._queue.maxsize} notifications wait already")

    def deliver_result(self, result: RotationResult) -> None:
        """:meth:`after_rotation`, delivered now in this thread (``rotator refresh``)."""
        account = self._accounts().get(result.account)
        if account is not None and account.settings.notify:
            for event in events_of(result, account.settings, self.clock()):
                self.deliver(event, account.settings)

    def deliver(self, event: Event, settings: AccountSettings) -> None:
        """Deliver ``event`` now, in this thread (the one-off commands)."""
        entries = _listening(event, settings)
        if entries:
            self._deliver(event, entries)

    # -- delivering ------------------------------------------------------------------

    def _start_workers(self) -> None:
        while len(self._workers) < _WORKERS:
            thread = threading.Thread(
                target=self._work, name=f"rotator-notify_{len(self._workers)}", daemon=True
            )
            self._workers.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._closed:
                    return  # stopped and drained
                continue
            try:
                for event, entries in item:
                    self._deliver(event, entries)
            except Exception as exc:  # a delivery must never end its worker
                _log.error("notify delivery crashed", error=repr(exc))
            finally:
                self._queue.task_done()

    def _deliver(self, event: Event, entries: Sequence[ExecNotify | WebhookNotify]) -> None:
        if self._claims is not None and not self._claims.claim(event):
            _log.info(
                "another worker delivers this notification",
                account=event.account,
                notify_event=event.type,
            )
            for entry in entries:
                self._count(event, entry.type, "claimed_elsewhere")
            return
        for entry in entries:
            started = time.monotonic()
            try:
                if entry.type == "exec":
                    run_exec(entry, event)
                else:
                    post_webhook(
                        entry, event, replica=self.replica, waiter=self.waiter, clock=self.clock
                    )
            except NotifyError as exc:
                _log.warning(
                    "notification not delivered",
                    account=event.account,
                    notify_event=event.type,
                    notify=entry.type,
                    error=str(exc),
                )
                self._count(event, entry.type, "failed")
                continue
            _log.info(
                "notified",
                account=event.account,
                notify_event=event.type,
                notify=entry.type,
                event_id=event.id,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            self._count(event, entry.type, "delivered")

    def _dropped(self, item: _Item, why: str) -> None:
        for event, entries in item:
            _log.error(
                "notification dropped",
                account=event.account,
                notify_event=event.type,
                reason=why,
            )
            for entry in entries:
                self._count(event, entry.type, "dropped")

    def _count(self, event: Event, kind: str, outcome: str) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(event.account, kind, event.type, outcome)
            except Exception as exc:  # a metric must never stop a delivery
                _log.error("notify metric failed", error=repr(exc))

    # -- stopping --------------------------------------------------------------------

    def close(self) -> None:
        """The daemon's stop: :meth:`drain` for :data:`STOP_WAIT` seconds."""
        self.drain(STOP_WAIT)

    def drain(self, timeout: float) -> bool:
        """Stop taking events; give the queued ones ``timeout`` s; True when all went out."""
        with self._guard:
            self._closed = True
        deadline = time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks and time.monotonic() < deadline:
                done.wait(max(0.0, min(0.2, deadline - time.monotonic())))
            clean = self._queue.unfinished_tasks == 0
        self.waiter.stop()  # webhook backoffs in progress give up now
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._dropped(item, f"not sent within {timeout:g}s of the stop")
            self._queue.task_done()
        return clean


def _listening(event: Event, settings: AccountSettings) -> tuple[ExecNotify | WebhookNotify, ...]:
    """The account's entries that listen to ``event`` (none: nothing is queued)."""
    return tuple(entry for entry in settings.notify if event.type in entry.events)
