"""Token sets and the strict parsing of token responses. Pure: no I/O.

Rules (DESIGN.md):

- ``expires_at`` is the *local request time* plus ``expires_in``: the clock that
  matters is ours, and taking the time before the request errs on the early side.
- A response without ``refresh_token`` keeps the previous one.
- A response without ``expires_in`` gets the account's ``max_lifetime``; one
  below ``min_lifetime`` (:data:`MIN_LIFETIME` unless the account says less) is
  refused: refreshing every second and publishing tokens that are already
  expired helps nobody and hammers the vendor.
- Every string that reaches state or a sink holds only what RFC 6749 allows
  (printable ASCII for tokens, ``type-name`` characters for ``token_type``,
  ``NQCHAR`` scope tokens): a newline in a token would forge a line of an
  ``env`` sink, a lone surrogate would make the UTF-8 state write fail. Anything
  else is :class:`~rotator.errors.BadResponse` naming the field, never the value.
- Vendor error text is scrubbed of every secret value the account knows
  (``secrets=``) before it is put in an exception.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from rotator.errors import (
    BadResponse,
    InvalidClient,
    InvalidGrant,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    scrub_values,
)
from rotator.politeness import retry_after_seconds
from rotator.secrets import Secret

__all__ = [
    "MAX_RESPONSE_BYTES",
    "MIN_LIFETIME",
    "ConsumerView",
    "TokenSet",
    "ViewValue",
    "error_from_status",
    "format_time",
    "oauth_error",
    "parse_time",
    "parse_token_response",
    "token_string",
    "tokenset_from_payload",
]

# A token response is a few KiB; anything much larger is not one.
MAX_RESPONSE_BYTES = 256 * 1024

# RFC 6749 section 5.2 error codes, and what each means for us.
_GRANT_ERRORS = {"invalid_grant", "unauthorized_client", "access_denied", "invalid_token"}
_CLIENT_ERRORS = {"invalid_client"}
_TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error", "slow_down"}
# Narrower than RFC 6749's error set (%x20-21 / %x23-5B / %x5D-7E): the code is a
# metric label and a state field, so a short word, no spaces.
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")

#: the shortest access token lifetime taken from a vendor unless an account sets
#: ``min_lifetime`` lower (a sandbox whose tokens live seconds)
MIN_LIFETIME = timedelta(seconds=60)
_TEN_YEARS = 10 * 365 * 86400

# RFC 6749 appendix A: VSCHAR for tokens, type-name for token_type, NQCHAR scopes.
_VSCHAR = re.compile(r"[\x20-\x7e]+")
_TYPE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_EXTRA_KEYS = ("user_id", "id_token_present")
_EXTRA_LIMIT = 256


#: one value of a consumer view: text, or an object of texts that a consumer uses as
#: it is (Fax.Plus ``headers``: ``requests.get(url, headers=secret["headers"])``).
#: Not ``str`` alone: an object flattened into a JSON string has to be decoded twice,
#: and a view typed ``dict[str, str]`` invites exactly that.
ViewValue: TypeAlias = str | Mapping[str, str]
#: what sinks receive (DESIGN.md, "What sinks receive"): JSON values, not only strings
ConsumerView: TypeAlias = Mapping[str, ViewValue]


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
        raise BadResponse(f"{name} is a boolean, expected seconds")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise BadResponse(f"{name} is not a number of seconds") from None
    # (math.isfinite would overflow on a JSON integer of a few hundred digits)
    if not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise BadResponse(f"{name} is not a number of seconds")
    if value < 0:
        raise BadResponse(f"{name} is negative ({value})")
    if value > _TEN_YEARS:
        raise BadResponse(f"{name} is more than ten years")
    return float(value)


def oauth_error(status: int, body: Mapping[str, Any], secrets: Iterable[str] = ()) -> ProviderError:
    """Map an RFC 6749 error body to our typed error.

    ``secrets`` are the values the account knows (tokens, client secret,
    password...): vendors echo them ("The refresh token <RT> is invalid"), so
    they are scrubbed from the description, and an ``error`` that holds one is
    no code.
    """
    known = tuple(secrets)
    raw_code = body.get("error")
    raw_description = body.get("error_description") or body.get("message") or ""
    description = raw_description if isinstance(raw_description, str) else ""
    # The code lands in state, logs and metric labels: take it only when it looks
    # like one (RFC 6749 codes are short ASCII words), never free text or a token.
    if (
        isinstance(raw_code, str)
        and _ERROR_CODE.match(raw_code)
        and scrub_values(raw_code, known) == raw_code
    ):
        code = raw_code
    else:
        code = f"http_{status}"
        if raw_code not in (None, ""):
            shape = f"{len(raw_code)} characters" if isinstance(raw_code, str) else "not a string"
            description = f"(an error code that is not one, {shape}, not shown) {description}"
    description = scrub_values(description, known)
    if code in _GRANT_ERRORS:
        return InvalidGrant(code, description, status=status)
    if code in _CLIENT_ERRORS:
        return InvalidClient(code, description, status=status)
    if code in _TRANSIENT_ERRORS or status >= 500 or status == 429:
        return TransientProviderError(code, description, status=status)
    return PermanentProviderError(code, description, status=status)


def error_from_status(
    status: int,
    body: bytes,
    content_type: str,
    retry_after: str | None = None,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """An error for a non-2xx answer: the OAuth error body when there is one."""
    parsed: Any = None
    if body[:1] in (b"{", b" ", b"\n") or "json" in content_type:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
    if isinstance(parsed, dict) and status < 500 and status != 429:
        return oauth_error(status, parsed, secrets)
    described = _describe_body(body, content_type)
    if status == 429 or status >= 500:
        delay = retry_after_seconds(retry_after, time.time())
        return TransientProviderError(f"http_{status}", described, status=status, retry_after=delay)
    if isinstance(parsed, dict):
        return oauth_error(status, parsed, secrets)
    if status == 401:
        return InvalidClient(f"http_{status}", described, status=status)
    return PermanentProviderError(f"http_{status}", described, status=status)


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
    min_lifetime: timedelta = MIN_LIFETIME,
    secrets: Iterable[str] = (),
) -> TokenSet:
    """Turn a token endpoint's answer into a :class:`TokenSet` or a typed error.

    Strict on purpose: anything that is not a well-formed token response raises,
    so nothing half-parsed can ever be written to a store.
    """
    if len(body) > MAX_RESPONSE_BYTES:
        raise BadResponse(f"response is larger than {MAX_RESPONSE_BYTES} bytes", status=status)
    if not 200 <= status < 300:
        raise error_from_status(status, body, content_type, retry_after, secrets)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        raise BadResponse(_describe_body(body, content_type), status=status) from None
    if not isinstance(payload, dict):
        raise BadResponse(f"expected a JSON object, got {type(payload).__name__}", status=status)
    if payload.get("error") not in (None, ""):
        # Some vendors answer errors with 200; the body decides ("error": null does not).
        raise oauth_error(status if status >= 400 else 400, payload, secrets)
    try:
        return tokenset_from_payload(
            payload,
            requested_at=requested_at,
            max_lifetime=max_lifetime,
            min_lifetime=min_lifetime,
            previous=previous,
        )
    except BadResponse as exc:
        raise BadResponse(exc.description, status=status) from None


def token_string(value: Any, name: str, *, required: bool = True) -> str | None:
    """A token (access, refresh, session) as RFC 6749 allows it: printable ASCII.

    Raises :class:`BadResponse` naming *name*, never the value.
    """
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        if required:
            raise BadResponse(f"no {name} in the response (missing, empty or not a string)")
        raise BadResponse(f"{name} is not a non-empty string")
    if not _VSCHAR.fullmatch(value):
        raise BadResponse(
            f"{name} holds characters no token has (RFC 6749 allows printable ASCII, "
            "%x20-7E); refused before anything is written"
        )
    return value


def _token_type(value: Any) -> str:
    if value is None:
        return "Bearer"
    if not isinstance(value, str) or not _TYPE_NAME.fullmatch(value):
        raise BadResponse(
            "token_type is not an RFC 6749 type name (letters, digits, '-', '.', '_'; at most 64)"
        )
    return "Bearer" if value.lower() == "bearer" else value


def _scope(value: Any) -> str | None:
    # Some vendors send a list: not RFC 6749, and not needed, so it is dropped.
    if not isinstance(value, str) or not value.strip(" "):
        return None
    tokens = [token for token in value.split(" ") if token]
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise BadResponse("scope holds characters RFC 6749 scope tokens cannot have")
    return " ".join(tokens)


def _extra(payload: Mapping[str, Any]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for key in _EXTRA_KEYS:
        value = payload.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue
        text = str(value) if isinstance(value, int) else value
        if len(text) > _EXTRA_LIMIT or not _VSCHAR.fullmatch(text):
            raise BadResponse(f"{key} is not printable ASCII of at most {_EXTRA_LIMIT} characters")
        extra[key] = text
    return extra


def _lifetime(payload: Mapping[str, Any], max_lifetime: timedelta, floor: timedelta) -> timedelta:
    expires_in = _seconds(payload.get("expires_in"), "expires_in")
    if expires_in is None:
        return max_lifetime
    if expires_in < floor.total_seconds():
        raise BadResponse(
            f"expires_in is {expires_in:g}s, below the {floor.total_seconds():g}s this account "
            "accepts (min_lifetime); such a token would be expired before it is used"
        )
    return timedelta(seconds=expires_in)


def tokenset_from_payload(
    payload: Mapping[str, Any],
    *,
    requested_at: datetime,
    max_lifetime: timedelta,
    min_lifetime: timedelta = MIN_LIFETIME,
    previous: TokenSet | None = None,
    access_key: str = "access_token",
) -> TokenSet:
    """Build a TokenSet from an already-decoded JSON object (pure).

    Every field is checked before the TokenSet exists: a half-valid answer
    never reaches the state write.
    """
    access = token_string(payload.get(access_key), access_key)
    refresh = token_string(payload.get("refresh_token"), "refresh_token", required=False)
    token_type = _token_type(payload.get("token_type"))
    lifetime = _lifetime(payload, max_lifetime, min_lifetime)
    refresh_in = _seconds(
        payload.get("refresh_token_expires_in", payload.get("refresh_expires_in")),
        "refresh_token_expires_in",
    )
    tokens = TokenSet(
        access_token=Secret(access or ""),
        token_type=token_type,
        issued_at=requested_at,
        expires_at=requested_at + lifetime,
        refresh_token=Secret(refresh) if refresh else None,
        # Keycloak sends refresh_expires_in: 0 for offline tokens, which do not expire.
        refresh_expires_at=(requested_at + timedelta(seconds=refresh_in) if refresh_in else None),
        scope=_scope(payload.get("scope")),
        extra=_extra(payload),
    )
    return tokens.with_previous(previous)
