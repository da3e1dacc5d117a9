"""The state of one account, as kept in the state store. Pure: no I/O.

The state is the source of truth for the grant: the current refresh token,
the last access token (so sinks can be re-published), the planned next run,
the lease, and the last outcome. It is a flat string map so every store
(files, Vault KV v2, Secrets Manager) holds it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from rotator.errors import StoreError
from rotator.secrets import Secret
from rotator.tokens import TokenSet, format_time, parse_time

__all__ = ["STATE_FORMAT", "AccountState", "describe"]

STATE_FORMAT = "1"

_TIME_FIELDS = (
    "issued_at",
    "expires_at",
    "refresh_expires_at",
    "authorized_at",
    "next_refresh_at",
    "last_attempt_at",
    "last_success_at",
    "lease_until",
)
_SECRET_FIELDS = ("access_token", "refresh_token")


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything rotator remembers about one account between rotations."""

    account: str
    provider: str = ""
    access_token: Secret | None = None
    token_type: str = "Bearer"
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    refresh_token: Secret | None = None
    refresh_expires_at: datetime | None = None
    authorized_at: datetime | None = None
    scope: str | None = None
    next_refresh_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str = ""
    last_error_code: str = ""
    consecutive_failures: int = 0
    failed: bool = False  # permanent failure: waits for a reload or a manual refresh
    lease_owner: str = ""
    lease_until: datetime | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # provider-specific, non-secret

    # -- views -----------------------------------------------------------------

    def tokenset(self) -> TokenSet | None:
        if self.access_token is None or self.issued_at is None or self.expires_at is None:
            return None
        return TokenSet(
            access_token=self.access_token,
            token_type=self.token_type,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            refresh_token=self.refresh_token,
            refresh_expires_at=self.refresh_expires_at,
            scope=self.scope,
            extra=dict(self.extra),
        )

    def with_tokens(self, tokens: TokenSet) -> AccountState:
        return replace(
            self,
            access_token=tokens.access_token,
            token_type=tokens.token_type,
            issued_at=tokens.issued_at,
            expires_at=tokens.expires_at,
            refresh_token=tokens.refresh_token,
            refresh_expires_at=tokens.refresh_expires_at,
            scope=tokens.scope,
            extra={**self.extra, **tokens.extra},
        )

    def lease_held_by_other(self, owner: str, now: datetime) -> bool:
        return bool(
            self.lease_owner
            and self.lease_owner != owner
            and self.lease_until is not None
            and self.lease_until > now
        )

    def same_grant(self, other: AccountState) -> bool:
        """True when both states hold the same refresh token and access token."""
        return (self.refresh_token == other.refresh_token) and (
            self.access_token == other.access_token
        )

    # -- (de)serialisation -------------------------------------------------------

    def to_record(self) -> dict[str, str]:
        out: dict[str, str] = {"format": STATE_FORMAT}
        for f in fields(self):
            value: Any = getattr(self, f.name)
            if value is None or value == "" or (f.name == "consecutive_failures" and not value):
                continue
            if f.name in _SECRET_FIELDS:
                out[f.name] = value.reveal()
            elif f.name in _TIME_FIELDS:
                out[f.name] = format_time(value) if value.microsecond == 0 else _precise(value)
            elif f.name == "extra":
                if value:
                    out[f.name] = json.dumps(dict(value), sort_keys=True)
            elif f.name == "failed":
                if value:
                    out[f.name] = "true"
            else:
                out[f.name] = str(value)
        return out

    @classmethod
    def from_record(cls, account: str, data: Mapping[str, str]) -> AccountState:
        """Read a stored state; unknown keys are ignored (forward compatible)."""
        kwargs: dict[str, Any] = {"account": account}
        for f in fields(cls):
            if f.name == "account" or f.name not in data:
                continue
            try:
                kwargs[f.name] = _load_field(f.name, data[f.name])
            except (ValueError, TypeError, AttributeError) as exc:
                # Never the value itself: a shuffled record could put a token anywhere.
                raise StoreError(
                    f"the stored state of {account} is damaged: field {f.name!r} cannot be "
                    f"read ({type(exc).__name__}); repair or remove that field (the others, "
                    "the refresh token among them, are kept)"
                ) from None
        return cls(**kwargs)


def _load_field(name: str, raw: str) -> Any:
    if name in _SECRET_FIELDS:
        return Secret(raw) if raw else None
    if name in _TIME_FIELDS:
        return parse_time(raw) if raw else None
    if name == "extra":
        loaded = json.loads(raw) if raw else {}
        return {str(k): str(v) for k, v in loaded.items()}
    if name == "failed":
        return raw == "true"
    if name == "consecutive_failures":
        return int(raw or 0)
    return raw


def _precise(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def describe(states: Iterable[AccountState]) -> list[dict[str, Any]]:
    """Non-secret summaries of account states (for status and logs)."""
    out = []
    for state in states:
        out.append(
            {
                "account": state.account,
                "provider": state.provider,
                "access_token_expires_at": _opt(state.expires_at),
                "refresh_token_expires_at": _opt(state.refresh_expires_at),
                "has_refresh_token": state.refresh_token is not None,
                "last_success_at": _opt(state.last_success_at),
                "next_refresh_at": _opt(state.next_refresh_at),
                "consecutive_failures": state.consecutive_failures,
                "failed": state.failed,
                "last_error": state.last_error,
            }
        )
    return out


def _opt(moment: datetime | None) -> str | None:
    return format_time(moment) if moment else None
