"""Alerts: which conditions need a human, and what to tell them. Pure: no I/O.

:func:`evaluate` takes an account's state and settings, the alert settings and
``now``, and returns the conditions that hold: a refresh token or personal
access token close to its end, failures in a row, a dead grant, an access token
that lapses before the next attempt. Each carries a *level* (crossing the next
expiry threshold is a new alert) and the text that tells the operator what to do.

:func:`plan` compares those conditions with what was already sent and decides
what goes out now: new and escalated alerts, reminders every ``alerts.repeat``,
and resolved notices. Sending and remembering are :mod:`rotator.alerts.dispatch`;
the channels are :mod:`rotator.alerts.channels`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from rotator.alerts.fixes import grant_fix
from rotator.errors import scrub_values
from rotator.tokens import format_time, parse_time

if TYPE_CHECKING:
    from rotator.config.models import AccountSettings, AlertsSettings
    from rotator.state import AccountState

__all__ = [
    "ALERT_KINDS",
    "NON_RENEWABLE_PROVIDERS",
    "Alert",
    "Condition",
    "Kind",
    "Sent",
    "Severity",
    "evaluate",
    "human_duration",
    "plan",
]

#: providers whose token cannot be renewed by rotator: its expiry is the end of the grant
NON_RENEWABLE_PROVIDERS = frozenset({"faxplus-pat"})


class Kind(StrEnum):
    REFRESH_TOKEN_EXPIRY = "refresh_token_expiry"
    TOKEN_EXPIRY = "token_expiry"  # a personal access token with an expiry date
    FAILURES = "failures"
    DEAD = "dead"
    LAPSE = "lapse"  # the access token expires before the next possible attempt


#: every alert kind, as payloads and metrics name it; docs/runbook.md has an entry for each
ALERT_KINDS: tuple[str, ...] = tuple(str(kind) for kind in Kind)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Condition:
    """One thing that holds for an account now and needs a human."""

    account: str
    kind: Kind
    level: int  # higher is worse; a higher level than the one sent is a new alert
    severity: Severity
    summary: str  # one line: what, when, and the fix
    action: str  # the fix on its own, e.g. "rotator authorize acme-fax"
    expires_at: datetime | None = None
    #: the fix is a re-authorization: the alert carries a console link
    reauthorize: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    """What was sent for one condition: its level and when."""

    level: int
    severity: str
    first_at: datetime
    last_at: datetime

    def dump(self) -> str:
        return json.dumps(
            {
                "level": self.level,
                "severity": self.severity,
                "first_at": format_time(self.first_at),
                "last_at": format_time(self.last_at),
            },
            sort_keys=True,
        )

    @classmethod
    def load(cls, text: str) -> Sent:
        raw = json.loads(text)
        return cls(
            level=int(raw["level"]),
            severity=str(raw.get("severity", "warning")),
            first_at=parse_time(raw["first_at"]),
            last_at=parse_time(raw["last_at"]),
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """One message to send. ``status`` is firing or resolved; ``repeat`` marks a reminder."""

    account: str
    provider: str
    kind: Kind
    status: str
    severity: Severity
    summary: str
    action: str
    at: datetime
    repeat: bool = False
    expires_at: datetime | None = None
    since: datetime | None = None
    reauthorize: bool = False
    #: a fresh signed console link, set per sending (never logged)
    reauthorize_url: str | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON document webhooks, commands and e-mail carry (documented in docs/alerts.md)."""
        link = {"reauthorize_url": self.reauthorize_url} if self.reauthorize_url else {}
        return {
            "version": 1,
            "status": self.status,
            "repeat": self.repeat,
            "kind": str(self.kind),
            "severity": str(self.severity),
            "account": self.account,
            "provider": self.provider,
            "summary": self.summary,
            "action": self.action,
            "expires_at": format_time(self.expires_at) if self.expires_at else None,
            "since": format_time(self.since) if self.since else None,
            "time": format_time(self.at),
            **link,
        }

    @property
    def title(self) -> str:
        if self.status == "resolved":
            return f"[RESOLVED] {self.summary.removeprefix('resolved: ')}"
        return f"[{self.severity.upper()}] {self.summary}"


