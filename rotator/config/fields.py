"""The value types of the configuration: durations, URLs, store paths, file modes.

Each type is an ``Annotated`` pydantic type whose validator raises ``ValueError``,
so a bad value becomes a :class:`~rotator.errors.ConfigError` with its key path.
A configuration file is hostile input as much as a vendor's answer is: every
number here is bounded (a duration past :data:`MAX_DURATION` would overflow
``datetime`` arithmetic in the scheduler long after ``check`` said OK), every
string is read whole (``re.fullmatch``: ``$`` also matches before a trailing
newline), and a message quotes a value only through :func:`shown`, which
truncates it and never shows a URL's password.
"""

from __future__ import annotations

import math
import re
import reprlib
from datetime import timedelta
from typing import Annotated
from urllib.parse import unquote

from pydantic import AfterValidator, PlainSerializer, PlainValidator

from rotator.secrets import SecretRef, parse_ref

__all__ = [
    "MAX_DURATION",
    "Duration",
    "FileMode",
    "HttpUrl",
    "Listen",
    "PositiveDuration",
    "Ref",
    "StorePath",
    "StorePrefix",
    "has_userinfo",
    "parse_duration",
    "shown",
    "store_path_problem",
]

#: the longest duration any key takes (ten years): enough for a warning schedule,
#: far from ``timedelta``'s and ``datetime``'s overflow
MAX_DURATION = timedelta(days=3650)
_DURATION = re.compile(
    r"(?:(\d{1,20})d)?(?:(\d{1,20})h)?(?:(\d{1,20})m)?(?:(\d{1,20}(?:\.\d{1,9})?)s)?"
)
_DURATION_HINT = "write it like 30s, 5m, 1h or 7d"
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 60
_SHOWN.maxother = 60
_SHOWN.maxlevel = 2


def shown(value: object) -> str:
    """``repr(value)`` cut short: a message quotes what it refuses, never all of it."""
    if isinstance(value, str) and has_userinfo(value):
        return "(a URL with user:password@ in it)"
    try:
        return _SHOWN.repr(value)
    except ValueError:  # an int past Python's int -> str limit (4300 digits)
        return "(a number too long to show)"


