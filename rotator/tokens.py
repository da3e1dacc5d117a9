"""Token sets and the strict parsing of token responses. Pure: no I/O.

Rules (DESIGN.md):

- ``expires_at`` is the *local request time* plus ``expires_in``: the clock that
  matters is ours, and taking the time before the request errs on the early side.
- A response without ``refresh_token`` keeps the previous one.
- A response without ``expires_in`` gets the account's ``max_lifetime``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.errors import (
    InvalidClient,
    InvalidGrant,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from rotator.secrets import Secret

__all__ = [
    "MAX_RESPONSE_BYTES",
    "TokenSet",
    "error_from_status",
    "format_time",
    "oauth_error",
    "parse_time",
    "parse_token_response",
]

# A token response is a few KiB; anything much larger is not one.
MAX_RESPONSE_BYTES = 256 * 1024

# RFC 6749 section 5.2 error codes, and what each means for us.
_GRANT_ERRORS = {"invalid_grant", "unauthorized_client", "access_denied", "invalid_token"}
_CLIENT_ERRORS = {"invalid_client"}
_TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error", "slow_down"}
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class TokenSet:
    """What a vendor gave us. Secrets are :class:`Secret`; times are aware UTC."""

    access_token: Secret
    token_type: str
    issued_at: datetime
    expires_at: datetime
    refresh_token: Secret | None = None
    refresh_expires_at: datetime | None = None
    scope: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def lifetime(self) -> timedelta:
        return self.expires_at - self.issued_at

    def with_previous(self, previous: TokenSet | None) -> TokenSet:
        """Keep the previous refresh token (and its expiry) when the vendor sent none."""
        if self.refresh_token is not None or previous is None or previous.refresh_token is None:
            return self
        return replace(
            self,
            refresh_token=previous.refresh_token,
            refresh_expires_at=self.refresh_expires_at or previous.refresh_expires_at,
        )


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second: what consumers and state see."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 timestamp; naive values are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(value: Any, name: str) -> float | None:
    """A non-negative number of seconds from a JSON value (int, float or digit string)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PermanentProviderError("bad_response", f"{name} is a boolean, expected seconds")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise PermanentProviderError(
                "bad_response", f"{name} is not a number of seconds"
            ) from None
    # (math.isfinite would overflow on a JSON integer of a few hundred digits)
    if not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise PermanentProviderError("bad_response", f"{name} is not a number of seconds")
    if value < 0:
        raise PermanentProviderError("bad_response", f"{name} is negative ({value})")
    if value > 10 * 365 * 86400:
        raise PermanentProviderError("bad_response", f"{name} is more than ten years")
    return float(value)


def oauth_error(status: int, body: Mapping[str, Any]) -> ProviderError:
    """Map an RFC 6749 error body to our typed error."""
    code = body.get("error")
    # The code lands in state, logs and metric labels: take it only when it looks
    # like one (RFC 6749 codes are short ASCII words), never free text.
    code = code if isinstance(code, str) and _ERROR_CODE.match(code) else f"http_{status}"
    raw_description = body.get("error_description") or body.get("message") or ""
    description = raw_description if isinstance(raw_description, str) else ""
    if code in _GRANT_ERRORS:
        return InvalidGrant(code, description, status=status)
    if code in _CLIENT_ERRORS:
        return InvalidClient(code, description, status=status)
    if code in _TRANSIENT_ERRORS or status >= 500 or status == 429:
        return TransientProviderError(code, description, status=status)
    return PermanentProviderError(code, description, status=status)


def error_from_status(
    status: int, body: bytes, content_type: str, retry_after: str | None = None
) -> ProviderError:
    """An error for a non-2xx answer: the OAuth error body when there is one."""
    parsed: Any = None
    if body[:1] in (b"{", b" ", b"\n") or "json" in content_type:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
    if isinstance(parsed, dict) and status < 500 and status != 429:
        return oauth_error(status, parsed)
    described = _describe_body(body, content_type)
    if status == 429 or status >= 500:
        delay = _retry_after(retry_after)
        return TransientProviderError(f"http_{status}", described, status=status, retry_after=delay)
    if isinstance(parsed, dict):
        return oauth_error(status, parsed)
    if status == 401:
        return InvalidClient(f"http_{status}", described, status=status)
    return PermanentProviderError(f"http_{status}", described, status=status)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds <= 3600 else None


