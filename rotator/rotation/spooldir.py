"""Where the spool is: one directory for the daemon and every one-off command.

Rule 1 holds across processes only if the daemon replays what ``rotator
refresh`` or ``import`` spooled, so all of them must resolve one directory:
``server.spool_dir``, else ``$STATE_DIRECTORY/spool`` (what systemd's
``StateDirectory=`` and the Helm chart set), else a per-user state directory.
The environment differs between the daemon and a command started another way;
:func:`one_off_spool_dir` refuses where that difference would lose a grant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rotator.errors import ConfigError

__all__ = [
    "FIRST_LOGIN_UID",
    "SHIPPED_SPOOL_DIR",
    "SpoolPlace",
    "default_spool_dir",
    "one_off_spool_dir",
    "spool_place",
]

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


def spool_place(configured: Path | None, environ: Mapping[str, str] | None = None) -> SpoolPlace:
    """``server.spool_dir``, else ``$STATE_DIRECTORY/spool``, else a per-user state directory."""
    env = os.environ if environ is None else environ
    if configured is not None:
        return SpoolPlace(configured, "server.spool_dir")
    state_dir = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_dir:
        return SpoolPlace(Path(state_dir) / "spool", "$STATE_DIRECTORY")
    xdg = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME") or Path.home()) / ".local" / "state"
    )
    return SpoolPlace(Path(xdg) / "rotator" / "spool", "per-user")


def default_spool_dir() -> Path:
    """``$STATE_DIRECTORY/spool`` under systemd, else a per-user state directory."""
    return spool_place(None).directory


def one_off_spool_dir(
    configured: Path | None, environ: Mapping[str, str] | None = None, uid: int | None = None
) -> Path:
    """The spool of a one-off command (``refresh``, ``import``, ``authorize``), or a
    ConfigError when it would not be the daemon's.

    Rule 1 holds only if the daemon replays what a one-off command spooled, so both
    must use one directory. ``$STATE_DIRECTORY`` is set by the service manager for
    the daemon's unit only: a command started as the service's user some other
    way (``systemd-run -p User=`` without ``StateDirectory=``, ``sudo -u``) falls
    back to the user's home, where no daemon looks, and a grant kept there while
    the state store is down is lost to the daemon, which then spends the old
    refresh token. That is refused before any vendor is asked, for a system account
    (a service's user, or root: ``uid`` below :data:`FIRST_LOGIN_UID`) started by
    systemd or sudo. A person's own account goes on (a desktop session may hand
    ``$INVOCATION_ID`` to every terminal): its commands share the per-user spool
    with a daemon that person runs.
    """
    env = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    place = spool_place(configured, env)
    if place.source != "per-user" or uid >= FIRST_LOGIN_UID:
        return place.directory
    if env.get("INVOCATION_ID"):
        how = "it runs as a systemd unit without StateDirectory= (systemd-run)"
    elif env.get("SUDO_UID") and env.get("SUDO_UID") != str(uid):
        how = "it runs as another user through sudo"
    else:
        return place.directory
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
