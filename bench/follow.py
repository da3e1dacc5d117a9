"""Reading a daemon's JSON log while it runs: the one follower every bench phase uses.

A phase learns what a daemon did from its log lines, not from the stores: a
``rotated`` line per rotation, a ``job done`` line per job (with its result and
plan), a ``share of the accounts`` line per change of a replica's share. The
burst, steady, scale and replicas phases each had a copy of this reader that
differed in which lines it kept; one reader keeps them all (as the parsed
events, each with its time ``t``) and the phases read what they need.

A line that is not JSON is a problem (a traceback on stderr) unless the caller
runs the daemon at debug level, where libraries print plain lines of their own
(stevedore loading tooz's drivers): ``plain_is_problem=False`` skips those.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["JobLog", "timestamp", "wait_for"]

_PROBLEM_LEVELS = ("warning", "error", "critical")


def timestamp(text: str) -> float:
    """A log line's ISO 8601 ``timestamp`` as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class JobLog:
    """Follows one daemon's JSON log file from where it last read.

    ``jobs``, ``rotated`` and ``shares`` hold the parsed ``job done``,
    ``rotated`` and ``share of the accounts`` events, each with ``t`` (seconds
    since the epoch); ``started_at`` is the ``started`` line's time; ``errors``
    the warnings and errors logged (and the lines that were not JSON).
    """

    def __init__(self, path: Path, *, plain_is_problem: bool = True) -> None:
        self.path = path
        self.offset = 0
        self.jobs: list[dict[str, Any]] = []
        self.rotated: list[dict[str, Any]] = []
        self.shares: list[dict[str, Any]] = []
        self.started_at: float | None = None
        self.errors: list[str] = []
        self._plain_is_problem = plain_is_problem
        # a line the daemon is still writing: kept until its newline arrives
        self._partial = b""

    def poll(self) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._read(raw)

    def _read(self, raw: bytes) -> None:
        if not raw.startswith(b"{") and not self._plain_is_problem:
            return
        try:
            event = json.loads(raw)
        except ValueError:
            self.errors.append(raw.decode("utf-8", "replace")[:200])
            return
        name = event.get("event")
        kept = {
            "job done": self.jobs,
            "rotated": self.rotated,
            "share of the accounts": self.shares,
        }
        if name in kept:
            event["t"] = timestamp(event["timestamp"])
            kept[name].append(event)
        elif name == "started":
            self.started_at = timestamp(event["timestamp"])
        elif event.get("level") in _PROBLEM_LEVELS:
            self.errors.append(f"{event.get('level')}: {name} {event.get('error', '')}")

    def successes(self) -> list[dict[str, Any]]:
        return [job for job in self.jobs if job["result"] == "success"]

    def share(self) -> tuple[int, int]:
        """(members, owned) of the last share line; (0, 0) before the first."""
        if not self.shares:
            return 0, 0
        return int(self.shares[-1]["members"]), int(self.shares[-1]["owned"])


def wait_for(
    predicate: Callable[[], bool],
    procs: Sequence[subprocess.Popen[Any]],
    timeout: float,
    what: str,
) -> None:
    """Poll ``predicate`` until it holds; a daemon that exits first, or the timeout, raises."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: a daemon exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.0f}s")
        time.sleep(0.1)
