"""The coordination backend through tooz: connect, check, and keep its URL out of messages.

tooz is imported here (with :func:`importlib.import_module`, so that without
``server.coordination`` it is never loaded, and its own type hints do not have
to be installed for mypy); :mod:`rotator.service.coordination` holds what the
replicas do with it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from rotator.config.models import CoordinationSettings
from rotator.errors import scrub_values
from rotator.secrets import SecretRef, resolve

__all__ = [
    "backend_url",
    "check_backend",
    "connect",
    "member_id",
    "scrubbed",
    "tooz",
    "within",
]

T = TypeVar("T")
#: ``check --online`` gives the backend at most this long (or the membership timeout)
_CHECK_WAIT = 10.0


def member_id() -> bytes:
    """Who this replica is in the group: host (a pod's name), PID and a random tail."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()


def backend_url(settings: CoordinationSettings) -> str:
    """The tooz URL, resolved when it is a reference (it may hold a password)."""
    if isinstance(settings.url, SecretRef):
        return resolve(settings.url).reveal().strip()
    return settings.url


def within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` on a thread of its own; ``TimeoutError`` when it has not answered in time.

    tooz's Redis driver retries a refused connection fifteen times, each with the
    client's own backoff: about a minute before it says no. A late call is left
    to finish on its (daemon) thread.
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="rotator-coordination-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise TimeoutError(f"no answer within {seconds:g}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return cast(T, value)


def tooz() -> Any:
    """``tooz.coordination``, loaded on first use."""
    return importlib.import_module("tooz.coordination")


def connect(settings: CoordinationSettings, member: bytes, *, heart: bool = True) -> Any:
    """A started tooz coordinator (heartbeating on its own thread when ``heart``)."""
    coordinator = tooz().get_coordinator(
        backend_url(settings),
        member,
        membership_timeout=settings.membership_timeout.total_seconds(),
    )
    coordinator.start(start_heart=heart)
    return coordinator


def scrubbed(settings: CoordinationSettings, text: str) -> str:
    """``text`` cut short, without the backend URL or its password (a reference may hold both)."""
    secrets = []
    if isinstance(settings.url, SecretRef):
        try:
            url = backend_url(settings)
            secrets += [url, urlsplit(url).password or ""]
        except Exception:  # noqa: S110 - an unreadable reference holds nothing to scrub
            pass
    return scrub_values(text[:500], [s for s in secrets if s])


def check_backend(settings: CoordinationSettings) -> tuple[bool, str]:
    """``check --online``: connect, read the group's members, join nothing; (ok, what)."""
    coordination = tooz()
    scheme = urlsplit(settings.url).scheme if isinstance(settings.url, str) else "the reference"

    def members() -> set[bytes]:
        coordinator = connect(settings, member_id(), heart=False)
        try:
            found: set[bytes] = coordinator.get_members(settings.group.encode()).get()
        except coordination.GroupNotCreated:
            found = set()
        finally:
            with contextlib.suppress(Exception):
                coordinator.stop()
        return found

    try:
        found = within(min(_CHECK_WAIT, settings.membership_timeout.total_seconds()), members)
    except Exception as exc:
        said = scrubbed(settings, f"{type(exc).__name__}: {exc}")
        return False, f"{scheme} backend unreachable: {said}"
    return True, f"{scheme} backend answers; group {settings.group!r} has {len(found)} members"
