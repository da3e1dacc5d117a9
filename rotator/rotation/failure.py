"""Recording a provider failure, and the fix a human is told.

An ``invalid_grant`` is not believed at once: if the stored grant moved on while
we asked (another worker rotated), that worker's result is adopted and the grant
is alive. Otherwise the failure is recorded in the state, which ends our lease:
a transient one with the retry it plans, a permanent one stopping the account
until a human acts, with the fix in the log line.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import structlog

from rotator.alerts.fixes import grant_fix
from rotator.config.models import AccountSettings
from rotator.errors import InvalidGrant, ProviderError, StoreError
from rotator.rotation.lease import Lease
from rotator.schedule import Outcome, RunFacts, next_run
from rotator.state import AccountState
from rotator.tokens import format_time

__all__ = ["fix_for", "moved_on", "record_failure"]

_log = structlog.get_logger("rotator.rotation")


def moved_on(lease: Lease) -> AccountState | None:
    """After invalid_grant: the stored state, if its grant moved on from ours."""
    try:
        current, _ = lease.account.read_state()
    except StoreError:
        return None
    leased = lease.state
    if current.refresh_token is None or current.refresh_token == leased.refresh_token:
        return None
    _log.info("adopted another worker's rotation", account=lease.account.name)
    return current


def record_failure(
    lease: Lease, error: ProviderError, *, now: datetime, rand: float
) -> tuple[Outcome, AccountState, RunFacts]:
    """Write the failure into the state (ending the lease); the outcome and its facts."""
    account, leased = lease.account, lease.state
    failures = leased.consecutive_failures + 1
    outcome = Outcome.TRANSIENT if error.transient else Outcome.PERMANENT
    facts = RunFacts(
        failures=failures,
        issued_at=leased.issued_at,
        expires_at=leased.expires_at,
        retry_after=error.retry_after,
    )
    retry = next_run(outcome, facts, now=now, policy=account.policy, rand=rand)
    failed_state = replace(
        leased,
        consecutive_failures=failures,
        failed=outcome is Outcome.PERMANENT,
        last_error=str(error),
        last_error_code=error.code,
        next_refresh_at=leased.next_refresh_at if outcome is Outcome.PERMANENT else retry,
    )
    permanent = outcome is Outcome.PERMANENT
    (_log.error if permanent else _log.warning)(
        "rotation failed",
        account=account.name,
        provider=account.settings.provider,
        outcome=outcome,
        error=str(error),
        consecutive_failures=failures,
        retry_at=None if permanent else format_time(retry),
        token_expires_at=format_time(leased.expires_at) if leased.expires_at else None,
        fix=fix_for(account.name, error, account.settings) if permanent else None,
    )
    lease.give_back(failed_state)
    return outcome, Lease.released(failed_state), RunFacts(planned=retry)


def fix_for(account: str, error: ProviderError, settings: AccountSettings) -> str:
    """The fix of a permanent failure; a dead grant's is :func:`grant_fix`'s (per provider)."""
    if isinstance(error, InvalidGrant):
        return f"the grant is dead: {grant_fix(account, settings).action}"
    if error.code == "invalid_client":
        return "the vendor refused the client credentials: check client_id and client_secret"
    if error.code == "secret_ref":
        return "a secret reference cannot be read: fix it, then `systemctl reload rotator`"
    return f"fix the cause, then run `rotator refresh {account}` or reload the daemon"
