"""Strict parsing of token responses (rotator/tokens.py). Pure: no server."""

from __future__ import annotations

import email.utils
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.errors import (
    BadResponse,
    InvalidClient,
    InvalidGrant,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    scrub,
    scrub_values,
)
from rotator.secrets import Secret
from rotator.tokens import (
    MAX_RESPONSE_BYTES,
    MIN_LIFETIME,
    TokenSet,
    format_time,
    parse_time,
    parse_token_response,
)
from tests.support import leakcheck

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
ACCESS = leakcheck.register("at-3f9c2b7e1d0a", "access token")
REFRESH = leakcheck.register("rt-8e7d6c5b4a39", "refresh token")


def parse(
    body: bytes | dict[str, Any] | list[Any] | str,
    status: int = 200,
    content_type: str = "application/json",
    previous: TokenSet | None = None,
    retry_after: str | None = None,
) -> TokenSet:
    if isinstance(body, dict | list):
        raw = json.dumps(body).encode()
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = body
    return parse_token_response(
        raw,
        status=status,
        content_type=content_type,
        requested_at=NOW,
        max_lifetime=HOUR,
        previous=previous,
        retry_after=retry_after,
    )


def ok(**fields: Any) -> dict[str, Any]:
    return {"access_token": ACCESS, "token_type": "bearer", "expires_in": 3600, **fields}


# -- well-formed answers ---------------------------------------------------------------


def test_expiry_is_request_time_plus_expires_in() -> None:
    tokens = parse(ok(expires_in=1800, refresh_token=REFRESH, scope="a b"))
    assert tokens.access_token.reveal() == ACCESS
    assert tokens.token_type == "Bearer"
    assert tokens.issued_at == NOW
    assert tokens.expires_at == NOW + timedelta(seconds=1800)
    assert tokens.lifetime == timedelta(seconds=1800)
    assert tokens.refresh_token == Secret(REFRESH)
    assert tokens.refresh_expires_at is None
    assert tokens.scope == "a b"


def test_expires_in_as_digit_string_is_accepted() -> None:
    assert parse(ok(expires_in=" 600 ")).expires_at == NOW + timedelta(seconds=600)
    assert parse(ok(expires_in="43199")).expires_at == NOW + timedelta(seconds=43199)


def test_fractional_expires_in_is_kept() -> None:
    assert parse(ok(expires_in=120.5)).expires_at == NOW + timedelta(seconds=120.5)


def test_no_expires_in_means_max_lifetime() -> None:
    body = ok()
    del body["expires_in"]
    assert parse(body).expires_at == NOW + HOUR
    assert parse(ok(expires_in=None)).expires_at == NOW + HOUR


def test_missing_token_type_defaults_to_bearer_and_others_are_kept() -> None:
    body = ok()
    del body["token_type"]
    assert parse(body).token_type == "Bearer"
    assert parse(ok(token_type="MAC")).token_type == "MAC"


def test_response_without_refresh_token_keeps_the_previous_one() -> None:
    previous = parse(ok(refresh_token=REFRESH, refresh_token_expires_in=86400))
    later = parse(ok(), previous=previous)
    assert later.refresh_token == Secret(REFRESH)
    assert later.refresh_expires_at == previous.refresh_expires_at


def test_a_new_refresh_token_replaces_the_previous_one() -> None:
    previous = parse(ok(refresh_token=REFRESH))
    fresh = leakcheck.register("rt-new-51a2b3c4d5", "refresh token")
    assert parse(ok(refresh_token=fresh), previous=previous).refresh_token == Secret(fresh)


@pytest.mark.parametrize("key", ["refresh_token_expires_in", "refresh_expires_in"])
def test_refresh_token_expiry(key: str) -> None:
    tokens = parse(ok(refresh_token=REFRESH, **{key: 2592000}))
    assert tokens.refresh_expires_at == NOW + timedelta(days=30)


def test_refresh_expires_in_zero_means_no_stated_expiry() -> None:
    # Keycloak sends refresh_expires_in: 0 for offline tokens, which do not expire.
    tokens = parse(ok(refresh_token=REFRESH, refresh_expires_in=0))
    assert tokens.refresh_expires_at is None


