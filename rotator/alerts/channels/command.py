"""The command alert channel: run the operator's program with the alert on stdin.

The program gets a *minimal* environment, not the daemon's: the daemon's holds
the client secrets, ``VAULT_TOKEN``, ``AWS_SECRET_ACCESS_KEY`` and whatever a
Helm ``envFromSecrets`` put there, and a pager script has no business with any
of it. It gets :data:`BASE_ENV` (when set), the alert's own ``ROTATOR_ALERT_*``
variables, and the names the channel's ``pass_env`` allow-lists. ``HOME`` is in
the base set on purpose: it is a directory, not a secret; the child runs as the
daemon's user and could read the same files anyway; and the tools pager scripts
call (curl's ``.netrc``, ssh, cloud CLIs, Python's user site) look there and fail
confusingly without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rotator.alerts.channels.base import AlertChannelError
from rotator.errors import scrub, scrub_values

if TYPE_CHECKING:
    from rotator.alerts.rules import Alert
    from rotator.config.models import CommandChannel

__all__ = [
    "BASE_ENV",
    "CommandAlertChannel",
    "Finished",
    "alert_environment",
    "child_environment",
    "minimal_environment",
    "run_program",
]

#: taken from the daemon's environment when set: where programs are, the language
#: and time zone their output is in, and the home directory (see the docstring)
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
#: never handed on, even when allow-listed: the child must not speak to systemd in
#: our name (the configuration refuses these names too; this is the second line)
_SYSTEMD_ONLY = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"})


def alert_environment(alert: Alert) -> dict[str, str]:
    """The ``ROTATOR_ALERT_*`` variables: the alert's routing fields, none free text;
    ``ROTATOR_REAUTHORIZE_URL`` when the alert carries a console link."""
    link = {"ROTATOR_REAUTHORIZE_URL": alert.reauthorize_url} if alert.reauthorize_url else {}
    return {
        **link,
        "ROTATOR_ALERT_STATUS": alert.status,
        "ROTATOR_ALERT_KIND": str(alert.kind),
        "ROTATOR_ALERT_SEVERITY": str(alert.severity),
        "ROTATOR_ALERT_ACCOUNT": alert.account,
        "ROTATOR_ALERT_PROVIDER": alert.provider,
        "ROTATOR_ALERT_REPEAT": "true" if alert.repeat else "false",
    }


def minimal_environment(
    pass_env: Iterable[str], environ: Mapping[str, str], own: Mapping[str, str]
) -> dict[str, str]:
    """A program's whole environment: :data:`BASE_ENV` and ``pass_env`` names that are
    set in ``environ``, then rotator's ``own`` variables (which win). Pure."""
    env = {
        name: environ[name]
        for name in (*BASE_ENV, *pass_env)
        if name in environ and name not in _SYSTEMD_ONLY
    }
    # Without PATH, exec would fall back to a default anyway; saying it keeps the
    # child's view the same whichever way it looks programs up.
    env.setdefault("PATH", os.defpath)
    env.update(own)
    return env


def child_environment(
    alert: Alert, pass_env: Iterable[str], environ: Mapping[str, str]
) -> dict[str, str]:
    """The alert command's environment: :func:`minimal_environment` with the alert's variables."""
    return minimal_environment(pass_env, environ, alert_environment(alert))


@dataclass(frozen=True, slots=True)
class Finished:
    """How a program rotator ran ended (it ran to its end: no timeout)."""

    returncode: int
    stdout: bytes
    stderr: bytes


#: after a kill, how long the pipes may take to close (a grandchild that left the
#: process group could hold them open for ever)
_AFTER_KILL = 5.0


def run_program(
    argv: Sequence[str], *, stdin: bytes, env: Mapping[str, str], timeout: float, what: str
) -> Finished:
    """Run ``argv`` (no shell) with ``stdin``, in a session of its own; its output.

    On timeout the whole process group is killed (a shell script's children too,
    not only the shell), and :class:`AlertChannelError` says so. ``what`` names
    the program in messages ("alert command", "notify exec").
    """
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv comes from the operator's configuration
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except FileNotFoundError:
        raise AlertChannelError(f"{what} {argv[0]!r} not found") from None
    except PermissionError:
        raise AlertChannelError(f"{what} {argv[0]!r} is not executable") from None
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=_AFTER_KILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise AlertChannelError(
            f"{what} {argv[0]!r} did not finish within {timeout:g}s; its process group was killed"
        ) from None
    return Finished(proc.returncode, stdout, stderr)


class CommandAlertChannel:
    """Run ``argv`` with the alert JSON on stdin; a non-zero exit or a timeout is a failure."""

    def __init__(self, settings: CommandChannel, *, name: str = "command") -> None:
        self.name = name
        self.settings = settings

    def send(self, alert: Alert) -> None:
        argv = list(self.settings.argv)
        env = child_environment(alert, self.settings.pass_env, os.environ)
        done = run_program(
            argv,
            stdin=json.dumps(alert.payload()).encode(),
            env=env,
            timeout=self.settings.timeout.total_seconds(),
            what="alert command",
        )
        if done.returncode != 0:
            # An allow-listed variable may well be a credential (a pager's API key);
            # a script that echoes it on failure must not put it in our log.
            passed = [env[name] for name in self.settings.pass_env if name in env]
            stderr = scrub(scrub_values(done.stderr.decode("utf-8", "replace"), passed), 200)
            raise AlertChannelError(
                f"alert command {argv[0]!r} exited with {done.returncode}: {stderr}"
            )
