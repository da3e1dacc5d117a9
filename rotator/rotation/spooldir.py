"""Where the spool is: one resolution for the daemon and every one-off command.

Rule 1 holds across processes only if the daemon replays what ``rotator
refresh`` or ``import`` spooled, so all of them resolve the directory through
:func:`spool_place`, the one function that knows it: ``server.spool_dir``, else
``$STATE_DIRECTORY/spool`` (what systemd's ``StateDirectory=`` and the Helm
chart set), else a per-user state directory. The last step has no answer for a
system account that systemd or sudo started without either: its "per-user"
directory depends on how it was started, not on who it is, so no other process
(a daemon, a later command) can be counted on to find it. Asked then, the
resolution refuses, whoever asks; the refusal of a one-off command is that
rule, not a check of its own.

The daemon is the one process that is never refused: the spool is its own, and
it replays it at every start wherever it is, so a unit that worked before keeps
working after an upgrade. It is told instead (``SpoolPlace.unshared``), and logs
it, because no one-off command started beside it will find that spool.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rotator.errors import ConfigError

__all__ = ["FIRST_LOGIN_UID", "SHIPPED_SPOOL_DIR", "SpoolPlace", "spool_dir", "spool_place"]

#: the daemon's spool under the shipped unit (StateDirectory=rotator)
SHIPPED_SPOOL_DIR = Path("/var/lib/rotator/spool")
#: the first uid of a person's account (UID_MIN of Debian's and Fedora's login.defs);
#: below it: root and system users such as the service's
FIRST_LOGIN_UID = 1000


@dataclass(frozen=True, slots=True)
class SpoolPlace:
    """Where the spool is, and what chose it."""

    directory: Path
    #: "server.spool_dir", "$STATE_DIRECTORY" or "per-user"
    source: str
    #: why no other process would find this spool (the daemon's, which is not refused)
    unshared: str | None = None


def spool_place(
    configured: Path | None,
    environ: Mapping[str, str] | None = None,
    uid: int | None = None,
    *,
    daemon: bool = False,
) -> SpoolPlace:
    """``server.spool_dir``, else ``$STATE_DIRECTORY/spool``, else a per-user state
    directory; a ConfigError where the per-user one would be no other process's.

    ``$STATE_DIRECTORY`` is set by the service manager for the daemon's unit only:
    a process started as the service's user some other way (``systemd-run -p
    User=`` without ``StateDirectory=``, ``sudo -u``) falls back to a home
    directory where no daemon looks, and a grant kept there while the state store
    is down is lost to the daemon, which then spends the old refresh token. That
    is refused before any vendor is asked, for a system account (a service's
    user, or root: ``uid`` below :data:`FIRST_LOGIN_UID`) started by systemd or
    sudo (``daemon``: not refused, the reason is in ``unshared``). A person's own
    account goes on (a desktop session may hand
    ``$INVOCATION_ID`` to every terminal): its commands share the per-user spool
    with a daemon that person runs.
    """
    env = os.environ if environ is None else environ
    if configured is not None:
        return SpoolPlace(configured, "server.spool_dir")
    state_dir = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_dir:
        return SpoolPlace(Path(state_dir) / "spool", "$STATE_DIRECTORY")
    xdg = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME") or Path.home()) / ".local" / "state"
    )
    place = SpoolPlace(Path(xdg) / "rotator" / "spool", "per-user")
    how = _started_for_another(env, os.geteuid() if uid is None else uid)
    if how is None:
        return place
    if daemon:
        return SpoolPlace(place.directory, place.source, unshared=how)
    raise ConfigError(
        f"this command would keep a rotated grant in {place.directory} (neither "
        f"server.spool_dir nor $STATE_DIRECTORY is set and {how}), but a daemon run by "
        f"systemd or Helm keeps its spool in $STATE_DIRECTORY/spool (the shipped unit: "
        f"{SHIPPED_SPOOL_DIR}) and would never replay a grant from here: set "
        f"server.spool_dir to the daemon's spool (e.g. {SHIPPED_SPOOL_DIR}) in the "
        "configuration, or start the command with the daemon's state directory "
        "(systemd-run -p StateDirectory=rotator)",
        path="server.spool_dir",
    )


def spool_dir(
    configured: Path | None,
    environ: Mapping[str, str] | None = None,
    uid: int | None = None,
) -> Path:
    """The spool's directory (:func:`spool_place`) for a command (refused where no
    daemon would find it)."""
    return spool_place(configured, environ, uid).directory


def _started_for_another(env: Mapping[str, str], uid: int) -> str | None:
    """How a system account was started so that its home is no daemon's, or None."""
    if uid >= FIRST_LOGIN_UID:
        return None
    if env.get("INVOCATION_ID"):
        return "it runs as a systemd unit without StateDirectory= (systemd-run)"
    if env.get("SUDO_UID") and env.get("SUDO_UID") != str(uid):
        return "it runs as another user through sudo"
    return None
