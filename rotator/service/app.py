"""The one place that wires a configuration into running parts.

config -> stores -> spool -> accounts -> rotator -> daemon -> monitor. The
commands (``refresh``, ``import``, ``authorize``, ``status``) build their rotator
with :func:`build_rotator`, ``rotator run`` its daemon with :func:`build_daemon`,
so each of them opens stores and the spool the same way; the daemon itself is
lifecycle only and gets :func:`rewire` to rebuild its parts on SIGHUP. The
daemon and the monitor never import each other: the monitor sees the daemon
through :class:`~rotator.service.monitor.Supervised` and is hooked in here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from rotator.backends.base import SecretStore
from rotator.backends.registry import open_store
from rotator.config import Config, load_config, state_store
from rotator.errors import scrub_values
from rotator.rotation.spool import Spool, spool_dir
from rotator.rotation.spooldir import spool_place
from rotator.secrets import SecretRef, resolve

if TYPE_CHECKING:
    from rotator.http import HttpClients
    from rotator.notify import Notifications
    from rotator.rotation.accounts import Account
    from rotator.rotation.authorization import Authorized
    from rotator.rotation.rotator import Observer, Rotator
    from rotator.service.console.routes import Console
    from rotator.service.daemon import Daemon, Rewired
    from rotator.service.metrics import Metrics
    from rotator.service.monitor import Monitor

__all__ = [
    "Service",
    "announce_reauthorized",
    "build_console",
    "build_daemon",
    "build_notifications",
    "build_rotator",
    "build_service",
    "open_spool",
    "open_stores",
    "rewire",
    "store_settings_of",
]

_log = structlog.get_logger("rotator.daemon")


def open_stores(config: Config) -> dict[str, SecretStore]:
    """Every configured store, opened (SDK clients are built lazily by each store)."""
    return {name: open_store(name, settings) for name, settings in config.stores.items()}


def open_spool(config: Config, *, daemon: bool = False) -> Spool:
    """The encrypted write-ahead spool, where :func:`~rotator.rotation.spooldir.spool_place`
    puts it for the daemon and every command alike: a command is refused (ConfigError)
    where no daemon would find its spool; the daemon opens its own and says so."""
    place = spool_place(config.server.spool_dir, daemon=daemon)
    if place.unshared is not None:
        _log.warning(
            "the spool is in a per-user directory no one-off command will find",
            spool=str(place.directory),
            reason=place.unshared,
            fix="set server.spool_dir (e.g. /var/lib/rotator/spool), or StateDirectory=rotator "
            "in the unit",
        )
    directory = place.directory
    key = resolve(config.server.spool_key).reveal() if config.server.spool_key else None
    return Spool.open(directory, key)


def store_settings_of(config: Config, account: str) -> list[Any]:
    """The settings of every store an account touches (its state store and sinks)."""
    names = {state_store(config, account)} | {s.store for s in config.accounts[account].sinks}
    return [config.stores[n] for n in sorted(names)]


def build_rotator(
    config: Config,
    *,
    stores: dict[str, SecretStore] | None = None,
    http: HttpClients | None = None,
    spool: bool = True,
    observers: Sequence[Observer] = (),
    daemon: bool = False,
) -> Rotator:
    """A rotator over ``config``'s accounts (``spool=False``: read-only use, no spool;
    ``daemon``: the spool is its own, opened where it resolves, never refused)."""
    from rotator.http import HttpClients
    from rotator.rotation.accounts import Accounts
    from rotator.rotation.rotator import Rotator

    # the spool first: where it cannot be (spool_dir refuses), nothing else is opened
    opened = open_spool(config, daemon=daemon) if spool else None
    stores = open_stores(config) if stores is None else stores
    return Rotator(
        accounts=Accounts(config, stores),
        http=http if http is not None else HttpClients(max_connections=4),
        observers=list(observers),
        spool=opened,
    )


def build_notifications(rotator: Rotator, *, metrics: Metrics | None = None) -> Notifications:
    """Consumer notifications for ``rotator``'s accounts, claimed in their state stores.

    The accounts are looked up at each event, so a reload's new ``notify:`` entries
    apply from the next event on.
    """
    from rotator.notify import Notifications, StoreClaims

    def state_store_of(account: str) -> SecretStore:
        return rotator.accounts[account].state_store

    return Notifications(
        lambda: rotator.accounts,
        claims=StoreClaims(state_store_of),
        replica=rotator.owner,
        on_outcome=metrics.notified if metrics is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Service:
    """A daemon and the monitor hooked into it."""

    daemon: Daemon
    monitor: Monitor

    def run_forever(self) -> int:
        return self.daemon.run_forever()


def build_service(
    config_path: str,
    *,
    config: Config | None = None,
    observers: Sequence[Observer] = (),
    environ: Mapping[str, str] | None = None,
) -> Service:
    """The daemon for ``config_path``, its monitor attached (the port bound, if any)."""
    from rotator.coredump import core_dumps_forbidden, forbid_core_dumps
    from rotator.http import HttpClients
    from rotator.service.daemon import Daemon
    from rotator.service.monitor import Monitor

    forbid_core_dumps()  # the daemon holds every account's secrets
    if core_dumps_forbidden():
        _log.info("core dumps off", dumpable=False, core_limit=0)
    else:
        _log.warning(
            "core dumps could not be switched off",
            fix="set LimitCORE=0 (systemd) or ulimit -c 0 before starting rotator",
        )
    config = config if config is not None else load_config(config_path)
    stores = open_stores(config)
    http = HttpClients()
    rotator = build_rotator(config, stores=stores, http=http, observers=observers, daemon=True)
    daemon = Daemon(
        config_path, config=config, stores=stores, rotator=rotator, http=http, rewire=rewire
    )
    console = build_console(config, rotator)
    # alerts, metrics and health, sd_notify: observes rotations, hooks the lifecycle
    monitor = Monitor(
        daemon,
        environ=environ,
        pages=console.handle if console is not None else None,
        links=console.link_for if console is not None else None,
    )
    rotator.observers.append(monitor)
    if monitor.metrics is not None:
        monitor.metrics.watch_vendors(http.politeness)
    daemon.hooks_on_start.append(monitor.on_start)
    daemon.hooks_before_reload.append(monitor.before_reload)
    daemon.hooks_after_reload.append(monitor.after_reload)
    daemon.hooks_on_stop.append(monitor.on_stop)
    # consumer notifications: after the sinks, off the rotation's thread; at stop they
    # get their own bounded wait once the rotations in flight are done (their events too)
    notifications = build_notifications(rotator, metrics=monitor.metrics)
    rotator.observers.append(notifications)
    if console is not None:  # a grant from a console link is a `reauthorized` event
        console.on_reauthorized = announce_reauthorized(notifications, rotator)
    daemon.hooks_on_drained.append(notifications.close)
    if config.server.coordination is not None:
        from rotator.service.coordination import join_replicas

        join_replicas(config.server.coordination, daemon, monitor)
    return Service(daemon, monitor)


def announce_reauthorized(
    notifications: Notifications, rotator: Rotator
) -> Callable[[Authorized], None]:
    """Queue ``reauthorized`` for the account's ``notify:`` entries (never waits)."""

    def announce(done: Authorized) -> None:
        from rotator.notify import reauthorized

        account = rotator.accounts.get(done.account)
        grant = done.state.refresh_token
        if account is None or not account.settings.notify or grant is None:
            return
        event = reauthorized(done.state, account.settings, done.tokens.issued_at, grant.reveal())
        notifications.emit([event], account.settings)

    return announce