def parse_duration(value: object) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``7d``, ``1h30m`` or a number of seconds, up to ten years."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"must be a duration; {_DURATION_HINT}")
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{shown(value)} is not a duration; {_DURATION_HINT}")
        if value > MAX_DURATION.total_seconds():  # before float(): 10**400 overflows it
            raise ValueError(f"{shown(value)} is too long; at most {MAX_DURATION.days}d")
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value.strip(" ")) if len(value) <= 40 else None
        if match is None or not any(match.groups()):
            raise ValueError(f"{shown(value)} is not a duration; {_DURATION_HINT}")
        days, hours, minutes, secs = match.groups()
        seconds = (
            int(days or 0) * 86400
            + int(hours or 0) * 3600
            + int(minutes or 0) * 60
            + float(secs or 0)
        )
    else:
        raise ValueError(f"must be a duration; {_DURATION_HINT}")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{shown(value)} is too long; at most {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def _format_duration(value: timedelta) -> str:
    return f"{int(value.total_seconds())}s"


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


def _ref(value: object) -> SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a secret reference string: env:NAME, file:/path or cred:NAME")
    return parse_ref(value)


#: what follows ``://`` up to the host when the URL carries ``user[:password]@``
_USERINFO = re.compile(r"[^/?#\s@]*@")


def has_userinfo(text: str) -> bool:
    """True when a URL in ``text`` carries ``user:password@`` (only the shape is read).

    ``str.find`` then an anchored match, not one ``re.search``: a pattern that
    may start anywhere rescans the string from every position (100 KB of
    letters took 27 s).
    """
    start = text.find("://")
    while start != -1:
        if _USERINFO.match(text, start + 3):
            return True
        start = text.find("://", start + 3)
    return False


#: C0 and C1 controls, DEL and the Unicode line separators: never part of a path or URL
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_URL = re.compile(r"https?://[^\s/?#@\\]+(?:[/?#]\S*)?")


def _http_url(value: str) -> str:
    if has_userinfo(value):
        raise ValueError(
            "must not carry user:password@ (credentials belong in a secret reference "
            "such as client_secret: env:NAME, never in a URL)"
        )
    if _CONTROL.search(value) or not _URL.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not an http:// or https:// URL "
            "(one line, no spaces or control characters)"
        )
    return value


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if (
        not sep
        or not host
        or _CONTROL.search(host)
        or not re.fullmatch(r"[0-9]{1,5}", port)
        or not 0 < int(port) < 65536
    ):
        raise ValueError(f"{shown(value)} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return value


def _mode(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o7777:
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        mode = int(value, 8)
    else:
        raise ValueError(f'{shown(value)} is not an octal file mode such as "0600"')
    if mode & 0o7000 or mode & 0o111:
        raise ValueError(f"{oct(mode)} must not be executable or set special bits")
    return mode


_DECODE_ROUNDS = 8
#: a store path's length, and one part's (NAME_MAX of every common file system)
MAX_PATH_CHARS = 1024
MAX_SEGMENT_BYTES = 255


def store_path_problem(path: str, *, empty_ok: bool = False) -> str | None:
    """Why ``path`` may not name a place in a store, or None when it may.

    Read as every backend might read it, percent-decoded again and again
    (``%252e`` -> ``%2e`` -> ``.``): Vault decodes the URL path, so
    ``apps/%2e%2e/%2e%2e/team-b`` would leave ``prefix``. A path is relative,
    one line, '/'-separated, and has no empty, ``.`` or ``..`` segment (one
    place in a store must have one spelling, or two writers could share it).
    """
    if not path:
        return None if empty_ok else "must not be empty"
    decoded = path
    for _ in range(_DECODE_ROUNDS):
        try:
            again = unquote(decoded, errors="strict") if "%" in decoded else decoded
        except UnicodeDecodeError:
            return "is not valid percent-encoded UTF-8"
        if again == decoded:
            break
        decoded = again
    else:
        return "is percent-encoded too many times over; write the path plainly"
    if _CONTROL.search(decoded):
        return "must not contain control characters (a newline, a tab, NUL)"
    if "\\" in decoded:
        return "must not contain a backslash; separate the parts with '/'"
    if decoded.startswith("/"):
        return "must be relative (no leading '/'); it is placed under the store's directory"
    if len(decoded) > MAX_PATH_CHARS:
        return f"is longer than {MAX_PATH_CHARS} characters"
    segments = decoded.split("/")
    if any(len(segment.encode()) > MAX_SEGMENT_BYTES for segment in segments):
        return f"has a part longer than {MAX_SEGMENT_BYTES} bytes (a file name's limit)"
    if ".." in segments or "." in segments:
        return "must not contain '.' or '..' parts (it must stay inside the store)"
    if "" in segments:
        return "must not contain an empty part ('//' or a trailing '/')"
    return None


def _store_path(value: str) -> str:
    problem = store_path_problem(value)
    if problem:
        raise ValueError(f"{shown(value)} {problem}")
    return value


def _store_prefix(value: str) -> str:
    problem = store_path_problem(value.strip("/"), empty_ok=True)
    if problem:
        raise ValueError(f"{shown(value)} {problem}")
    return value


Duration = Annotated[timedelta, PlainValidator(parse_duration), PlainSerializer(_format_duration)]
#: a duration where 0 would mean a busy loop (retry_initial: 0s retries a 503 at once, forever)
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Ref = Annotated[SecretRef, PlainValidator(_ref), PlainSerializer(str)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
FileMode = Annotated[int, PlainValidator(_mode), PlainSerializer(oct)]
Listen = Annotated[str, AfterValidator(_listen)]
#: a place in a store, relative to its directory / mount and prefix
StorePath = Annotated[str, AfterValidator(_store_path)]
#: a store's own prefix: a store path that may be empty or end in '/'
StorePrefix = Annotated[str, AfterValidator(_store_prefix)]
