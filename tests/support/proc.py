"""Run ``python -m rotator`` as a subprocess, output captured for the leak check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.support import leakcheck
from tests.support.net import wait_until

__all__ = ["ROOT", "DaemonProcess", "env_for", "run_rotator", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]


def env_for(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(extra or {})
    return env


def run_rotator(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
    cwd: str | Path | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run one rotator command to completion; stdout and stderr are also logged.

    ``prefix`` runs it through another command (``setpriv ... --``, as another user).
    """
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "rotator", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_for(env),
        cwd=cwd,
        check=False,
    )
    log = leakcheck.log_file("cli-" + "-".join(args[:2]))
    log.write_text(f"$ rotator {' '.join(args)}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30,
    interval: float = 0.05,  # kept for callers; the one wait backs off on its own
    what: str = "condition",
) -> Any:
    return wait_until(predicate, timeout=timeout, what=what)


class DaemonProcess:
    """``rotator run -c CONFIG`` as a child process; stopped by PID."""

    def __init__(
        self, config: Path | str, *, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
    ) -> None:
        self.log_path = leakcheck.log_file("daemon")
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rotator",
                "run",
                "-c",
                str(config),
                "--log-format",
                "json",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env_for(env),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, needle: str, timeout: float = 30, count: int = 1) -> None:
        wait_for(
            lambda: self.output().count(needle) >= count,
            timeout,
            what=f"{needle!r} x{count} in the daemon log",
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
