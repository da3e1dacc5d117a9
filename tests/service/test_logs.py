"""Logging and redaction (rotator/observability.py)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.errors import SCRUB_ANY, PermanentProviderError, scrub
from rotator.secrets import Secret
from rotator.service.logs import configure_logging, redact
from tests.support import leakcheck

TOKEN = leakcheck.register("at-obs-6c5d4e3f2a1b", "access token")
REFRESH = leakcheck.register("rt-obs-1a2b3c4d5e6f", "refresh token")


def run(**fields: Any) -> dict[str, Any]:
    return dict(redact(None, "info", dict(fields)))


@pytest.mark.parametrize(
    "key",
    [
        "access_token",
        "refresh_token",
        "token",
        "client_secret",
        "secret",
        "password",
        "authorization",
        "Authorization",
        "code",
        "auth_code",
        "cookie",
        "api_key",
        "session",
    ],
)
def test_credential_fields_are_masked(key: str) -> None:
    assert run(event="x", **{key: TOKEN})[key] == "***"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("token_url", "https://idp.example/oauth/token"),
        ("token_type", "Bearer"),
        ("expires_at", "2026-03-01T12:00:00Z"),
        ("refresh_token_expires_at", "2026-03-30T12:00:00Z"),
        ("error_code", "invalid_grant"),
        ("last_error_code", "invalid_client"),
        ("status_code", 400),
        ("account", "idp-api"),
        ("consecutive_failures", 3),
    ],
)
def test_descriptive_fields_are_kept(key: str, value: object) -> None:
    assert run(event="x", **{key: value})[key] == value


def test_empty_credential_fields_stay_empty() -> None:
    assert run(event="x", password="", token=None) == {"event": "x", "password": "", "token": None}


def test_secret_values_are_masked_whatever_the_field_name() -> None:
    assert run(event="x", value=Secret(TOKEN))["value"] == "***"


def test_credentials_inside_strings_are_scrubbed() -> None:
    out = run(
        event=f"sent refresh_token={REFRESH}",
        error=f"401 for Authorization: Bearer {TOKEN}",
        url=f"https://accounts.example/token?grant_type=refresh_token&refresh_token={REFRESH}",
    )
    text = json.dumps(out)
    assert TOKEN not in text
    assert REFRESH not in text
    assert "Bearer ***" in out["error"]
    assert "refresh_token=***" in out["url"]
    assert out["event"] == "sent refresh_token=***"


def test_nested_fields_are_redacted() -> None:
    out = run(
        event="request",
        headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        params=[{"refresh_token": REFRESH}, f"password={REFRESH}"],
    )
    text = json.dumps(out)
    assert TOKEN not in text
    assert REFRESH not in text
    assert out["headers"]["Accept"] == "application/json"
    assert out["headers"]["Authorization"] == "***"


def test_exceptions_are_scrubbed() -> None:
    out = run(event="failed", error=RuntimeError(f"refresh_token={REFRESH} rejected"))
    assert out["error"] == "RuntimeError: refresh_token=*** rejected"


_TRICKY = st.sampled_from(
    [
        *("Bearer ", "basic\t", "token=", "Refresh_Token: ", 'secret":"', "eyJ", "."),
        *(" ", "\x1c", "\u00a0"),  # whitespace scrub() folds
    ]
)


@given(st.lists(st.one_of(st.text(max_size=12), _TRICKY), max_size=8).map("".join))
def test_the_fast_path_skips_only_strings_scrub_leaves_alone(text: str) -> None:
    """redact() passes a string through untouched when SCRUB_ANY finds nothing in it."""
    if SCRUB_ANY.search(text) is None:
        assert scrub(text, limit=2000) == text
        assert run(note=text)["note"] == text
    else:
        assert run(note=text)["note"] == scrub(text, limit=2000)


_NAMES = st.sampled_from(
    ["access_token", "ToKeN", "code_", "PASSWD", "client_secret", "api_key", "apikey", "key"]
)
_SEPARATORS = st.sampled_from([":", "=", '":"', '"=', ": ", "T00:00:00Z", "-"])


@given(
    st.lists(
        st.one_of(st.text(max_size=8), st.text(alphabet="aZ09-_:=.T", max_size=8), _TRICKY)
        | _NAMES
        | _SEPARATORS,
        max_size=8,
    ).map("".join)
)
def test_the_plain_check_decides_exactly_as_the_scrub_regex(text: str) -> None:
    """_plain's scans in C answer what SCRUB_ANY would, for every string: never a
    string the regex would have caught passed as plain."""
    from rotator.service.logs import _LIMIT, _plain

    assert _plain(text) == (len(text) <= _LIMIT and SCRUB_ANY.search(text) is None)
    long = text * 300
    assert _plain(long) == (len(long) <= _LIMIT and SCRUB_ANY.search(long) is None)


def test_every_credential_name_of_the_scrub_patterns_holds_a_part_the_plain_check_knows() -> None:
    """_plain lets a ``:`` or ``=`` pass without the regex only when no credential's name
    could come before it: a name added to rotator.errors' patterns must be known here."""
    from rotator.errors import _SCRUB_PATTERNS
    from rotator.service.logs import _KEY_PARTS

    names = [
        name
        for pattern in _SCRUB_PATTERNS
        for group in re.findall(r"\(((?:[a-z_]+\|)+[a-z_]+)\)", pattern.pattern)
        for name in group.split("|")
    ]
    assert "refresh_token" in names and "apikey" in names  # the names were found
    for name in names:
        if name not in ("bearer", "basic"):  # these need whitespace, never plain
            assert any(part in name for part in _KEY_PARTS), name


