"""The state of one account, as kept in the state store. Pure: no I/O.

The state is the source of truth for the grant: the current refresh token,
the last access token (so sinks can be re-published), the planned next run,
the lease, and the last outcome. It is a flat string map so every store
(files, Vault KV v2, Secrets Manager) holds it the same way.

Formats. A record says which format it is in (``format``) and the oldest
release that reads that format (``requires``). A rotator reads its own format
and every older one; a newer one it refuses (:class:`~rotator.errors.NewerFormat`)
and leaves exactly as it is, so a downgrade, or an older replica beside a newer
one, never misreads a grant nor overwrites it with what it understood. The
format goes up when an older rotator would lose or misread something by
rewriting a record (a field moved, renamed, or meaning something else); a new
optional field that an older rotator may drop unharmed keeps the format.
:func:`newer_format` words the refusal for the spool's entries too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from rotator import __version__
from rotator.errors import NewerFormat, StoreError
from rotator.secrets import Secret
from rotator.tokens import TokenSet, format_time, parse_time

__all__ = [
    "STATE_FORMAT",
    "STATE_REQUIRES",
    "AccountState",
    "describe",
    "newer_format",
    "requires_release",
]

#: the format of the state records this rotator writes (and the newest it reads)
STATE_FORMAT = "1"
#: the oldest release that reads STATE_FORMAT, written beside it: what a rotator
#: that meets a newer format tells its operator to upgrade to
STATE_REQUIRES = "rotator>=0.1.0"
_REQUIRES = re.compile(r"rotator>=([0-9][0-9A-Za-z.+-]{0,31})")
_FORMAT = re.compile(r"[1-9][0-9]{0,8}")

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
        return replace(self, **self.token_fields(tokens))

    def token_fields(self, tokens: TokenSet) -> dict[str, Any]:
        """What :meth:`with_tokens` changes: a rotation's new state is then one copy of
        the twenty fields, with its other changes, not two."""
        return {
            "access_token": tokens.access_token,
            "token_type": tokens.token_type,
            "issued_at": tokens.issued_at,
            "expires_at": tokens.expires_at,
            "refresh_token": tokens.refresh_token,
            "refresh_expires_at": tokens.refresh_expires_at,
            "scope": tokens.scope,
            "extra": {**self.extra, **tokens.extra},
        }

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
        out: dict[str, str] = {"format": STATE_FORMAT, "requires": STATE_REQUIRES}
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
        """Read a stored state; unknown keys are ignored (a newer release's optional
        fields). A newer format raises :class:`NewerFormat`: nothing of it is read."""
        _check_format(account, data)
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


def _check_format(account: str, data: Mapping[str, str]) -> None:
    raw = data.get("format", "1")  # a record written by hand may leave it out
    if _FORMAT.fullmatch(raw) is None:
        raise StoreError(
            f"the stored state of {account} is damaged: field 'format' is not a format "
            f"number; it must be {STATE_FORMAT} (or left out) for this rotator to read it"
        )
    found, known = int(raw), int(STATE_FORMAT)
    if found > known:
        raise newer_format(
            f"the stored state of {account}", "state", found, known, data.get("requires", "")
        )


def requires_release(requires: str) -> str:
    """The release named by a ``requires`` text (``rotator>=X``), else "" (never the
    text itself: it is read from a store and may be anything)."""
    match = _REQUIRES.fullmatch(requires)
    return match.group(1) if match else ""


def newer_format(what: str, kind: str, found: int, known: int, requires: str) -> NewerFormat:
    """The refusal of ``what``, in ``kind`` format ``found`` (this rotator reads ``known``)."""
    release = requires_release(requires)
    upgrade = (
        f"upgrade rotator to at least {release}"
        if release
        else f"upgrade rotator to a release that reads {kind} format {found} (see the CHANGELOG)"
    )
    return NewerFormat(
        f"{what} is in {kind} format {found}, written by a newer rotator; rotator "
        f"{__version__} reads {kind} formats up to {known}, so it leaves it as it is and does "
        f"not touch the account: {upgrade}",
        found=found,
        known=known,
        requires=release,
    )


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
