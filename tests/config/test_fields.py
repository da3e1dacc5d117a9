"""The value types of the configuration (rotator/config/fields.py), as classes of input."""

from __future__ import annotations

import posixpath
from datetime import timedelta
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from rotator.config.fields import (
    MAX_DURATION,
    Duration,
    FileMode,
    HttpUrl,
    Listen,
    Ref,
    StorePath,
    StorePrefix,
    has_userinfo,
    parse_duration,
    shown,
    store_path_problem,
)
from rotator.config.loading import ACCOUNT_NAME
from rotator.providers.faxmax.cipher import check_name

_parts = st.sampled_from(
    [
        *("a", "b.json", "..", ".", "", "%2e", "%2E", "%25", "%252e", "%2f", "%5c", "%00"),
        *("%0a", "\\", "\x00", "\n", "\x7f", "\u2028", "%ff", "%", "/"),
    ]
)


@given(st.lists(_parts, min_size=1, max_size=8).map("".join))
def test_an_accepted_store_path_stays_inside_the_store_however_it_is_decoded(path: str) -> None:
    if store_path_problem(path) is not None:
        return
    # every reading a backend might make: as written, and decoded any number of times
    readings = [path]
    while "%" in readings[-1] and unquote(readings[-1]) != readings[-1]:
        readings.append(unquote(readings[-1]))
    for reading in readings:
        joined = posixpath.normpath(posixpath.join("/store", reading))
        assert joined.startswith("/store/"), (path, reading)
        assert joined == "/store/" + reading, (path, reading)  # one spelling per place
        assert "\\" not in reading
        assert reading.isprintable()


@pytest.mark.parametrize(
    "path",
    ["apps/%2e%2e/%2e%2e/team-b/victim", "apps/%252e%252E/x", "a%2f..%2fb", "%2fetc", "a%5cb"],
)
def test_percent_encoded_escapes_are_refused(path: str) -> None:
    assert store_path_problem(path) is not None


@pytest.mark.parametrize("path", ["a", "apps/crm", "idp-api.json", "a%20b", "x/y.z/w"])
def test_plain_paths_are_accepted(path: str) -> None:
    assert store_path_problem(path) is None


@pytest.mark.parametrize(
    "value",
    [
        float("inf"),
        float("-inf"),
        float("nan"),
        10**90,
        pytest.param(10**5000, id="10**5000"),  # past int -> str and int -> float
        "99999999999d",
        "3651d",
    ],
)
def test_durations_are_finite_and_bounded(value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("text", ["5m\n", "5m\nx", "1" * 5000 + "s", "1.5s" + "0" * 50])
def test_a_duration_is_read_whole_and_short(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_the_longest_duration_is_accepted() -> None:
    assert parse_duration("3650d") == MAX_DURATION
    assert parse_duration(MAX_DURATION.total_seconds()) == MAX_DURATION
    assert parse_duration("1h30m") == timedelta(minutes=90)


@given(
    scheme=st.sampled_from(["http", "https", "ftp", "s3"]),
    user=st.text(alphabet="abcxyz019-_.", max_size=8),
    password=st.text(alphabet="PWpw019!$&'()*+,;=~", min_size=1, max_size=16),
    prefix=st.text(max_size=10),
)
def test_userinfo_anywhere_is_seen_and_never_shown(
    scheme: str, user: str, password: str, prefix: str
) -> None:
    url = f"{prefix}{scheme}://{user}:{password}@host.example/path"
    assert has_userinfo(url)
    assert shown(url) == "(a URL with user:password@ in it)"


@pytest.mark.parametrize(
    "url", ["https://host/a@b", "https://host?x=a@b", "https://host#a@b", "mailto:a@b"]
)
def test_an_at_sign_after_the_host_is_not_userinfo(url: str) -> None:
    assert not has_userinfo(url)


def test_shown_cuts_a_long_value_short() -> None:
    assert len(shown("x" * 1_000_000)) < 80
    assert len(shown([[["x" * 1000] * 1000] * 1000])) < 200


@pytest.mark.parametrize(
    ("kind", "good"),
    [
        (HttpUrl, "https://idp.example/token"),
        (StorePath, "apps/idp"),
        (StorePrefix, "rotator/"),
        (Listen, "127.0.0.1:9464"),
        (Duration, "5m"),
        (FileMode, "0600"),
        (Ref, "env:IDP_SECRET"),
        (Ref, "file:/etc/rotator/secret"),
    ],
)
def test_a_trailing_newline_passes_no_validator_even_without_the_loaders_rule(
    kind: object, good: str
) -> None:
    # the YAML loader refuses control characters first; each type holds on its own too
    adapter: TypeAdapter[object] = TypeAdapter(kind)
    adapter.validate_python(good)
    for bad in (good + "\n", good + "\nmore", good + "\r\n"):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


def test_the_other_regex_validators_read_the_whole_value() -> None:
    assert ACCOUNT_NAME.fullmatch("acct")
    assert not ACCOUNT_NAME.fullmatch("acct\n")
    check_name("mymodule:encrypt")
    with pytest.raises(ValueError, match="is not a cipher"):
        check_name("mymodule:encrypt\n")
