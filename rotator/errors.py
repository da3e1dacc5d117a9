"""The one exception hierarchy of rotator.

::

    RotatorError
    ├── ConfigError                  bad configuration or usage (exit code 2)
    ├── SecretRefError               a secret reference that cannot be resolved
    ├── ProviderError                the vendor did not give us a token
    │   ├── TransientProviderError   timeouts, connection errors, 5xx, 429: retry later
    │   └── PermanentProviderError   retrying will not help until a human acts
    │       ├── InvalidGrant         the refresh token / grant is dead (re-authorize)
    │       └── InvalidClient        the client credentials are wrong
    ├── StoreError                   a secret store failed
    │   ├── StoreUnavailable         cannot reach the store (transient)
    │   ├── StoreAuthError           the store refused our credentials
    │   ├── StorePermissionError     authenticated, but the policy does not allow it
    │   ├── StoreConflict            compare-and-set lost: someone else wrote first
    │   ├── StoreNotManaged          the path exists and was not written by rotator
    │   └── StoreDamaged             the path holds something unreadable (its version given)
    └── LeaseHeld                    another worker is rotating this account now

Every message says what was wrong and, where we know it, what would be right.
No message ever carries a secret value: messages are built from names, codes
and the vendor's own error description (scrubbed by :func:`scrub`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "SCRUB_ANY",
    "ConfigError",
    "InvalidClient",
    "InvalidGrant",
    "LeaseHeld",
    "PermanentProviderError",
    "ProviderError",
    "RotatorError",
    "SecretRefError",
    "StoreAuthError",
    "StoreConflict",
    "StoreDamaged",
    "StoreError",
    "StoreNotManaged",
    "StorePermissionError",
    "StoreUnavailable",
    "TransientProviderError",
    "scrub",
    "scrub_values",
]

# Values that look like credentials inside a vendor's free-text answer.
_SCRUB_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)\b(access_token|refresh_token|id_token|token_|token|code_|code|password|"
        r"client_secret|secret_id|secret)(\"?\s*[:=]\s*\"?)[^\s\"&,;}]+"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
)
#: matches wherever :func:`scrub` would change a string (a pattern, or whitespace it folds)
SCRUB_ANY = re.compile(
    "|".join(
        f"(?i:{p.pattern.removeprefix('(?i)')})" if p.flags & re.IGNORECASE else f"(?:{p.pattern})"
        for p in _SCRUB_PATTERNS
    )
    + r"|\s"
)


def scrub(text: str, limit: int = 300) -> str:
    """Remove credential-looking values from *text* and cap its length."""
    text = _SCRUB_PATTERNS[0].sub(lambda m: f"{m.group(1)} ***", text)
    text = _SCRUB_PATTERNS[1].sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _SCRUB_PATTERNS[2].sub("***", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scrub_values(text: str, values: Iterable[str | None]) -> str:
    """Replace every occurrence of each known secret value in *text* with ``***``.

    Scrubbing by value, for every secret an account knows (its refresh and
    access tokens, client secret, password, API code, the refresh token just
    spent), is what keeps a vendor that echoes a secret in free text from
    publishing it; patterns only catch the shapes someone thought of.
    """
    for value in sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


class RotatorError(Exception):
    """Base of every error rotator raises on purpose."""


class ConfigError(RotatorError):
    """The configuration (or the command line) is wrong; the message names the key."""

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class SecretRefError(RotatorError):
    """A secret reference (env:, file:, cred:) cannot be resolved."""


class ProviderError(RotatorError):
    """The vendor did not give us a token.

    ``code`` is the vendor's error code (``invalid_grant``...) or a short kind of
    our own (``http_503``, ``timeout``, ``bad_response``); ``description`` is the
    vendor's scrubbed explanation.
    """

    transient: bool = False

    def __init__(
        self,
        code: str,
        description: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.description = scrub(description) if description else ""
        self.status = status
        self.retry_after = retry_after
        parts = [code]
        if status is not None:
            parts.append(f"(HTTP {status})")
        if self.description:
            parts.append(f"- {self.description}")
        super().__init__(" ".join(parts))


class TransientProviderError(ProviderError):
    """Worth retrying later: timeout, connection error, 5xx, 429."""

    transient = True


class PermanentProviderError(ProviderError):
    """Retrying will not help until a human changes something."""


class InvalidGrant(PermanentProviderError):
    """The grant (refresh token, authorization, password) was refused."""


class InvalidClient(PermanentProviderError):
    """The client credentials were refused."""


class StoreError(RotatorError):
    """A secret store failed. ``store`` is the configured store's name."""

    transient: bool = False

    def __init__(self, message: str, *, store: str = "", path: str = "") -> None:
        self.store = store
        self.path = path
        prefix = f"{store}: " if store else ""
        super().__init__(prefix + message)


class StoreUnavailable(StoreError):
    """The store cannot be reached or answered with a server error."""

    transient = True


class StoreAuthError(StoreError):
    """The store refused our credentials."""


class StorePermissionError(StoreError):
    """Authenticated, but the policy does not allow the operation."""


class StoreConflict(StoreError):
    """Compare-and-set failed: the value changed since we read it."""

    transient = True


class StoreNotManaged(StoreError):
    """The path holds a secret rotator did not write; set ``adopt: true`` to take it over."""


class StoreDamaged(StoreError):
    """The path holds data that cannot be read in the expected format.

    ``version`` is the version of what is there: a writer that will replace it
    anyway (a sink, rendered from the state) writes against it; a reader that
    needs its contents (the state) stops.
    """

    def __init__(
        self, message: str, *, store: str = "", path: str = "", version: int | str
    ) -> None:
        super().__init__(message, store=store, path=path)
        self.version = version


class LeaseHeld(RotatorError):
    """Another worker holds this account's lease until ``until`` (unix seconds)."""

    def __init__(self, account: str, owner: str, until: float) -> None:
        self.account = account
        self.owner = owner
        self.until = until
        super().__init__(f"{account}: another worker ({owner}) is rotating it")