def test_error_key_set_to_null_in_a_success_is_not_an_error() -> None:
    assert parse(ok(error=None)).access_token.reveal() == ACCESS


def test_tokenset_prints_no_secret() -> None:
    tokens = parse(ok(refresh_token=REFRESH))
    for text in (repr(tokens), str(tokens), f"{tokens}"):
        assert ACCESS not in text
        assert REFRESH not in text


def test_format_and_parse_time_round_trip() -> None:
    assert format_time(NOW + timedelta(microseconds=7)) == "2026-03-01T12:00:00Z"
    assert parse_time("2026-03-01T12:00:00Z") == NOW
    assert parse_time("2026-03-01T12:00:00") == NOW  # naive is UTC


# -- malformed success answers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"access_token=abc&expires_in=3600", "application/x-www-form-urlencoded", "not a token"),
        (b"<!DOCTYPE html><html><body>Login</body></html>", "text/html", "HTML page"),
        (b"<html><body>maintenance</body></html>", "", "HTML page"),
        (b"", "application/json", "empty body"),
        (b"\xff\xfe\x00garbage", "application/json", "not a token"),
        (b"[1, 2]", "application/json", "got list"),
        (b'"token"', "application/json", "got str"),
        (b"null", "application/json", "got NoneType"),
        (b"[" * 50_000, "application/json", "not a token"),
    ],
)
def test_non_token_bodies_are_bad_responses(body: bytes, content_type: str, fragment: str) -> None:
    with pytest.raises(BadResponse) as caught:
        parse(body, content_type=content_type)
    assert type(caught.value) is BadResponse
    assert caught.value.code == "bad_response"
    assert fragment in caught.value.description


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "bearer", "expires_in": 60},
        {"access_token": "", "expires_in": 60},
        {"access_token": "   ", "expires_in": 60},
        {"access_token": None},
        {"access_token": 12345},
        {"access_token": ["a"]},
    ],
)
def test_missing_or_empty_access_token(body: dict[str, Any]) -> None:
    with pytest.raises(BadResponse, match="no access_token") as caught:
        parse(body)
    assert caught.value.code == "bad_response"


@pytest.mark.parametrize(
    ("expires_in", "fragment"),
    [
        ("soon", "not a number"),
        ("0x10", "not a number"),
        ("", "not a number"),
        ([3600], "not a number"),
        ({"s": 1}, "not a number"),
        (-1, "negative"),
        ("-30", "negative"),
        (True, "boolean"),
        (False, "boolean"),
        (10**12, "more than ten years"),
        (10**400, "more than ten years"),
        ("1e400", "not a number"),
        ("nan", "not a number"),
        ("inf", "not a number"),
    ],
)
def test_bad_expires_in(expires_in: object, fragment: str) -> None:
    with pytest.raises(BadResponse) as caught:
        parse(ok(expires_in=expires_in))
    assert caught.value.code == "bad_response"
    assert "expires_in" in caught.value.description
    assert fragment in caught.value.description


@pytest.mark.parametrize("refresh", ["", "  ", 42, ["x"]])
def test_bad_refresh_token(refresh: object) -> None:
    with pytest.raises(BadResponse, match="refresh_token"):
        parse(ok(refresh_token=refresh))


def test_bad_token_type() -> None:
    with pytest.raises(BadResponse, match="token_type"):
        parse(ok(token_type=7))


def test_oversize_body_is_refused_before_parsing() -> None:
    body = json.dumps(ok(padding="x" * MAX_RESPONSE_BYTES)).encode()
    with pytest.raises(BadResponse, match="larger than") as caught:
        parse(body)
    assert caught.value.code == "bad_response"


# -- OAuth error answers ---------------------------------------------------------------