def _describe_body(body: bytes, content_type: str) -> str:
    if not body.strip():
        return "empty body"
    head = body[:200].decode("utf-8", "replace").lower()
    if "html" in content_type or head.lstrip().startswith(("<!doctype", "<html")):
        return f"an HTML page instead of a token response ({content_type or 'no content type'})"
    return f"a {content_type or 'untyped'} body that is not a token response"


def parse_token_response(
    body: bytes,
    *,
    status: int,
    content_type: str,
    requested_at: datetime,
    max_lifetime: timedelta,
    previous: TokenSet | None = None,
    retry_after: str | None = None,
) -> TokenSet:
    """Turn a token endpoint's answer into a :class:`TokenSet` or a typed error.

    Strict on purpose: anything that is not a well-formed token response raises,
    so nothing half-parsed can ever be written to a store.
    """
    if len(body) > MAX_RESPONSE_BYTES:
        raise PermanentProviderError(
            "bad_response", f"response is larger than {MAX_RESPONSE_BYTES} bytes", status=status
        )
    if not 200 <= status < 300:
        raise error_from_status(status, body, content_type, retry_after)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        raise PermanentProviderError(
            "bad_response", _describe_body(body, content_type), status=status
        ) from None
    if not isinstance(payload, dict):
        raise PermanentProviderError(
            "bad_response", f"expected a JSON object, got {type(payload).__name__}", status=status
        )
    if payload.get("error") not in (None, ""):
        # Some vendors answer errors with 200; the body decides ("error": null does not).
        raise oauth_error(status if status >= 400 else 400, payload)
    return tokenset_from_payload(
        payload, requested_at=requested_at, max_lifetime=max_lifetime, previous=previous
    )


def tokenset_from_payload(
    payload: Mapping[str, Any],
    *,
    requested_at: datetime,
    max_lifetime: timedelta,
    previous: TokenSet | None = None,
    access_key: str = "access_token",
) -> TokenSet:
    """Build a TokenSet from an already-decoded JSON object (pure)."""
    access = payload.get(access_key)
    if not isinstance(access, str) or not access.strip():
        raise PermanentProviderError("bad_response", f"no {access_key} in the response")
    token_type = payload.get("token_type", "Bearer")
    if not isinstance(token_type, str) or not token_type:
        raise PermanentProviderError("bad_response", "token_type is not a string")
    expires_in = _seconds(payload.get("expires_in"), "expires_in")
    lifetime = timedelta(seconds=expires_in) if expires_in is not None else max_lifetime
    refresh = payload.get("refresh_token")
    if refresh is not None and (not isinstance(refresh, str) or not refresh.strip()):
        raise PermanentProviderError("bad_response", "refresh_token is not a non-empty string")
    refresh_in = _seconds(
        payload.get("refresh_token_expires_in", payload.get("refresh_expires_in")),
        "refresh_token_expires_in",
    )
    scope = payload.get("scope")
    extra = {
        key: str(value)
        for key, value in payload.items()
        if key in ("user_id", "id_token_present") and isinstance(value, str | int)
    }
    tokens = TokenSet(
        access_token=Secret(access),
        token_type="Bearer" if token_type.lower() == "bearer" else token_type,
        issued_at=requested_at,
        expires_at=requested_at + lifetime,
        refresh_token=Secret(refresh) if refresh else None,
        # Keycloak sends refresh_expires_in: 0 for offline tokens, which do not expire.
        refresh_expires_at=(requested_at + timedelta(seconds=refresh_in) if refresh_in else None),
        scope=scope if isinstance(scope, str) else None,
        extra=extra,
    )
    return tokens.with_previous(previous)