def test_non_string_values_under_credential_names_are_masked() -> None:
    out = run(code=123456, token=["a"], session={"id": 1}, error_code=7, note=None)
    assert out == {"code": "***", "token": "***", "session": "***", "error_code": 7, "note": None}


_KEYS = st.sampled_from(["code", "token", "error_code", "status_code", "sinks_written", "n"])


@given(
    key=_KEYS | st.text(max_size=12),
    value=st.integers() | st.floats(allow_nan=False) | st.booleans(),
)
def test_a_number_is_masked_by_its_name_alone(key: str, value: object) -> None:
    """The fast path for counts and durations decides as the general one: a number
    holds no text to scrub, so only a credential's field name masks it (0 too)."""
    from rotator.service.logs import _redact_value

    assert run(**{key: value}) == {key: _redact_value(key, value)}


# -- configure_logging -------------------------------------------------------------------


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(fmt="auto", level="info", stream=out)
    try:
        yield out
    finally:
        # Back to what conftest set up for the rest of the suite.
        configure_logging(fmt="json", level="debug")
        logging.getLogger().setLevel(logging.DEBUG)


def test_json_lines_when_the_stream_is_not_a_terminal(stream: io.StringIO) -> None:
    log = structlog.get_logger("rotator.test")
    log.info("rotated", account="idp-api", access_token=TOKEN, expires_at="2026-03-01T12:00:00Z")
    log.warning("failed", error=f"Bearer {TOKEN}", client=Secret(REFRESH))
    log.debug("not shown at info")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["rotated", "failed"]
    first, second = lines
    assert first["account"] == "idp-api"
    assert first["access_token"] == "***"
    assert first["expires_at"] == "2026-03-01T12:00:00Z"
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert second["error"] == "Bearer ***"
    assert second["client"] == "***"
    assert TOKEN not in stream.getvalue()
    assert REFRESH not in stream.getvalue()


def test_a_line_goes_straight_to_rotators_handler_only_when_nothing_else_would_see_it(
    stream: io.StringIO,
) -> None:
    """Without a LogRecord when rotator's handler is the only one on the way (the daemon);
    the standard library's way, the same line, when another handler or a filter is."""
    from rotator.service.logs import _only_handler

    [ours] = [h for h in logging.getLogger().handlers if getattr(h, "_rotator", False)]
    alone = logging.getLogger("rotator.test-alone")
    alone.propagate = False
    alone.addHandler(ours)
    seen = logging.getLogger("rotator.test-seen")  # propagates to root: pytest's handlers too
    try:
        assert _only_handler(alone, logging.INFO) is ours
        assert _only_handler(seen, logging.INFO) is None
        for name in ("rotator.test-alone", "rotator.test-seen"):
            structlog.get_logger(name).info("rotated", account="idp-api", access_token=TOKEN)
        structlog.get_logger("rotator.test-alone").error("failed", error=f"Bearer {TOKEN}")
        quiet = logging.Filter("nothing-passes")
        alone.addFilter(quiet)
        assert _only_handler(alone, logging.INFO) is None
        structlog.get_logger("rotator.test-alone").info("filtered out")
        alone.removeFilter(quiet)
        ours.setLevel(logging.WARNING)
        assert _only_handler(alone, logging.INFO) is None
        assert _only_handler(alone, logging.ERROR) is ours
        ours.setLevel(logging.NOTSET)
    finally:
        alone.removeHandler(ours)
        alone.propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    for line in lines:
        line.pop("timestamp")
    direct, recorded, failed = lines
    assert (
        direct
        == recorded
        == {
            "account": "idp-api",
            "access_token": "***",
            "event": "rotated",
            "level": "info",
        }
    )
    assert failed == {"error": "Bearer ***", "event": "failed", "level": "error"}
    assert TOKEN not in stream.getvalue()


def test_tracebacks_are_scrubbed(stream: io.StringIO) -> None:
    log = structlog.get_logger("rotator.test")
    try:
        raise ValueError(f"https://idp/token?refresh_token={REFRESH}")
    except ValueError:
        log.exception("boom")
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert "ValueError" in line["exception"]
    assert "Traceback" in line["exception"]
    assert REFRESH not in stream.getvalue()


def test_console_lines_when_asked(stream: io.StringIO) -> None:
    out = io.StringIO()
    configure_logging(fmt="console", level="info", stream=out)
    structlog.get_logger("rotator.test").info("rotated", account="idp-api", token=TOKEN)
    text = out.getvalue()
    assert "rotated" in text
    assert "account=idp-api" in text
    assert not text.lstrip().startswith("{")
    assert TOKEN not in text