ERRORS: list[tuple[str, type[ProviderError]]] = [
    ("invalid_grant", InvalidGrant),
    ("unauthorized_client", InvalidGrant),
    ("access_denied", InvalidGrant),
    ("invalid_client", InvalidClient),
    ("temporarily_unavailable", TransientProviderError),
    ("server_error", TransientProviderError),
    ("slow_down", TransientProviderError),
    ("invalid_scope", PermanentProviderError),
    ("unsupported_grant_type", PermanentProviderError),
    ("vendor_specific_thing", PermanentProviderError),
]


@pytest.mark.parametrize(("code", "kind"), ERRORS)
@pytest.mark.parametrize("status", [400, 401, 403, 200])
def test_oauth_error_bodies_become_typed_errors(
    code: str, kind: type[ProviderError], status: int
) -> None:
    body = {"error": code, "error_description": "Token is not active"}
    with pytest.raises(ProviderError) as caught:
        parse(body, status=status)
    error = caught.value
    assert type(error) is kind
    assert error.code == code
    assert error.description == "Token is not active"
    assert error.status == (status if status >= 400 else 400)
    assert code in str(error)
    assert "Token is not active" in str(error)


def test_oauth_error_with_message_instead_of_description() -> None:
    with pytest.raises(InvalidGrant) as caught:
        parse({"error": "invalid_grant", "message": "expired"}, status=400)
    assert caught.value.description == "expired"


def test_error_without_a_code_is_named_after_the_status() -> None:
    with pytest.raises(PermanentProviderError) as caught:
        parse({"error_description": "nope"}, status=400)
    assert caught.value.code == "http_400"
    with pytest.raises(InvalidClient) as caught_401:
        parse(b"Unauthorized", status=401, content_type="text/plain")
    assert caught_401.value.code == "http_401"


def test_error_code_that_is_not_a_code_is_not_echoed() -> None:
    # The code ends up in state, logs and metric labels: only RFC 6749 code characters.
    secret = leakcheck.register("Bearer-leak-77c1d2e3f4", "access token")
    with pytest.raises(PermanentProviderError) as caught:
        parse({"error": f"denied for {secret} " + "x" * 300}, status=400)
    assert caught.value.code == "http_400"
    assert secret not in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_5xx_and_429_are_transient_with_retry_after(status: int) -> None:
    with pytest.raises(TransientProviderError) as caught:
        parse(b"<html>busy</html>", status=status, content_type="text/html", retry_after="7")
    assert caught.value.code == f"http_{status}"
    assert caught.value.retry_after == 7.0
    assert "HTML page" in caught.value.description


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "Mon, 99 Foo"])
def test_unusable_retry_after_is_ignored(value: str | None) -> None:
    with pytest.raises(TransientProviderError) as caught:
        parse(b"", status=503, retry_after=value)
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("-5", 0.0), ("99999", 3600.0), ("Fri, 01 Jan 2100 00:00:00 GMT", 3600.0)],
)
def test_retry_after_is_read_as_the_vendors_pause_and_capped(value: str, seconds: float) -> None:
    # one reading of Retry-After for the token parser and the host limiter
    # (rotator/politeness.py): seconds or an HTTP date, never below 0 nor above an hour
    with pytest.raises(TransientProviderError) as caught:
        parse(b"", status=503, retry_after=value)
    assert caught.value.retry_after == seconds


def test_a_retry_after_date_is_seconds_from_now() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    with pytest.raises(TransientProviderError) as caught:
        parse(b"", status=429, retry_after=when)
    assert caught.value.retry_after is not None and 110 <= caught.value.retry_after <= 121


def test_5xx_with_oauth_json_is_still_transient() -> None:
    with pytest.raises(TransientProviderError) as caught:
        parse({"error": "invalid_grant"}, status=503)
    assert caught.value.status == 503


def test_redirects_and_other_statuses_are_permanent() -> None:
    with pytest.raises(PermanentProviderError) as caught:
        parse(b"", status=302, content_type="text/html")
    assert caught.value.code == "http_302"


def test_description_is_scrubbed_of_credentials() -> None:
    leaked = leakcheck.register("rt-described-9a8b7c", "refresh token")
    body = {"error": "invalid_grant", "error_description": f"refresh_token={leaked} is spent"}
    with pytest.raises(InvalidGrant) as caught:
        parse(body, status=400)
    assert leaked not in str(caught.value)
    assert "refresh_token=***" in caught.value.description


