"""The ownership rule by the record (``written_by_rotator`` in rotator/backends/base.py),
as properties over every record: a path is rotator's to overwrite only when its
data is a record rotator writes for the same thing as the data being written.
The same rule against a real OpenBao: tests/backends/test_vault_create.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from rotator.backends.base import record_identity, written_by_rotator
from rotator.providers.base import base_view
from rotator.secrets import Secret
from rotator.state import AccountState
from rotator.tokens import TokenSet

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
values = st.one_of(names, st.dictionaries(names, names, max_size=3))
#: anything a secret's owner may keep at a path
anything = st.dictionaries(names, values, max_size=8)


def view(account: str, provider: str, token: str = "tok") -> dict[str, str]:  # noqa: S107
    now = datetime(2030, 1, 1, tzinfo=UTC)
    tokens = TokenSet(Secret(token), "Bearer", issued_at=now, expires_at=now + timedelta(1))
    return base_view(account, provider, tokens)


def state(account: str, refresh: str = "rt") -> dict[str, str]:
    return AccountState(
        account=account, provider="oauth2", refresh_token=Secret(refresh)
    ).to_record()


@given(account=names, provider=names, token=names, other_token=names)
def test_a_view_is_rotators_to_the_next_view_of_the_same_account_and_provider(
    account: str, provider: str, token: str, other_token: str
) -> None:
    assert written_by_rotator(view(account, provider, token), view(account, provider, other_token))


@given(account=names, refresh=names, other=names)
def test_a_state_record_is_rotators_to_the_next_state_of_the_same_account(
    account: str, refresh: str, other: str
) -> None:
    assert written_by_rotator(state(account, refresh), state(account, other))


@given(a=names, b=names, provider=names, other_provider=names)
def test_nothing_is_rotators_for_another_account_provider_or_kind(
    a: str, b: str, provider: str, other_provider: str
) -> None:
    if a != b:
        assert not written_by_rotator(view(a, provider), view(b, provider))
        assert not written_by_rotator(state(a), state(b))
    if provider != other_provider:
        assert not written_by_rotator(view(a, provider), view(a, other_provider))
    # a state record is not a view, nor a view a state record, even of one account
    assert not written_by_rotator(state(a), view(a, provider))
    assert not written_by_rotator(view(a, provider), state(a))


@given(theirs=anything, account=names, provider=names)
def test_data_that_is_no_rotator_record_is_never_rotators(
    theirs: dict[str, str], account: str, provider: str
) -> None:
    """Whatever a secret's owner keeps at a path, unless it carries exactly the fields
    that name this account (and provider), writing rotator's record over it is refused."""
    for new in (view(account, provider), state(account)):
        if written_by_rotator(theirs, new):
            assert theirs.get("account") == account
            if "requires" in new:
                assert str(theirs.get("requires", "")).startswith("rotator>=")
                assert "format" in theirs
            else:
                assert theirs.get("provider") == provider
                assert isinstance(theirs.get("access_token"), str)


@given(new=anything)
def test_an_absent_path_or_an_empty_record_is_no_one_s(new: dict[str, str]) -> None:
    assert not written_by_rotator(None, new)
    assert not written_by_rotator({}, new)
    assert record_identity(None) is None


def test_a_records_requires_line_must_name_rotator() -> None:
    record = state("acme")
    assert record_identity(record) == ("record", "acme")
    assert record_identity({**record, "requires": "myapp>=1"}) is None
    assert record_identity({k: v for k, v in record.items() if k != "format"}) is None
    assert record_identity({**record, "account": ""}) is None