def test_noisy_libraries_are_quieted(stream: io.StringIO) -> None:
    assert logging.getLogger("httpx").level == logging.WARNING
    assert logging.getLogger("apscheduler").level == logging.WARNING


# -- every credential name of the pattern, and terminal-safe lines ----------------------

#: every name _SENSITIVE_KEY knows; removing one from the pattern fails its case here
_SENSITIVE_NAMES = [
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "cookie",
    "code",
    "credential",
    "jwt",
    "api_key",
    "apikey",
    "session",
]


@pytest.mark.parametrize("name", _SENSITIVE_NAMES)
@pytest.mark.parametrize("shape", ["{}", "db_{}", "X_{}"])
def test_every_sensitive_key_name_is_masked(name: str, shape: str) -> None:
    key = shape.format(name)
    # a plain value (the fast path) and a non-string one (the slow path)
    assert run(**{key: "plainvalue"})[key] == "***"
    assert run(**{key: 123456})[key] == "***"
    assert run(nested={key: "plainvalue"})["nested"][key] == "***"


_HOSTILE = "AT \x1b]0;owned\x07 \x1b[2J\x9b31m\r\nLD_PRELOAD=/x \x00 \ud800 \u2028 \x85 end"
_CONTROL = set(map(chr, [*range(0x20), *range(0x7F, 0xA0)])) | {"\u2028", "\u2029"}


def _bad_chars(text: str) -> set[str]:
    return {c for c in text if c in _CONTROL or "\ud800" <= c <= "\udfff"} - {"\n"}


def test_console_lines_show_control_characters_escaped() -> None:
    out = io.StringIO()
    configure_logging(fmt="console", level="info", stream=out)
    try:
        log = structlog.get_logger("rotator.test")
        log.warning(f"vendor said {_HOSTILE}", error=_HOSTILE, details={"why": _HOSTILE})
        try:
            # how vendor text reaches a traceback: in a ProviderError's description
            raise PermanentProviderError("invalid_request", _HOSTILE)
        except PermanentProviderError:
            log.exception("boom")
    finally:
        configure_logging(fmt="json", level="debug")
        logging.getLogger().setLevel(logging.DEBUG)
    text = out.getvalue()
    assert _bad_chars(text) == set()
    first, *traceback = text.rstrip("\n").split("\n")
    assert "vendor said" in first and "LD_PRELOAD" in first  # the first event is one line
    assert "\\x1b" in first  # visible, not executed
    assert "Traceback" in "\n".join(traceback)
    assert not any(line.startswith("LD_PRELOAD") for line in text.split("\n"))


def test_json_lines_carry_no_raw_control_character(stream: io.StringIO) -> None:
    structlog.get_logger("rotator.test").warning("x", error=_HOSTILE, note=[_HOSTILE])
    text = stream.getvalue()
    assert _bad_chars(text) == set()
    (line,) = text.splitlines()
    assert "LD_PRELOAD" in json.loads(line)["error"]


#: credential-shaped values a library's own record carries: not registered with the leak
#: check, because pytest's log capture keeps every record's raw message (rotator's own are
#: rendered and redacted before they reach the standard library; another library's are not)
_FOREIGN_REFRESH = "rt-foreign-7f3e9a1c5b"
_FOREIGN_TOKEN = "at-foreign-2d8b6e4f0a"


@settings(max_examples=50)
@given(
    name=st.from_regex(r"[a-z][a-z0-9_.]{0,30}", fullmatch=True),
    text=st.text(max_size=200),
    level=st.sampled_from([logging.WARNING, logging.ERROR, logging.CRITICAL]),
)
def test_other_libraries_records_are_json_lines_too(name: str, text: str, level: int) -> None:
    # the class: whatever a third-party library logs through the standard library (tooz's
    # stevedore at debug, urllib3's warnings) comes out as a JSON line among JSON lines,
    # redacted like rotator's own, never as plain text a log pipeline cannot parse
    out = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=out)
    try:
        logging.getLogger(f"thirdparty.{name}").log(
            level, "%s at https://idp/token?refresh_token=%s", text, _FOREIGN_REFRESH
        )
        structlog.get_logger("rotator.test").info("own", account="a")
        lines = [json.loads(line) for line in out.getvalue().split("\n") if line]
    finally:
        configure_logging(fmt="json", level="debug")
        logging.getLogger().setLevel(logging.DEBUG)
    foreign, own = lines
    assert foreign["logger"] == f"thirdparty.{name}"
    assert foreign["level"] == logging.getLevelName(level).lower()
    assert foreign["timestamp"].endswith("Z") and own["event"] == "own"
    assert _FOREIGN_REFRESH not in out.getvalue()


def test_another_librarys_exception_is_a_scrubbed_json_field() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", level="info", stream=out)
    try:
        try:
            raise RuntimeError(f"Bearer {_FOREIGN_TOKEN}")
        except RuntimeError:
            logging.getLogger("stevedore.extension").exception("could not load")
    finally:
        configure_logging(fmt="json", level="debug")
        logging.getLogger().setLevel(logging.DEBUG)
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "could not load" and "RuntimeError" in line["exception"]
    assert _FOREIGN_TOKEN not in out.getvalue()
