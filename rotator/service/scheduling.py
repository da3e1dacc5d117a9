"""APScheduler's worker pool for the daemon; the hosts' rate limits; and the start's
plan for overdue accounts. (The scheduler itself, with the accounts' planned runs,
is in service/heap.py.)

APScheduler is imported inside the functions: ``rotator --help`` and the
one-shot commands never pay for it.

:class:`StartPlan` collects what each account's first look found (overdue or
not) and, once every account has been looked at, spreads the overdue ones with
:func:`spread_overdue` (pure: most urgent first, at each host's rate): a
restart after an outage, with every account overdue, does not call every vendor
at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from rotator.politeness import Politeness, RateLimit, host_key, host_label
from rotator.schedule import is_due
from rotator.service.listing import unlisted
from rotator.service.workers import Workers

if TYPE_CHECKING:
    from rotator.config import Config
    from rotator.config.models import AccountSettings
    from rotator.rotation.accounts import Account
    from rotator.waits import Waiter

__all__ = [
    "SPREAD_WINDOW",
    "Overdue",
    "PlannedLimits",
    "StartPlan",
    "configure_politeness",
    "paused_host",
    "plan_limits",
    "pool_executor",
    "spread_overdue",
]

#: the start spreads overdue accounts over at most this long (see spread_overdue)
SPREAD_WINDOW = timedelta(minutes=5)
#: planned runs this close go straight to the worker pool, in the plan's order
_DIRECT = timedelta(seconds=1)
#: first runs waiting in the pool's queue at once (server.workers is at most 256)
_QUEUED = 256

_log = structlog.get_logger("rotator.daemon")
#: where the start's first runs go: the daemon's Workers (tests: a ThreadPoolExecutor)
Pool = ThreadPoolExecutor | Workers


def configure_politeness(politeness: Politeness, config: Config, waiter: Waiter) -> None:
    """Each vendor host's limit from the accounts' ``rate_limit`` (strictest wins, logged);
    the daemon's ``waiter``, so its stop ends a limiter wait."""
    # Accounts merged from one ``defaults`` share their rate_limit model (config sharing):
    # one RateLimit per distinct model, not one per account (100,000 at a start).
    limits: dict[int, tuple[object, RateLimit]] = {}

    def limit_of(settings: AccountSettings) -> RateLimit:
        model = settings.rate_limit
        known = limits.get(id(model))
        if known is None:  # the model is kept beside its limit, so its id stays its own
            known = limits[id(model)] = (model, model.limit())
        return known[1]

    planned = plan_limits(
        (name, s.vendor_urls(), limit_of(s)) for name, s in config.accounts.items()
    )
    politeness.configure(planned.limits)
    politeness.waiter = waiter
    for key, accounts in planned.conflicts.items():
        _log.warning(
            "accounts on one vendor host set different rate_limit; the strictest wins",
            host=host_label(key),
            accounts=list(accounts[:20]),
            limit=str(politeness.limit_for(key)),
        )


