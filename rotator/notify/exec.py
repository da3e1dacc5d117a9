"""The ``exec`` notification: run the operator's program after an event.

The program runs without a shell in the minimal environment of
:func:`rotator.alerts.channels.command.minimal_environment` (the daemon's own
environment holds its credentials), with the event's variables:

- ``ROTATOR_EVENT`` (rotated, reauthorized, failed, recovered), ``ROTATOR_EVENT_ID``
  (the same on every replica: a consumer can drop repeats),
- ``ROTATOR_ACCOUNT``, ``ROTATOR_EXPIRES_AT`` (ISO 8601 UTC, empty when unknown),
- ``ROTATOR_SINKS``: the account's sinks as ``store:path``, separated by spaces
  (a space or ``%`` inside a path is percent-encoded).

The access token is never in its argv or environment; with ``token: stdin`` it is
written to the program's standard input (and nothing else is). The program is
killed with its whole process group at ``timeout``; what it printed is logged,
scrubbed of the token and of every ``pass_env`` value, and cut short.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

import structlog

from rotator.alerts.channels.base import AlertChannelError
from rotator.alerts.channels.command import minimal_environment, run_program
from rotator.errors import scrub, scrub_values
from rotator.notify.errors import NotifyError
from rotator.tokens import format_time

if TYPE_CHECKING:
    from rotator.config.models import ExecNotify
    from rotator.notify.events import Event

__all__ = ["event_environment", "run_exec"]

_log = structlog.get_logger("rotator.notify")
#: what a program printed is logged up to this many characters
_OUTPUT_SHOWN = 300


def event_environment(event: Event) -> dict[str, str]:
    """The ``ROTATOR_*`` variables of an event. Pure; never the token."""
    return {
        "ROTATOR_EVENT": event.type,
        "ROTATOR_EVENT_ID": event.id,
        "ROTATOR_ACCOUNT": event.account,
        "ROTATOR_EXPIRES_AT": format_time(event.expires_at) if event.expires_at else "",
        "ROTATOR_SINKS": " ".join(quote(sink, safe="/:@!$&'()*+,;=-._~") for sink in event.sinks),
    }


def run_exec(entry: ExecNotify, event: Event, environ: Mapping[str, str] | None = None) -> None:
    """Run the entry's program for ``event``; :class:`NotifyError` unless it exits 0."""
    env = minimal_environment(entry.pass_env, os.environ if environ is None else environ, {})
    env.update(event_environment(event))
    token = event.token.reveal() if event.token is not None else ""
    stdin = token.encode() if entry.token == "stdin" and token else b""
    try:
        done = run_program(
            entry.argv,
            stdin=stdin,
            env=env,
            timeout=entry.timeout.total_seconds(),
            what="notify exec",
        )
    except AlertChannelError as exc:
        raise NotifyError(str(exc)) from None
    # The program may echo its stdin or a pass_env credential: neither reaches our log.
    secrets = [token, *(env[name] for name in entry.pass_env if name in env)]
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    shown = scrub(scrub_values(output, secrets), _OUTPUT_SHOWN).strip()
    if done.returncode != 0:
        raise NotifyError(
            f"notify exec {entry.argv[0]!r} exited with {done.returncode}: {shown}",
            retry=False,
        )
    _log.info(
        "notify exec ran",
        account=event.account,
        notify_event=event.type,
        program=entry.argv[0],
        exit_code=done.returncode,
        output=shown,
    )
