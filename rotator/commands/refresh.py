"""``rotator refresh ACCOUNT``: one rotation now, waiting for another worker's lease.

The wait for the lease goes through a :class:`~rotator.waits.Waiter`, like
every wait in rotator, so Ctrl-C or a stop ends it at once. Consumers'
notifications (``notify:``) go out before the command exits, in its own thread,
bounded by each entry's timeout and attempts.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.config.models import Config

__all__ = ["refresh"]

#: how often a refresh waiting for a lease tries again, at most and at least
POLL_MAX, POLL_MIN = 1.0, 0.05


def refresh(
    config: Config,
    account_name: str,
    *,
    wait: float | None = None,
    waiter: Waiter | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Rotate ``account_name`` now (reviving a failed account); the exit code.

    ``wait`` bounds the wait for another worker's lease (default: the account's
    ``lease_ttl``).
    """
    from rotator.commands.common import open_rotator
    from rotator.commands.terminal import printable
    from rotator.rotation.rotator import Outcome
    from rotator.service.app import build_notifications
    from rotator.tokens import format_time

    stdout, stderr = out or sys.stdout, err or sys.stderr
    waiter = waiter or Waiter()
    rotator = open_rotator(config)
    if wait is None:
        wait = config.accounts[account_name].lease_ttl.total_seconds()
    deadline = time.monotonic() + wait
    try:
        while True:
            result = rotator.rotate(account_name, force=True)
            left = deadline - time.monotonic()
            if result.result != Outcome.BUSY or left <= 0:
                break
            if not waiter.sleep(min(POLL_MAX, max(POLL_MIN, left))):
                break
        # consumers hear of it as from the daemon: once per replica set, before we exit
        build_notifications(rotator).deliver_result(result)
    finally:
        rotator.http.close()
    state = result.state
    if result.result == Outcome.SUCCESS and state is not None and state.expires_at:
        print(
            f"{account_name}: rotated; access token expires {format_time(state.expires_at)}; "
            f"sinks written {result.sinks_written}, unchanged {result.sinks_unchanged}, "
            f"failed {result.sinks_failed}",
            file=stdout,
        )
        return 1 if result.sinks_failed else 0
    if result.result == Outcome.ADOPTED:
        print(f"{account_name}: another worker had just rotated; its token is current", file=stdout)
        return 0
    if result.result == Outcome.BUSY:
        print(
            f"{account_name}: another worker holds the lease; try again later "
            "(or wait longer with --wait SECONDS)",
            file=stderr,
        )
        return 1
    # the error text is the vendor's: shown escaped, never obeyed by the terminal
    print(f"{account_name}: {result.result}: {printable(str(result.error))}", file=stderr)
    return 1