def pool_executor(pool: Pool) -> Any:
    """An APScheduler executor over ``pool``, which the daemon also submits first runs to."""
    from apscheduler.executors.pool import BasePoolExecutor

    class PoolExecutor(BasePoolExecutor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(pool)

    return PoolExecutor()


@dataclass(frozen=True, slots=True)
class PlannedLimits:
    """Each host's limit, and the hosts whose accounts asked for different ones
    (the strictest of each number wins: host -> the accounts that disagree)."""

    limits: dict[str, RateLimit]
    conflicts: dict[str, tuple[str, ...]]


def plan_limits(accounts: Iterable[tuple[str, Sequence[str], RateLimit]]) -> PlannedLimits:
    """(account, its vendor URLs, its limit) -> one limit per host, strictest wins."""
    limits: dict[str, RateLimit] = {}
    users: dict[str, dict[RateLimit, list[str]]] = {}
    # At a start of 100,000 accounts most share a few URL tuples and limits: each
    # tuple's host keys are parsed once, each (host, limit) pair is merged once.
    keys_of: dict[tuple[str, ...], frozenset[str]] = {}
    for account, given, limit in accounts:
        urls = tuple(given)  # the same object when it is one already
        keys = keys_of.get(urls)
        if keys is None:
            keys = keys_of[urls] = frozenset(host_key(url) for url in urls)
        for key in keys:
            by_limit = users.get(key)
            if by_limit is None:
                by_limit = users[key] = {}
            names = by_limit.get(limit)
            if names is None:
                names = by_limit[limit] = []
                limits[key] = limits[key].strictest(limit) if key in limits else limit
            names.append(account)
    conflicts = {
        key: tuple(sorted(a for names in by_limit.values() for a in names))
        for key, by_limit in users.items()
        if len(by_limit) > 1
    }
    return PlannedLimits(limits, conflicts)


def paused_host(politeness: Politeness, account: Account) -> datetime | None:
    """When the account's job may run, if its vendor host asked for a pause (429/503):
    the job waits in the schedule, not in a worker holding the account's lease.

    The deferred jobs of a host are spaced at its rate after the pause, in the
    order they were deferred; their lateness still counts from the planned time.
    """
    urls = account.settings.vendor_urls()
    if not urls or politeness.hold_off(urls) <= 0:
        return None
    return datetime.now(UTC) + timedelta(seconds=politeness.deferral_slot(urls[0]))


class StartPlan:
    """The start's first runs: overdue accounts wait for the plan, the others run now.

    Each first run looks at the account's state; the last look computes the plan
    (:func:`spread_overdue`) and schedules the overdue accounts by it, their
    lateness counted from the start.
    """

    def __init__(
        self,
        accounts: Mapping[str, Account],
        politeness: Politeness,
        job: Callable[..., None],
        schedule: Callable[..., None],
        *,
        then: Callable[[], None] = lambda: None,
    ) -> None:
        self._accounts = accounts
        #: called once, after the last first run scheduled the plan (the daemon: gc.freeze)
        self._then = then
        #: set once every account was looked at and the plan scheduled (and ``then`` called)
        self.finished = threading.Event()
        self._left = len(accounts)
        self._now = datetime.now(UTC)
        self._politeness = politeness
        self._limits = politeness.limit_for
        self._job = job
        self._schedule = schedule
        self._overdue: list[Overdue] = []
        self._lock = threading.Lock()
        self._pool: Pool | None = None
        self._names: Iterator[str] = iter(())
        #: accounts whose state a listing of its directory showed absent (not read)
        self._unlisted: frozenset[str] = frozenset()

    def start(self, pool: Pool) -> None:
        """Every account's first run, straight to the pool (no date job per account).

        At most :data:`_QUEUED` of them wait in the pool's queue at a time; each one
        done queues the next. A queued future is about 1.8 KB: 100,000 at once were
        175 MB, the daemon's peak (bench/results.md, "Eighth round").
        """
        self._pool = pool
        # the daemon's Workers take a call without a future (one lock and one object less)
        self._submit = pool.call if isinstance(pool, Workers) else pool.submit
        self._names = iter(list(self._accounts))
        self._unlisted = unlisted(self._accounts)
        if not self._accounts:
            # nothing to look at (a replica's empty first share): finished at once, so
            # nothing that waits for the plan waits for ever
            self._then()
            self.finished.set()
            return
        for _ in range(min(_QUEUED, len(self._accounts))):
            self._queue_next()

    def _queue_next(self) -> None:
        with self._lock:
            name = next(self._names, None)
        if name is None or self._pool is None:
            return
        try:
            self._submit(self._first_then_next, name)
        except RuntimeError:  # the pool is shut down: the daemon is stopping
            return

    def _first_then_next(self, name: str) -> None:
        try:
            self.first_run(name)
        finally:
            self._queue_next()

    def more(
        self, accounts: Mapping[str, Account], *, then: Callable[[], None] = lambda: None
    ) -> StartPlan:
        """A plan like this one for other accounts, started now (a replica's gained share):
        the same job, schedule, limits and pool; its own start time and overdue list."""
        plan = StartPlan(accounts, self._politeness, self._job, self._schedule, then=then)
        if self._pool is not None:
            plan.start(self._pool)
        return plan

    def first_run(self, name: str) -> None:
        overdue = None
        try:
            looked = self._accounts.get(name)
            overdue = self.look(looked)
            if overdue is None:
                try:
                    self._job(name, planned=self._now)
                finally:
                    if looked is not None:  # a job that did not rotate (a paused host)
                        looked.drop_hand_off()
        except Exception as exc:  # a future's exception would go unseen
            _log.exception("first run crashed", account=name, error=repr(exc))
        finally:
            # Slots within a second go to the pool in order (the host's gate holds them
            # to its rate; 10,000 date jobs would each wake the scheduler), later ones
            # become date jobs.
            soon = datetime.now(UTC) + _DIRECT
            plan, last = self._looked(overdue)
            for account, when in plan:
                if when <= soon and self._pool is not None:
                    try:
                        self._pool.submit(self._job, account, planned=self._now)
                    except RuntimeError:  # the pool is shut down: the daemon is stopping
                        break
                else:
                    self._schedule(account, when, planned=self._now)
            if last:
                self._accounts = {}  # a reload may drop some: the plan must not keep them alive
                self._then()
                self.finished.set()

    def look(self, account: Account | None) -> Overdue | None:
        """The account as :class:`Overdue` when its first run would call the vendor now.

        A failed account, one not due, or one whose state cannot be read runs at
        once (its run decides: it calls no vendor, or reports the store's error).

        **One state read per account per start.** What the look read is handed to
        the account's first run (:meth:`Account.hand_off`), which then reads no
        more: on Vault a new account costs its create-only state write and its
        sink write, not two reads besides. The run's read under the account's lock
        is what its decisions rest on, so the look hands on only a belief that a
        compare-and-set catches before anything could be lost or spent twice:

        - a run that follows at once (not overdue: ``first_run`` calls the job in
          this thread, and drops what the job did not take): the belief is moments
          old. A refresh token in it is spent only after the lease, written by
          compare-and-set on the version read, so a state another process wrote
          since refuses the lease (busy, looked at again); every state write is a
          compare-and-set on that version too, so nothing is ever overwritten;
        - an overdue account whose state is *absent* (a new account: the burst),
          whatever its wait for its slot: an absent state holds no refresh token to
          spend and no token to publish; its first write is a create-only one
          (``cas=0``), which a state another process created meanwhile refuses,
          and the run then reads that state afresh (a grant with a refresh token
          needs none to be stored: the provider asks for ``rotator import``, the
          run then adopts the stored grant). For a grant that holds no refresh
          token (client credentials, password), that race costs one extra vendor
          call, and the run's write lands on top of the other's by compare-and-set;
        - a state a listing of its directory showed absent (:func:`unlisted`) is
          not read at all: the same absent belief, taken at the start;
        - an overdue account with a stored state is read again by its run (its
          slot may be minutes away, and 100,000 stored states are not kept in
          memory for it): a restart after an outage pays one read more per account.
        """
        if account is None:
            return None
        try:
            if account.name in self._unlisted:
                state, version = account.absent_state(), None
            else:
                state, version = account.read_state(fresh=True)
        except Exception:  # the run itself reads again and reports
            return None
        if state.failed or not is_due(
            self._now,
            has_token=state.access_token is not None,
            next_refresh_at=state.next_refresh_at,
        ):
            account.hand_off(state, version)  # the run follows at once (first_run)
            return None
        if version is None:
            account.hand_off(state, version)
        urls = account.settings.vendor_urls()
        return Overdue(account.name, host_key(urls[0]) if urls else "", state.expires_at)

    def looked(self, overdue: Overdue | None) -> list[tuple[str, datetime]]:
        """One account looked at; once all were, the plan (account, when), else []."""
        return self._looked(overdue)[0]

    def _looked(self, overdue: Overdue | None) -> tuple[list[tuple[str, datetime]], bool]:
        """The plan (or []) and whether this was the last account looked at."""
        with self._lock:
            if overdue is not None:
                self._overdue.append(overdue)
            self._left -= 1
            if self._left != 0:
                return [], False
            found, self._overdue = self._overdue, []
        plan = spread_overdue(found, self._now, self._limits)
        if plan:
            _log.info("overdue accounts spread", count=len(plan), last=plan[-1][1].isoformat())
        return plan, True


# --- the start's plan: pure --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overdue:
    """An account that is due now: its host key and its access token's expiry."""

    account: str
    host: str
    expires_at: datetime | None


_MICROSECOND = timedelta(microseconds=1)


def spread_overdue(
    overdue: Iterable[Overdue],
    now: datetime,
    limits: Callable[[str], RateLimit],
    window: timedelta = SPREAD_WINDOW,
) -> list[tuple[str, datetime]]:
    """When each overdue account runs: per host, most urgent first, spaced evenly.

    Urgency: no token or an expired one first, then the nearest expiry. Each
    host's accounts are spaced at its sustained rate (1/per_second), squeezed to
    fit ``min(window, time to the earliest expiry still ahead)``: spreading must
    never push an account past its own expiry (the list is sorted by expiry, so
    the last slot, within the window, comes before every expiry still ahead).
    When squeezed below the rate, the host's bucket holds the calls to its rate.
    Returns (account, when) sorted by when.
    """
    by_host: dict[str, list[Overdue]] = {}
    for item in overdue:
        by_host.setdefault(item.host, []).append(item)
    plan: list[tuple[str, datetime]] = []
    for host, items in by_host.items():
        items.sort(key=lambda o: _urgency(o, now))
        ahead = [o.expires_at - now for o in items if o.expires_at and o.expires_at > now]
        fit = min([window, *ahead])
        gap = timedelta(seconds=1 / limits(host).per_second)
        if len(items) > 1 and gap * (len(items) - 1) > fit:
            # floor, in whole microseconds: timedelta division rounds to the nearest,
            # and (n - 1) rounded-up gaps could put the last slot past the expiry
            gap = timedelta(microseconds=(fit // _MICROSECOND) // (len(items) - 1))
        plan.extend((o.account, now + gap * i) for i, o in enumerate(items))
    plan.sort(key=lambda pair: pair[1])
    return plan


def _urgency(item: Overdue, now: datetime) -> tuple[int, float]:
    if item.expires_at is None:
        return (0, -math.inf)
    left = (item.expires_at - now).total_seconds()
    return (0, left) if left <= 0 else (1, left)
