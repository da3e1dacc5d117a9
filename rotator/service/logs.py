"""Logging: structlog over the standard library, with redaction.

JSON lines when the log stream is not a terminal (journald, Kubernetes), readable
console lines on a terminal. Logs go to stderr so that command output on stdout
(``status --json``) stays clean.

Redaction is the second line of defence (the first is :class:`~rotator.secrets.Secret`,
which prints ``***``): fields whose *name* says they hold a credential are masked,
and credential-looking substrings in every string value are scrubbed. The
first line is scrubbing by value where vendor text enters an exception
(rotator.tokens.oauth_error); the patterns here only catch credential shapes.

Vendor text may carry terminal escape sequences. Redaction escapes control
characters in every value (``\x1b`` stays visible, is never executed); console
lines pass once more through :func:`printable` line by line, so only the
newlines of a rendered traceback remain. JSON lines are JSON-escaped anyway.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from rotator.errors import SCRUB_ANY, printable, scrub
from rotator.secrets import Secret

__all__ = ["configure_logging", "redact"]

_SENSITIVE_KEY = re.compile(
    r"(?i)(^|_)(token|secret|password|passwd|authorization|cookie|code|credential|"
    r"jwt|api_key|apikey|session)$"
)
_ALLOWED_KEYS = frozenset({"error_code", "status_code", "exit_code", "last_error_code"})
_LIMIT = 2000  # characters per logged string value
_NUMBERS = frozenset({int, float, bool})
#: a credential's name in free text (rotator.errors' second scrub pattern) holds one of
#: these, in any case, before its ``:`` or ``=`` (tests/service/test_logs.py holds them to it)
_KEY_PARTS = ("token", "code", "passw", "secret", "key")
_KEY_PART = re.compile("|".join(_KEY_PARTS))


def _plain(value: str) -> bool:
    """True exactly when scrub() would leave ``value`` alone (``SCRUB_ANY`` finds nothing).

    Most logged strings (an event, an account, a level, a timestamp) are short
    printable ASCII; for them a few scans in C decide what the regex (about 2 us a
    string, 8 strings a line) would: no whitespace or control character (the folding,
    the escaping, and the ``bearer``/``basic`` pattern need one), no ``eyJ`` (a JWT),
    and no ``:`` or ``=`` unless no credential's name comes before it. Anything else
    goes to the regex.
    """
    if len(value) > _LIMIT:
        return False
    if value.isascii() and value.isprintable() and " " not in value and "eyJ" not in value:
        if ":" not in value and "=" not in value:
            return True
        if _KEY_PART.search(value.lower()) is None:
            return True
    return SCRUB_ANY.search(value) is None


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask credential fields and scrub credential-looking text.

    Runs after ``format_exc_info``, so a rendered traceback is scrubbed too, and
    walks into dicts and lists (a ``headers=`` field holds an Authorization).
    """
    for key, value in event.items():
        if type(value) is str and _plain(value):
            # the common case, decided without a call: plain text under a plain name
            if value and _sensitive_key(key):
                event[key] = "***"
        elif type(value) in _NUMBERS:
            # a count or a duration holds no text to scrub; only its name can mask it
            if _sensitive_key(key):
                event[key] = "***"
        elif value is not None:
            event[key] = _redact_value(key, value, keep_lines=key in ("exception", "stack"))
    return event


@functools.lru_cache(maxsize=1024)
def _sensitive_key(key: str) -> bool:
    return key not in _ALLOWED_KEYS and _SENSITIVE_KEY.search(key) is not None


def _redact_value(key: object, value: Any, *, keep_lines: bool = False, depth: int = 0) -> Any:
    if isinstance(value, Secret):
        return "***"
    if isinstance(key, str) and value is not None and value != "" and _sensitive_key(key):
        return "***"
    if isinstance(value, str):
        if _plain(value):
            return value  # nothing to scrub, no whitespace to fold
        if keep_lines:
            # split on newlines only: splitlines() would also break at \x1c, \x85 or
            # \u2028 from vendor text, forging lines
            return "\n".join(scrub(line, limit=_LIMIT) for line in value.split("\n"))
        return scrub(value, limit=_LIMIT)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}", limit=_LIMIT)
    if depth < 5 and isinstance(value, Mapping):
        return {k: _redact_value(k, v, depth=depth + 1) for k, v in value.items()}
    if depth < 5 and isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(None, v, depth=depth + 1) for v in value]
    return value


