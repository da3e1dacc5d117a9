"""``rotator import ACCOUNT``: seed a refresh token into an account's state.

The token comes from standard input (or ``--file``), never from the command
line where ``ps`` would show it, and is never echoed. It is written with
compare-and-set, and not while a worker holds the account's lease: that worker
is about to write its own grant, which would silently replace the seeded one.
Consumers listening to ``reauthorized`` are told before the command exits.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

from rotator.commands.common import UsageError, open_rotator

if TYPE_CHECKING:
    from datetime import datetime

    from rotator.config.models import Config

__all__ = ["parse_authorized_at", "read_token", "seed"]

#: compare-and-set attempts before giving up on a state that keeps changing
ATTEMPTS = 5


def read_token(file: str | None, stdin: TextIO | None = None) -> str:
    """The refresh token from ``file`` or standard input; UsageError unless one clean line."""
    if file:
        try:
            with open(file, encoding="utf-8") as handle:
                raw = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{file} is not UTF-8 text; give a file holding the token") from None
    else:
        source = stdin or sys.stdin
        if source.isatty():
            print("paste the refresh token, then press Enter and Ctrl-D:", file=sys.stderr)
        raw = source.read()
    token = raw.strip()
    if not token or any(c.isspace() for c in token):
        raise UsageError("the refresh token must be one non-empty line without spaces")
    return token


def parse_authorized_at(value: str | None) -> datetime | None:
    """``--authorized-at`` as a UTC time; UsageError with an example when it is not one."""
    if not value:
        return None
    from rotator.tokens import parse_time

    try:
        return parse_time(value)
    except ValueError:
        raise UsageError(
            f"--authorized-at {value!r} is not an ISO 8601 time (e.g. 2026-11-20T10:00:00Z)"
        ) from None


def seed(
    config: Config,
    account_name: str,
    token: str,
    *,
    authorized_at: datetime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Store ``token`` as the account's refresh token, clearing a failure; the exit code."""
    from rotator.config.models import state_store
    from rotator.errors import StoreConflict
    from rotator.notify import reauthorized
    from rotator.rotation.rotator import utc_now
    from rotator.secrets import Secret
    from rotator.service.app import build_notifications

    stdout, stderr = out or sys.stdout, err or sys.stderr
    rotator = open_rotator(config)
    account = rotator.accounts[account_name]
    for _ in range(ATTEMPTS):
        state, version = rotator.read_state(account)
        if state.lease_held_by_other("import", utc_now()):
            print(
                f"{account_name}: a worker is rotating it right now; try again in a moment",
                file=stderr,
            )
            return 1
        seeded = replace(
            state,
            provider=account.settings.provider,
            authorized_at=authorized_at,
            refresh_token=Secret(token),
            refresh_expires_at=None,
            access_token=None,
            issued_at=None,
            expires_at=None,
            next_refresh_at=None,
            failed=False,
            consecutive_failures=0,
            last_error="",
            last_error_code="",
        )
        try:
            account.state_store.write(
                account.state_path, seeded.to_record(), expected_version=version
            )
        except StoreConflict:
            continue
        where = f"{state_store(config, account_name)}:{account.state_path}"
        build_notifications(rotator).deliver(
            reauthorized(seeded, account.settings, utc_now(), token), account.settings
        )
        print(
            f"{account_name}: refresh token imported into {where}; the daemon refreshes it "
            f"at its next look (or now: rotator refresh {account_name})",
            file=stdout,
        )
        return 0
    print(f"{account_name}: the state kept changing; try again", file=stderr)
    return 1
