"""``rotator status``: every account's expiries, last success and last error.

The text shown comes partly from vendors (``last_error`` is their error
description) and from whatever the state store holds, so none of it is
trusted with the operator's terminal: every character that a terminal could
act on or that cannot be seen (C0 and C1 controls, DEL, format characters
such as bidi overrides, line separators, lone surrogates, unassigned code
points) is printed as its escape (``\\x1b``), never sent raw. ``--json`` is
printed with ``ensure_ascii``, which escapes the same characters inside valid
JSON. And before anything is printed, every secret value the account knows
(its tokens, its resolvable client secret and password) is replaced by
``***``: status reads the state store, which holds them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from rotator.commands.rows import account_rows, health
from rotator.commands.terminal import fit, printable

if TYPE_CHECKING:
    from rotator.config.models import Config

__all__ = ["HEADERS", "account_rows", "health", "render_table", "status"]

HEADERS = (
    "ACCOUNT",
    "PROVIDER",
    "STATE",
    "ACCESS EXPIRES",
    "REFRESH EXPIRES",
    "LAST SUCCESS",
    "NEXT REFRESH",
    "LAST ERROR",
)
#: how much of a last error the table shows (--json has all of it)
ERROR_WIDTH = 80


def render_table(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The status table's lines; every cell made :func:`printable`."""
    table = [
        tuple(
            printable(str(cell))
            for cell in (
                row["account"],
                row["provider"] or "-",
                health(row),
                row["access_token_expires_at"] or "-",
                row["refresh_token_expires_at"] or ("never" if row["has_refresh_token"] else "-"),
                row["last_success_at"] or "-",
                row["next_refresh_at"] or "-",
                (row["last_error"] or "")[:ERROR_WIDTH],
            )
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [HEADERS, *table]) for i in range(len(HEADERS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [HEADERS, *table]
    ]


def status(
    config: Config,
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print every account's status; 1 when a state could not be read, else 0."""
    from rotator.commands.common import open_rotator

    stdout, stderr = out or sys.stdout, err or sys.stderr
    rotator = open_rotator(config, spool=False)  # status only reads
    try:
        rows, problems = account_rows(rotator)
    finally:
        rotator.http.close()
    if as_json:
        print(
            json.dumps({"accounts": rows, "errors": problems}, indent=2, ensure_ascii=True),
            file=stdout,
        )
    else:
        for line in render_table(rows):
            print(fit(line, stdout), file=stdout)
        for line in problems:
            print(fit(f"error: {printable(line)}", stderr), file=stderr)
    return 1 if problems else 0
