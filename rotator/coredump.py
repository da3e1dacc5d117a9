"""No core dumps: a core of the daemon is a file of its secrets.

A 69 MB core of a running daemon held the access token four times and the
client secret three times, and the systemd watchdog ends a hung daemon with
SIGABRT, which dumps core by default. So every process that handles secrets
makes itself not dumpable at start: ``PR_SET_DUMPABLE`` 0 (no core, and no
``/proc/PID/mem`` or ptrace for other users' tools) and a core size limit of 0
(inherited by anything it starts). systemd's ``LimitCORE=0`` says the same in
the unit.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

__all__ = ["core_dumps_forbidden", "forbid_core_dumps", "limit_core_size"]

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4


def _prctl() -> ctypes._NamedFuncPointer | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here, not at the top: `rotator --help` needs only the core limit

    with contextlib.suppress(OSError, AttributeError):
        # the process's own symbols: libc is loaded already (find_library would run ldconfig)
        libc = ctypes.CDLL(None, use_errno=True)
        func: ctypes._NamedFuncPointer = libc.prctl
        func.restype = ctypes.c_int
        return func
    return None


def limit_core_size() -> None:
    """A core size limit of 0 for this process and what it starts; cheap, never raises."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def forbid_core_dumps() -> None:
    """Make this process not dumpable and its core size limit 0; idempotent, never raises."""
    limit_core_size()
    prctl = _prctl()
    if prctl is not None:
        import ctypes

        prctl(
            ctypes.c_int(_PR_SET_DUMPABLE),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )


def core_dumps_forbidden() -> bool:
    """True when this process is not dumpable (Linux) and may write no core."""
    if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
        return False
    prctl = _prctl()
    if prctl is None:
        return True
    import ctypes

    dumpable = prctl(
        ctypes.c_int(_PR_GET_DUMPABLE),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    return int(dumpable) == 0