# -- scrub -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("Authorization: Bearer abc.def-123", "abc.def-123", "Bearer ***"),
        ("header basic dXNlcjpwYXNz==", "dXNlcjpwYXNz", "basic ***"),
        ("refresh_token=r1r2r3&x=1", "r1r2r3", "refresh_token=***"),
        ('{"access_token": "a1a2a3a4"}', "a1a2a3a4", '"access_token": "***'),
        ("client_secret: s3cr3t!", "s3cr3t", "client_secret: ***"),
        ("password=hunter22", "hunter22", "password=***"),
        ("code=abc123 expired", "abc123", "code=***"),
        ("jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig_nature ok", "eyJhbGci", "*** ok"),
    ],
)
def test_scrub_removes_credential_looking_values(text: str, hidden: str, kept: str) -> None:
    cleaned = scrub(text)
    assert hidden not in cleaned
    assert kept in cleaned


def test_scrub_keeps_plain_text_and_caps_length() -> None:
    assert scrub("grant   revoked\nby admin") == "grant revoked by admin"
    long = scrub("x" * 1000)
    assert len(long) == 300
    assert long.endswith("…")


# -- nothing else escapes ----------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_token_keys = st.sampled_from(
    [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "refresh_expires_in",
        "scope",
        "error",
        "error_description",
        "message",
        "user_id",
    ]
)
_token_like = st.dictionaries(_token_keys, _json_values, max_size=8).map(
    lambda d: json.dumps(d, allow_nan=True).encode()
)
_bodies = st.one_of(
    st.binary(max_size=300),
    _token_like,
    _json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_bodies,
    status=st.one_of(
        st.sampled_from([200, 201, 204, 400, 401, 403, 429, 500, 503]), st.integers(100, 599)
    ),
    content_type=st.sampled_from(["application/json", "text/html", "", "text/plain"]),
    retry_after=st.none() | st.text(max_size=8),
)
def test_parse_returns_a_tokenset_or_a_provider_error(
    body: bytes, status: int, content_type: str, retry_after: str | None
) -> None:
    try:
        tokens = parse_token_response(
            body,
            status=status,
            content_type=content_type,
            requested_at=NOW,
            max_lifetime=HOUR,
            retry_after=retry_after,
        )
    except ProviderError as exc:
        assert exc.code
        assert isinstance(str(exc), str)
        return
    assert 200 <= status < 300
    assert isinstance(tokens, TokenSet)
    assert tokens.access_token.reveal().strip()
    assert tokens.expires_at >= tokens.issued_at == NOW


# -- hostile token fields: RFC 6749 characters only, named not echoed ----------------------

_HOSTILE_VALUES = [
    "AT-\ud800x",  # a lone surrogate: the UTF-8 state write failed on it
    "AT\nLD_PRELOAD=/tmp/x.so",
    "AT\r\nLD_PRELOAD=/tmp/x.so",
    "AT\x00x",
    "AT\x1b[2Jx",
    "AT\x7fx",
    "AT\x85x",
    "AT\u2028x",
    "ÄT-ünicode",
]


@pytest.mark.parametrize("value", _HOSTILE_VALUES)
@pytest.mark.parametrize(
    "field", ["access_token", "refresh_token", "token_type", "scope", "user_id"]
)
def test_a_field_with_characters_rfc_6749_does_not_allow_is_bad_response(
    field: str, value: str
) -> None:
    with pytest.raises(BadResponse) as caught:
        parse(ok(**{field: value}))
    error = caught.value
    assert error.code == "bad_response" and error.transient
    assert field in error.description
    assert value not in str(error) and "LD_PRELOAD" not in str(error)
    str(error).encode("utf-8")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token_type", "Bear er"),
        ("token_type", "x" * 65),
        ("scope", 'read "write"'),
        ("scope", "read\\write"),
        ("user_id", "u" * 257),
    ],
)
def test_token_type_scope_and_extras_have_their_own_grammar(field: str, value: str) -> None:
    with pytest.raises(BadResponse, match=field):
        parse(ok(**{field: value}))


