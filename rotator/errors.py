"""The one exception hierarchy of rotator.

::

    RotatorError
    ├── ConfigError                  bad configuration or usage (exit code 2)
    ├── SecretRefError               a secret reference that cannot be resolved
    ├── ProviderError                the vendor did not give us a token
    │   ├── TransientProviderError   timeouts, connection errors, 5xx, 429: retry later
    │   │   └── BadResponse          an answer that is no usable token response
    │   └── PermanentProviderError   retrying will not help until a human acts
    │       ├── InvalidGrant         the refresh token / grant is dead (re-authorize)
    │       └── InvalidClient        the client credentials are wrong
    ├── StoreError                   a secret store failed
    │   ├── StoreUnavailable         cannot reach the store (transient)
    │   ├── StoreAuthError           the store refused our credentials
    │   ├── StorePermissionError     authenticated, but the policy does not allow it
    │   ├── StoreConflict            compare-and-set lost: someone else wrote first
    │   ├── StoreNotManaged          the path exists and was not written by rotator
    │   ├── StoreDamaged             the path holds something unreadable (its version given)
    │   └── NewerFormat              written by a newer rotator: left as it is, never rewritten
    └── LeaseHeld                    another worker is rotating this account now

Every message says what was wrong and, where we know it, what would be right.
No message ever carries a secret value: messages are built from names, codes
and the vendor's own error description, scrubbed by value (:func:`scrub_values`,
with every secret the account knows, where the provider builds the error) and
by pattern (:func:`scrub`, here). No message carries a control character either
(:func:`printable`): they end up in terminals, logs and state records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

__all__ = [
    "COMMANDS",
    "SCRUB_ANY",
    "BadResponse",
    "ConfigError",
    "InvalidClient",
    "InvalidGrant",
    "LeaseHeld",
    "NewerFormat",
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
    "printable",
    "scrub",
    "scrub_values",
    "secret_values",
]

# Credential-looking values inside free text. Conservative on purpose: a key only
# counts when the separator is glued to it (``token=x``, ``"secret": "x"``, not
# ``.../token: unusable answer``) and the value only when it looks like a
# credential (see _looks_like_credential). The values an account knows are
# scrubbed by value (scrub_values); patterns are the net for what nobody knew.
_SCRUB_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]+)"),
    re.compile(
        r"(?i)(?<![\w/.-])(access_token|refresh_token|id_token|token_|token|code_|code|password|"
        r"passwd|client_secret|secret_id|secret|api_key|apikey)(\"?:\s*\"?|\"?=\"?)([^\s\"&,;}]+)"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
)
#: characters that must never reach a terminal, a log line or a state record as
#: they are: C0 controls, DEL, C1 controls, lone surrogates (unencodable in
#: UTF-8), and the Unicode line/paragraph separators and bidi overrides.
_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
#: matches wherever :func:`scrub` may change a string (a pattern, whitespace it
#: folds, a character it escapes); a superset is fine, it only skips work
SCRUB_ANY = re.compile(
    "|".join(
        f"(?i:{p.pattern.removeprefix('(?i)')})" if p.flags & re.IGNORECASE else f"(?:{p.pattern})"
        for p in _SCRUB_PATTERNS
    )
    + r"|\s|"
    + _UNPRINTABLE.pattern
)


def _looks_like_credential(value: str) -> bool:
    """Long enough, and not a plain word: a digit, a symbol or mixed case.

    ``token: unusable`` or ``token: rotator`` is prose; ``code=abc123``,
    ``password=Hunter2!`` or ``Bearer dXNlcjpwYXNz==`` is not.
    """
    if len(value) < 6:
        return False
    if any(c.isdigit() or not c.isalnum() for c in value):
        return True
    return not (value.islower() or value.isupper() or value.istitle())


def _mask(match: re.Match[str]) -> str:
    key, separator, value = match.group(1), match.group(2), match.group(3)
    return f"{key}{separator}***" if _looks_like_credential(value) else match.group(0)


def printable(text: str) -> str:
    """*text* with every control character, lone surrogate and line separator escaped.

    Vendor text goes into exception messages, state records, status output and
    console logs: an ESC would drive the operator's terminal, a newline would
    forge a log line or an ``env`` entry, a lone surrogate makes the UTF-8 state
    write fail. Escaped (``\\x1b``), they stay visible and harmless.
    """
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def scrub(text: str, limit: int = 300) -> str:
    """Remove credential-looking values from *text*, make it printable, cap its length."""
    text = _SCRUB_PATTERNS[0].sub(_mask, text)
    text = _SCRUB_PATTERNS[1].sub(_mask, text)
    text = _SCRUB_PATTERNS[2].sub("***", text)
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: the commands of rotator's command line (cli.build_parser; a test keeps them one list)
COMMANDS = frozenset(
    {
        "authorize",
        "check",
        "demo",
        "faxmax-login-url",
        "import",
        "probe",
        "refresh",
        "run",
        "status",
    }
)
_COMMAND_WORDS = "|".join(re.escape(c) for c in sorted(COMMANDS, key=len, reverse=True))


def _public_phrase(names: list[str]) -> re.Pattern[str]:
    """``rotator <command>`` as a fix text prints it, with one of *names* after it."""
    tail = "(?: (?:{}))?".format("|".join(re.escape(n) for n in names)) if names else ""
    return re.compile(rf"(?<![\w-])rotator (?:{_COMMAND_WORDS}){tail}(?![\w-])")


#: the command phrase without names (tests read it)
_COMMAND_PHRASE = _public_phrase([])


def scrub_values(text: str, values: Iterable[str | None], *, public: Iterable[str] = ()) -> str:
    """Replace every occurrence of each known secret value in *text* with ``***``.

    Scrubbing by value, for every secret an account knows (its refresh and
    access tokens, client secret, password, API code, the refresh token just
    spent), is what keeps a vendor that echoes a secret in free text from
    publishing it; patterns only catch the shapes someone thought of. Each
    value is also looked for URL-encoded, as a vendor may echo a request's form.

    An occurrence that lies wholly inside a phrase that is public is kept, so a
    secret that happens to be a common word never makes a fix text unusable (a
    password ``rotator`` once turned ``rotator import idp-api`` into
    ``*** import idp-api``). Public are ``rotator <command>`` (:data:`COMMANDS`)
    and the names in *public* (the account's name: every log line carries it).
    What is kept is the same whatever the secret is, so it tells nothing about
    it; an occurrence that reaches past a public phrase is scrubbed whole.
    """
    known: set[str] = set()
    for value in values:
        if value and len(value) >= 4:
            # surrogatepass: a value holding a lone surrogate (a hostile vendor's) is
            # still looked for, in the form a URL encoder would have sent it
            known.update(
                {
                    value,
                    quote(value, safe="", errors="surrogatepass"),
                    quote_plus(value, safe="", errors="surrogatepass"),
                }
            )
    found = [(start, start + len(value)) for value in known for start in _occurrences(text, value)]
    if not found:
        return text
    names = sorted({name for name in public if name}, key=len, reverse=True)
    kept = [m.span() for m in _public_phrase(names).finditer(text)]
    kept += [(start, start + len(name)) for name in names for start in _occurrences(text, name)]
    hidden = sorted(
        (start, end) for start, end in found if not any(a <= start and end <= b for a, b in kept)
    )
    shown: list[str] = []
    at = 0
    for start, end in hidden:
        if start < at:  # overlaps the occurrence before: one mask for both
            at = max(at, end)
            continue
        shown += [text[at:start], "***"]
        at = end
    shown.append(text[at:])
    return "".join(shown)


def _occurrences(text: str, value: str) -> Iterator[int]:
    """Every start of *value* in *text*, overlapping ones too."""
    start = text.find(value)
    while start != -1:
        yield start
        start = text.find(value, start + 1)


def secret_values(*values: object) -> tuple[str, ...]:
    """The revealed strings of *values* (``Secret``, ``str`` or ``None``), for scrub_values."""
    found: list[str] = []
    for value in values:
        reveal = getattr(value, "reveal", None)
        text = reveal() if callable(reveal) else value
        if isinstance(text, str) and text:
            found.append(text)
    return tuple(found)


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


class BadResponse(TransientProviderError):
    """The vendor answered, but not with a usable token response.

    A malformed body, a token with characters no RFC 6749 token has, a lifetime
    too short to use: nothing of it is written or published. Transient, because
    vendors that do this mostly stop doing it; the retries back off and, when
    it persists, the failure alerts like any other. The description names the
    field, never its value.
    """

    def __init__(self, description: str, *, status: int | None = None) -> None:
        super().__init__("bad_response", description, status=status)


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


class NewerFormat(StoreError):
    """A state record or spool entry in a format newer than this rotator reads.

    Raised by the reader instead of guessing: a field it does not know could
    hold the grant, so the record is left exactly as it is (no write, no set
    aside) and the account waits until a rotator that reads it runs.
    ``found`` and ``known`` are the two formats, ``requires`` the oldest release
    that reads ``found`` when the record says so (else "").
    """

    def __init__(
        self, message: str, *, found: int, known: int, requires: str = "", path: str = ""
    ) -> None:
        super().__init__(message, path=path)
        self.found = found
        self.known = known
        self.requires = requires


class LeaseHeld(RotatorError):
    """Another worker holds this account's lease until ``until`` (unix seconds)."""

    def __init__(self, account: str, owner: str, until: float) -> None:
        self.account = account
        self.owner = owner
        self.until = until
        super().__init__(f"{account}: another worker ({owner}) is rotating it")
