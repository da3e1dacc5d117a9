"""The stored state of an account (rotator/state.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.errors import NewerFormat, StoreError
from rotator.secrets import Secret
from rotator.state import STATE_FORMAT, STATE_REQUIRES, AccountState
from rotator.tokens import TokenSet
from tests.support import leakcheck

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ACCESS = leakcheck.register("at-state-1f2e3d4c5b", "access token")
REFRESH = leakcheck.register("rt-state-6a7b8c9d0e", "refresh token")


def full_state() -> AccountState:
    return AccountState(
        account="idp-api",
        provider="oauth2",
        access_token=Secret(ACCESS),
        token_type="Bearer",
        issued_at=T0,
        expires_at=T0 + timedelta(hours=1),
        refresh_token=Secret(REFRESH),
        refresh_expires_at=T0 + timedelta(days=30),
        authorized_at=T0 - timedelta(days=1),
        scope="api:read",
        next_refresh_at=T0 + timedelta(minutes=40, microseconds=250),
        last_attempt_at=T0,
        last_success_at=T0,
        last_error="http_503 (HTTP 503) - busy",
        last_error_code="http_503",
        consecutive_failures=2,
        failed=True,
        lease_owner="host:abc",
        lease_until=T0 + timedelta(minutes=2),
        extra={"user_id": "42"},
    )


def test_round_trip_keeps_every_field() -> None:
    state = full_state()
    record = state.to_record()
    assert all(isinstance(v, str) for v in record.values())
    assert record["format"] == STATE_FORMAT
    assert record["expires_at"] == "2026-03-01T13:00:00Z"
    assert record["failed"] == "true"
    assert AccountState.from_record("idp-api", record) == state


def test_empty_state_round_trip_is_minimal() -> None:
    state = AccountState(account="new")
    record = state.to_record()
    assert record == {
        "format": STATE_FORMAT,
        "requires": STATE_REQUIRES,
        "account": "new",
        "token_type": "Bearer",
    }
    assert AccountState.from_record("new", record) == state


def test_unknown_keys_are_ignored() -> None:
    record = {**full_state().to_record(), "from_the_future": "x"}
    assert AccountState.from_record("idp-api", record) == full_state()


def test_secrets_never_in_repr() -> None:
    state = full_state()
    for text in (repr(state), str(state), f"{state}"):
        assert ACCESS not in text
        assert REFRESH not in text
        assert "Secret('***')" in text


def test_tokenset_view_and_with_tokens() -> None:
    state = full_state()
    tokens = state.tokenset()
    assert tokens is not None
    assert tokens.access_token == Secret(ACCESS)
    assert tokens.refresh_expires_at == T0 + timedelta(days=30)
    assert AccountState(account="x").tokenset() is None
    new = TokenSet(
        access_token=Secret(leakcheck.register("at-state-new-a1b2c3", "access token")),
        token_type="Bearer",
        issued_at=T0 + timedelta(hours=1),
        expires_at=T0 + timedelta(hours=2),
        refresh_token=Secret(REFRESH),
        extra={"tenant": "t1"},
    )
    updated = state.with_tokens(new)
    assert updated.expires_at == T0 + timedelta(hours=2)
    assert updated.extra == {"user_id": "42", "tenant": "t1"}
    assert updated.same_grant(state) is False
    assert state.same_grant(full_state())
    # a rotation's new state is one copy with every change: the same as two copies
    from rotator.rotation.lease import Lease

    others = {"last_error": "", "consecutive_failures": 0, "next_refresh_at": T0}
    assert Lease.released(state, **state.token_fields(new), **others) == Lease.released(
        updated, **others
    )


def test_lease_held_by_other() -> None:
    state = full_state()
    assert state.lease_held_by_other("me", T0)
    assert not state.lease_held_by_other("host:abc", T0)  # our own lease
    assert not state.lease_held_by_other("me", T0 + timedelta(minutes=3))  # expired
    assert not AccountState(account="x").lease_held_by_other("me", T0)


_times = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)


@settings(deadline=None)
@given(
    access=st.none() | _text.filter(bool),
    refresh=st.none() | _text.filter(bool),
    expires=_times,
    lease=_times,
    error=_text,
    failures=st.integers(0, 1000),
    failed=st.booleans(),
    extra=st.dictionaries(_text, _text, max_size=3),
)
def test_any_state_round_trips(  # noqa: PLR0917 (one argument per drawn field)
    access: str | None,
    refresh: str | None,
    expires: datetime | None,
    lease: datetime | None,
    error: str,
    failures: int,
    failed: bool,
    extra: dict[str, str],
) -> None:
    state = AccountState(
        account="a",
        access_token=Secret(access) if access else None,
        refresh_token=Secret(refresh) if refresh else None,
        expires_at=expires,
        lease_until=lease,
        last_error=error,
        consecutive_failures=failures,
        failed=failed,
        extra=extra,
    )
    assert AccountState.from_record("a", state.to_record()) == state


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("expires_at", "yesterday"),
        ("consecutive_failures", "many"),
        ("extra", "{not json"),
        ("extra", "[1, 2]"),
    ],
)
def test_damaged_record_is_a_store_error_naming_the_field(field: str, raw: str) -> None:
    record = {**full_state().to_record(), field: raw}
    with pytest.raises(StoreError) as caught:
        AccountState.from_record("idp-api", record)
    message = str(caught.value)
    assert f"the stored state of idp-api is damaged: field {field!r}" in message
    assert raw not in message
    assert REFRESH not in message


@given(
    found=st.integers(min_value=2, max_value=10**8),
    requires=st.text(max_size=60),
    # characters no refusal is worded with: found in the message only if copied from the record
    token=st.text(alphabet="#@!~^%", min_size=4, max_size=40),
)
def test_a_newer_format_is_refused_naming_both_formats_and_nothing_it_holds(
    found: int, requires: str, token: str
) -> None:
    record = {**full_state().to_record(), "format": str(found), "requires": requires, "t": token}
    with pytest.raises(NewerFormat) as refused:
        AccountState.from_record("idp-api", record)
    message = str(refused.value)
    assert (refused.value.found, refused.value.known) == (found, int(STATE_FORMAT))
    assert f"state format {found}, written by a newer rotator" in message
    assert f"reads state formats up to {STATE_FORMAT}" in message
    for value in (ACCESS, REFRESH):
        assert value not in message
    release = refused.value.requires
    assert release == "" or requires == f"rotator>={release}"
    assert token not in message


@pytest.mark.parametrize("raw", ["", "0", "01", "two", "1.5", "-2", " 2", "9999999999"])
def test_a_format_that_is_no_number_is_damage_never_a_guess(raw: str) -> None:
    with pytest.raises(StoreError, match="field 'format' is not a format number") as refused:
        AccountState.from_record("idp-api", {**full_state().to_record(), "format": raw})
    assert not isinstance(refused.value, NewerFormat)


def test_older_and_unmarked_records_are_read() -> None:
    record = full_state().to_record()
    del record["format"], record["requires"]
    assert AccountState.from_record("idp-api", record) == full_state()
    assert AccountState.from_record("idp-api", {**record, "format": "1"}) == full_state()