def test_the_printable_ascii_rfc_6749_allows_is_kept() -> None:
    vschar = "".join(map(chr, range(0x21, 0x7F)))
    tokens = parse(
        ok(access_token=vschar, refresh_token=vschar, token_type="N_A-1.0", scope="a  b!  ~c")
    )
    assert tokens.access_token.reveal() == vschar
    assert tokens.token_type == "N_A-1.0"
    assert tokens.scope == "a b! ~c"


@pytest.mark.parametrize(
    "expires_in", [0, 1e-300, 0.5, 59, 59.999, "0", "1e-300", -1, float("nan"), "inf"]
)
def test_a_lifetime_below_the_floor_or_not_finite_is_bad_response(expires_in: object) -> None:
    with pytest.raises(BadResponse) as caught:
        parse(ok(expires_in=expires_in))
    assert caught.value.transient  # backs off, and alerts when it persists
    assert "expires_in" in caught.value.description


def test_the_floor_is_min_lifetime() -> None:
    assert timedelta(seconds=60) == MIN_LIFETIME
    assert parse(ok(expires_in=60)).lifetime == MIN_LIFETIME
    body = json.dumps(ok(expires_in=2)).encode()
    tokens = parse_token_response(
        body,
        status=200,
        content_type="application/json",
        requested_at=NOW,
        max_lifetime=HOUR,
        min_lifetime=timedelta(seconds=1),
    )
    assert tokens.lifetime == timedelta(seconds=2)


# -- vendor text that echoes a secret -------------------------------------------------------

RT = leakcheck.register("rt-echoed-Zx81+/q", "refresh token")
CS = leakcheck.register("cs-echoed-Pq92%41", "client secret")


@pytest.mark.parametrize(
    "body",
    [
        {"error": "invalid_grant", "error_description": f"The refresh token {RT} is invalid"},
        {"error": "invalid_grant", "error_description": f"Token [{RT}]"},
        {"error": "invalid_grant", "message": f"grant {RT}: revoked"},
        {"error": "invalid_client", "error_description": f"with secret {CS}"},
        {"error": "invalid_client", "error_description": f"with secret {quote(CS, safe='')}"},
        {"error": RT},
        {"error": "rt-echoed-Zx81"},  # a token that looks like a code
        {"error": f"{RT} \x1b[2J", "error_description": "x"},
    ],
)
def test_vendor_text_is_scrubbed_of_every_secret_the_account_knows(body: dict[str, Any]) -> None:
    known = (RT, CS, "rt-echoed-Zx81")
    with pytest.raises(ProviderError) as caught:
        parse_token_response(
            json.dumps(body).encode(),
            status=400,
            content_type="application/json",
            requested_at=NOW,
            max_lifetime=HOUR,
            secrets=known,
        )
    error = caught.value
    for value in known:
        assert value not in str(error) and value not in error.code
    assert "\x1b" not in str(error)
    if body["error"] not in ("invalid_grant", "invalid_client"):
        assert error.code == "http_400"
        assert "not shown" in error.description


# -- pattern scrubbing is conservative ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "https://idp.example/token: unusable answer (DecodingError)",
        "no refresh token stored; seed a refresh token: rotator import acct",
        "basic authentication failed for this client",
        "the code: expired, ask again",
        "secret: rotated yesterday",
        "Bearer token required",
    ],
)
def test_scrub_leaves_innocent_text_alone(text: str) -> None:
    assert scrub(text) == text


@given(
    before=st.text(max_size=30),
    after=st.text(max_size=30),
    secret=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=4, max_size=40),
)
def test_scrub_values_removes_every_occurrence(before: str, after: str, secret: str) -> None:
    text = f"{before}{secret}{after}{quote(secret, safe='')}{quote_plus(secret)}{secret}"
    assert secret not in scrub_values(text, [secret])


@given(st.text(st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\x1b", "\x9b"])))
def test_scrub_output_has_no_control_character(text: str) -> None:
    cleaned = scrub(text)
    cleaned.encode("utf-8")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in cleaned)