# --- evaluation (pure) ------------------------------------------------------------


def human_duration(span: timedelta) -> str:
    """``3 days``, ``47 hours``, ``12 minutes``: rounded, as an on-call reads it."""
    seconds = abs(span.total_seconds())
    hours, minutes = round(seconds / 3600), round(seconds / 60)
    if hours >= 48:
        count, unit = round(seconds / 86400), "day"
    elif minutes >= 120:
        count, unit = hours, "hour"
    elif seconds >= 90:
        count, unit = minutes, "minute"
    else:
        count, unit = round(seconds), "second"
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def evaluate(
    state: AccountState,
    settings: AccountSettings,
    alerts: AlertsSettings,
    now: datetime,
    *,
    console: bool = False,
) -> list[Condition]:
    """Every condition that holds for one account at ``now``. No I/O.

    ``console``: server.console is on (an account without a redirect URI of its
    own can then be authorized through it)."""
    account = state.account
    out: list[Condition] = []
    fix = grant_fix(account, settings, console=console)
    non_renewable = settings.provider in NON_RENEWABLE_PROVIDERS
    # The end of the grant: a refresh token's expiry, or a personal access token's
    # (its provider records that as refresh_expires_at; expires_at is only how long
    # the published copy is good for before it is re-published).
    end = state.refresh_expires_at
    warn = sorted(settings.refresh_token_warn or alerts.refresh_token_warn, reverse=True)
    if end is not None and warn:
        remaining = end - now
        crossed = sum(1 for threshold in warn if remaining <= threshold)
        level = len(warn) + 1 if remaining <= timedelta(0) else crossed
        if level:
            if non_renewable:
                what, kind = "personal access token", Kind.TOKEN_EXPIRY
                told_fix = f"replace the token: {fix.action}"
            else:
                what, kind = "refresh token", Kind.REFRESH_TOKEN_EXPIRY
                verb = "re-authorize" if fix.reauthorize else "renew the grant"
                told_fix = f"{verb} with: {fix.action}"
            if remaining > timedelta(0):
                told = f"expires in {human_duration(remaining)} ({_when(end)})"
            elif remaining > -timedelta(minutes=1):
                told = f"has expired ({_when(end)})"
            else:
                told = f"expired {human_duration(remaining)} ago ({_when(end)})"
            out.append(
                Condition(
                    account=account,
                    kind=kind,
                    level=level,
                    severity=Severity.CRITICAL if level >= len(warn) else Severity.WARNING,
                    summary=f"{what} of {account} {told}; {told_fix}",
                    action=fix.action,
                    expires_at=end,
                    reauthorize=fix.reauthorize,
                )
            )
    error = f" (last error: {_error_text(state)})" if state.last_error else ""
    if state.failed:
        code = state.last_error_code
        dead = False
        if code == "invalid_client":
            action = f"fix the client credentials of {account}, then: rotator refresh {account}"
        elif code == "secret_ref":
            action = "fix the secret reference named in the error, then reload rotator"
        elif code in _DEAD_GRANT_CODES or not code or non_renewable:
            action, dead = fix.action, fix.reauthorize
        else:
            action = f"fix the cause, then: rotator refresh {account}"
        out.append(
            Condition(
                account=account,
                kind=Kind.DEAD,
                level=1,
                severity=Severity.CRITICAL,
                summary=f"{account} can no longer be refreshed{error}; {action}",
                action=action,
                expires_at=state.expires_at,
                reauthorize=dead,
            )
        )
    elif state.consecutive_failures >= alerts.failure_threshold:
        action = f"rotator status; retry now with: rotator refresh {account}"
        out.append(
            Condition(
                account=account,
                kind=Kind.FAILURES,
                level=1,
                severity=Severity.WARNING,
                summary=(
                    f"{state.consecutive_failures} rotations of {account} failed in a row{error}; "
                    f"check: {action}"
                ),
                action=action,
                expires_at=state.expires_at,
            )
        )
    if (
        not state.failed
        and state.expires_at is not None
        and state.next_refresh_at is not None
        and state.expires_at < state.next_refresh_at
    ):
        lapsed = state.expires_at <= now
        action = f"rotator refresh {account}"
        told = "expired" if lapsed else "expires"
        out.append(
            Condition(
                account=account,
                kind=Kind.LAPSE,
                level=2 if lapsed else 1,
                severity=Severity.CRITICAL if lapsed else Severity.WARNING,
                summary=(
                    f"access token of {account} {told} {_when(state.expires_at)}, before the next "
                    f"refresh attempt at {_when(state.next_refresh_at)}; consumers get an expired "
                    f"token; retry now with: {action}"
                ),
                action=action,
                expires_at=state.expires_at,
            )
        )
    return out