def build_console(config: Config, rotator: Rotator) -> Console | None:
    """The console (``server.console``) over ``rotator``; None when it is off.

    Its signing key is ``signing_key``, else a 0600 file beside the spool key."""
    from rotator.service.console.routes import build_console as build

    settings = config.server.console
    if settings is None:
        return None
    key_dir = (
        rotator.spool.directory if rotator.spool is not None else spool_dir(config.server.spool_dir)
    )
    return build(settings, rotator, key_dir)


def build_daemon(config_path: str, **kwargs: Any) -> Daemon:
    """:func:`build_service`'s daemon (``rotator run``: ``build_daemon(path).run_forever()``)."""
    return build_service(config_path, **kwargs).daemon


def rewire(
    config_path: str,
    running: Config,
    running_stores: Mapping[str, SecretStore],
    *,
    running_accounts: Mapping[str, Account] | None = None,
) -> Rewired:
    """The parts of the configuration now in ``config_path`` (and its included files).

    Only what changed is rebuilt. Unchanged stores are kept (their login, pool
    and keep-alive carry on); only new or changed ones are opened, and closed
    again if the reload fails. An account whose settings and stores are
    unchanged keeps its running :class:`Account` (its provider instance, and so
    whatever that caches); the others are built from the new configuration when
    first asked for (:class:`~rotator.rotation.accounts.Accounts`: building
    cannot fail once the file is checked). Any failure at all (a bad file, an
    included file broken, ``timeout: .inf`` overflowing, a store that does not open) is a
    ``ReloadRefused`` whose message is bounded and holds no secret the running
    configuration knows.
    """
    from rotator.rotation.accounts import Accounts
    from rotator.service.daemon import ReloadRefused, Rewired, refusal_reason

    running_accounts = running_accounts or {}
    opened: dict[str, SecretStore] = {}
    try:
        config = load_config(config_path)
        stores: dict[str, SecretStore] = {}
        for name, settings in config.stores.items():
            if name in running_stores and running.stores.get(name) == settings:
                stores[name] = running_stores[name]
            else:
                opened[name] = stores[name] = open_store(name, settings)
        unchanged = {
            name
            for name in config.accounts
            if name in running_accounts and _unchanged(name, config, running, stores)
        }
        # The objects built so far carry on; the others (a reload before the start's
        # first runs built them all) are built from the new settings when asked for.
        built = (
            running_accounts.built()
            if isinstance(running_accounts, Accounts)
            else dict(running_accounts)
        )
        kept = {name: account for name, account in built.items() if name in unchanged}
        accounts = Accounts(config, stores, built=kept)
        changed = tuple(n for n in config.accounts if n in running.accounts and n not in unchanged)
    except Exception as exc:
        for store in opened.values():
            store.close()
        reason = scrub_values(refusal_reason(exc), _local_secret_values(running))
        raise ReloadRefused(reason) from None
    return Rewired(config, stores, accounts, tuple(opened.values()), changed)


def _unchanged(
    name: str, config: Config, running: Config, stores: Mapping[str, SecretStore]
) -> bool:
    """The account reads and writes the same places, with the same settings and stores."""
    return (
        name in running.accounts
        and config.accounts[name] == running.accounts[name]
        and state_store(config, name) == state_store(running, name)
        and store_settings_of(config, name) == store_settings_of(running, name)
    )


def _local_secret_values(config: Config) -> list[str]:
    """The values of the configuration's env/file/cred references (no network)."""
    values = []
    for ref in _refs(config):
        if ref.scheme in ("env", "file", "cred"):
            try:
                values.append(resolve(ref).reveal())
            except Exception:  # noqa: S112 - an unreadable ref holds nothing to scrub
                continue
    return values


def _refs(value: object, depth: int = 0) -> Iterator[SecretRef]:
    if depth > 8:
        return
    if isinstance(value, SecretRef):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _refs(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _refs(item, depth + 1)
    elif hasattr(value, "__pydantic_fields__"):
        for name in type(value).__pydantic_fields__:
            yield from _refs(getattr(value, name, None), depth + 1)
