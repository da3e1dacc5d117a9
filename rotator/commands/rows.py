"""The rows of ``rotator status`` and of the console's status page: one model for both.

A row is :func:`rotator.state.describe`'s summary of an account's state with
every secret value the account knows (its tokens, its resolvable client secret
and password) replaced by ``***``: the state store holds them, and neither a
terminal nor a browser page may show them. How each shows a row (terminal
escapes, HTML escapes) is the caller's business.

Its own module, not status.py's: the console (a service room) reads the rows,
and status.py reaches the service wiring through ``commands.common``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rotator.errors import RotatorError, StoreError, scrub_values

if TYPE_CHECKING:
    from rotator.config.models import AccountSettings
    from rotator.rotation.rotator import Rotator
    from rotator.state import AccountState

__all__ = ["STATUS_STATES", "account_rows", "health"]

#: every STATE word :func:`health` gives (``n`` stands for the failures in a row);
#: docs/runbook.md has an entry for each
STATUS_STATES = ("OK", "RETRYING(n)", "FAILED", "NO TOKEN")


def health(row: Mapping[str, Any]) -> str:
    """The STATE word of one row: FAILED, RETRYING(n), OK or NO TOKEN (the console shows it too)."""
    if row["failed"]:
        return "FAILED"
    if row["consecutive_failures"]:
        return f"RETRYING({row['consecutive_failures']})"
    if row["access_token_expires_at"]:
        return "OK"
    return "NO TOKEN"


def _known_secrets(settings: AccountSettings, state: AccountState | None) -> list[str]:
    """Every secret value of one account that status can know without the network."""
    from rotator.commands.online import secret_refs
    from rotator.secrets import resolve

    values = []
    if state is not None:
        values += [s.reveal() for s in (state.refresh_token, state.access_token) if s is not None]
    for _, ref in secret_refs(settings):
        try:
            values.append(resolve(ref).reveal())
        except RotatorError:
            continue  # an unresolvable reference has no value to leak
    return values


def _scrubbed(row: Mapping[str, Any], secrets: list[str]) -> dict[str, Any]:
    # the account's name is public: a secret inside it never mangles the row's fix
    public = (row["account"],) if isinstance(row.get("account"), str) else ()
    return {
        k: scrub_values(v, secrets, public=public) if isinstance(v, str) else v
        for k, v in row.items()
    }


def account_rows(rotator: Rotator) -> tuple[list[dict[str, Any]], list[str]]:
    """Every account's scrubbed row, and one scrubbed line per state that could not be read.

    The one row model of ``rotator status`` and the console's status page.
    """
    from rotator.state import describe

    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for name, account in rotator.accounts.items():
        try:
            state, _ = rotator.read_state(account)
        except StoreError as exc:
            secrets = _known_secrets(account.settings, None)
            problems.append(scrub_values(f"{name}: {exc}", secrets))
            continue
        secrets = _known_secrets(account.settings, state)
        rows.append(_scrubbed(describe([state])[0], secrets))
    return rows, problems