#: error codes that mean the grant itself is gone (RFC 6749 5.2, and ours for "never seeded")
_DEAD_GRANT_CODES = frozenset(
    {"invalid_grant", "unauthorized_client", "access_denied", "invalid_token", "no_refresh_token"}
)


def _error_text(state: AccountState) -> str:
    """``last_error`` without any token of the state in it.

    The text is a vendor's, and vendors echo what they were sent (an
    ``invalid_grant`` naming the refresh token it refused). Rotation scrubs it
    before saving; it goes into every channel, the log and a child's stdin from
    here, so it is scrubbed again, by value, with every token the state holds.
    """
    tokens = (state.refresh_token, state.access_token)
    return scrub_values(
        state.last_error, (t.reveal() for t in tokens if t is not None), public=(state.account,)
    )


def plan(
    account: str,
    provider: str,
    conditions: Iterable[Condition],
    sent: Mapping[str, Sent],
    *,
    now: datetime,
    repeat: timedelta,
) -> tuple[list[Alert], dict[str, Sent]]:
    """What to send now and what will have been sent after it. Pure."""
    alerts: list[Alert] = []
    after: dict[str, Sent] = {}
    holding = {str(c.kind): c for c in conditions}
    for key, cond in holding.items():
        before = sent.get(key)

        def alert(repeat_: bool, cond: Condition = cond, since: datetime | None = None) -> Alert:
            return Alert(
                account=account,
                provider=provider,
                kind=cond.kind,
                status="firing",
                severity=cond.severity,
                summary=cond.summary,
                action=cond.action,
                at=now,
                repeat=repeat_,
                expires_at=cond.expires_at,
                since=since or now,
                reauthorize=cond.reauthorize,
            )

        if before is None:
            alerts.append(alert(False))
            after[key] = Sent(cond.level, str(cond.severity), now, now)
        elif cond.level > before.level:
            alerts.append(alert(False, since=before.first_at))
            after[key] = Sent(cond.level, str(cond.severity), before.first_at, now)
        elif now - before.last_at >= repeat:
            alerts.append(alert(True, since=before.first_at))
            after[key] = Sent(cond.level, str(cond.severity), before.first_at, now)
        else:
            # same level, or lower (a renewed grant still inside a threshold): remember
            # the level so crossing the next threshold again is told again.
            after[key] = Sent(
                min(cond.level, before.level), before.severity, before.first_at, before.last_at
            )
    for key, before in sent.items():
        if key in holding:
            continue
        try:
            kind = Kind(key)
        except ValueError:
            continue  # written by a newer version; forget it
        alerts.append(
            Alert(
                account=account,
                provider=provider,
                kind=kind,
                status="resolved",
                severity=Severity.INFO,
                summary=f"resolved: {_RESOLVED[kind].format(account=account)}",
                action="",
                at=now,
                since=before.first_at,
            )
        )
    return alerts, after


_RESOLVED = {
    Kind.REFRESH_TOKEN_EXPIRY: "the refresh token of {account} is no longer close to expiry",
    Kind.TOKEN_EXPIRY: "the personal access token of {account} is no longer close to expiry",
    Kind.FAILURES: "rotations of {account} succeed again",
    Kind.DEAD: "{account} can be refreshed again",
    Kind.LAPSE: "the access token of {account} is renewed in time again",
}