class _TerminalSafe:
    """A console renderer whose lines hold no control character but newlines.

    Values are made printable by :func:`redact` already; this catches what a
    renderer adds from elsewhere (a value's ``repr``, a key), so an ESC from a
    vendor can never reach the operator's terminal as one.
    """

    __slots__ = ("_renderer",)

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        text: str = self._renderer(logger, method, event)
        return "\n".join(printable(line) for line in text.split("\n"))


class _Emitter:
    """What structlog writes a rendered line to: a stdlib logger, minus the caller lookup.

    Lines still go through the standard library (its handlers, pytest's caplog),
    but ``Logger._log`` would walk the stack for a file name and line number that
    no format here prints: about a fifth of the cost of a line.
    """

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _emit(self, level: int, message: str) -> None:
        logger = self._logger
        if logger.isEnabledFor(level):
            only = _only_handler(logger, level)
            if only is not None:
                only.line(message)
                return
            logger.handle(
                logger.makeRecord(logger.name, level, "", 0, message, (), None, extra=_RENDERED)
            )

    def debug(self, message: str) -> None:
        self._emit(logging.DEBUG, message)

    def info(self, message: str) -> None:
        self._emit(logging.INFO, message)

    def warning(self, message: str) -> None:
        self._emit(logging.WARNING, message)

    def error(self, message: str) -> None:
        self._emit(logging.ERROR, message)

    def critical(self, message: str) -> None:
        self._emit(logging.CRITICAL, message)


def _only_handler(logger: logging.Logger, level: int) -> _LineHandler | None:
    """rotator's handler when a record of ``logger`` would reach it and no other
    handler, and nothing would filter it: the rendered line then goes straight to it,
    as the handler would write it, without a LogRecord built and dispatched (about a
    fifth of a line's cost). Any other handler (pytest's caplog, an embedder's) or a
    filter anywhere: the standard library's way, record and all."""
    if logger.filters or logger.disabled:
        return None
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or type(handler) is not _LineHandler:
                return None
            if handler.filters or level < handler.level:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """rotator's handler: a stream handler that can also take a rendered line as it is."""

    def line(self, message: str) -> None:
        """Write a rendered line as :meth:`emit` writes a record's (same lock, same end)."""
        try:
            self.acquire()
            try:
                self.stream.write(message + self.terminator)
                self.flush()
            finally:
                self.release()
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": message}))


#: marks a record whose message structlog has rendered already
_RENDERED = {"rotator_rendered": True}


class _Lines(logging.Formatter):
    """The handler's formatter: rotator's own lines as rendered, and every other library's
    record (tooz's stevedore at debug, a warning from urllib3) rendered the same way:
    a JSON line among JSON lines, with the same redaction, never plain text that breaks a
    log pipeline parsing JSON or carries a URL's query unscrubbed."""

    def __init__(self, renderer: Any) -> None:
        super().__init__()
        self._renderer = renderer
        self._stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "rotator_rendered", False):
            return record.getMessage()
        method = record.levelname.lower()
        event: MutableMapping[str, Any] = {
            "event": record.getMessage(),
            "logger": record.name,
            "level": method,
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        event = redact(None, method, self._stamp(None, method, event))
        rendered: str = self._renderer(None, method, event)
        return rendered


def _emitter(*args: Any) -> _Emitter:
    return _Emitter(args[0] if args and isinstance(args[0], str) else "rotator")


def configure_logging(
    *, fmt: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Set up structlog + stdlib logging once per process (idempotent)."""
    out = stream or sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not _isatty(out))
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json_lines
        else _TerminalSafe(structlog.dev.ConsoleRenderer(colors=False))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        logger_factory=_emitter,
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_rotator", False):
            root.removeHandler(handler)
    handler = _LineHandler(out)
    handler.setFormatter(_Lines(renderer))
    handler._rotator = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Third-party libraries log request URLs (which may carry query tokens) at INFO.
    for noisy in ("httpx", "httpcore", "urllib3", "botocore", "boto3", "hvac", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
