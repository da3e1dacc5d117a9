"""Signed links: only the link as minted verifies; every change of its query is refused."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from rotator.config.models import ConsoleSettings
from rotator.errors import ConfigError
from rotator.service.console.links import KEY_FILE, LinkRefused, LinkSigner, load_signing_key

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SIGNER = LinkSigner(b"k" * 32, "https://rotator.example.com/", timedelta(hours=24))
LINK = SIGNER.mint("acme-fax", NOW)
QUERY = LINK.split("?", 1)[1]
ALPHABET = "abcdefABCDEF0123456789=&-_%.+?#/ xyz"


def test_a_minted_link_verifies_for_its_account_until_it_expires() -> None:
    assert LINK.startswith("https://rotator.example.com/authorize/acme-fax?exp=")
    link = SIGNER.verify("acme-fax", QUERY, NOW)
    assert link.account == "acme-fax" and link.until == NOW + timedelta(hours=24)
    with pytest.raises(LinkRefused) as expired:
        SIGNER.verify("acme-fax", QUERY, NOW + timedelta(hours=24))
    assert expired.value.status == 410
    with pytest.raises(LinkRefused) as other:
        SIGNER.verify("acme-fax2", QUERY, NOW)
    assert other.value.status == 403
    with pytest.raises(LinkRefused) as other_key:
        LinkSigner(b"j" * 32, "https://x", timedelta(hours=1)).verify("acme-fax", QUERY, NOW)
    assert other_key.value.status == 403


def test_every_link_is_new() -> None:
    assert len({SIGNER.mint("acme-fax", NOW) for _ in range(50)}) == 50


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """The query with characters replaced, inserted or deleted, or pieces swapped."""
    query = QUERY
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "swap", "append"]))
        at = draw(st.integers(0, max(0, len(query) - 1)))
        char = draw(st.sampled_from(ALPHABET))
        if kind == "replace":
            query = query[:at] + char + query[at + 1 :]
        elif kind == "insert":
            query = query[:at] + char + query[at:]
        elif kind == "delete":
            query = query[:at] + query[at + 1 :]
        elif kind == "swap":
            parts = query.split("&")
            i, j = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
            query = "&".join(parts)
        else:
            query += draw(st.sampled_from(["&x=1", "&sig=" + QUERY[-43:], "&", "#", "%20"]))
    return query


@hypothesis_settings(max_examples=400, deadline=None)
@given(mutated())
def test_any_mutation_of_the_query_is_refused(query: str) -> None:
    if query == QUERY:
        return  # the mutations cancelled out
    with pytest.raises(LinkRefused) as refused:
        SIGNER.verify("acme-fax", query, NOW)
    assert refused.value.status in (400, 403)


def test_the_generated_key_is_0600_beside_the_spool_and_stable(tmp_path: Path) -> None:
    settings = ConsoleSettings(public_url="https://rotator.example.com")
    key = load_signing_key(settings, tmp_path / "spool")
    assert len(key) == 32 and load_signing_key(settings, tmp_path / "spool") == key
    mode = stat.S_IMODE((tmp_path / "spool" / KEY_FILE).stat().st_mode)
    assert mode == 0o600


def test_a_configured_key_wins_and_must_not_be_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K", "a-long-enough-signing-key")
    settings = ConsoleSettings(public_url="https://r.example", signing_key="env:K")
    assert load_signing_key(settings, tmp_path) != load_signing_key(
        ConsoleSettings(public_url="https://r.example"), tmp_path
    )
    assert (tmp_path / KEY_FILE).read_bytes() != b""
    monkeypatch.setenv("K", "short")
    with pytest.raises(ConfigError, match="too short"):
        load_signing_key(settings, tmp_path)


def test_console_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="query or fragment"):
        ConsoleSettings(public_url="https://r.example/?x=1")
    with pytest.raises(ValueError, match="at most 30d"):
        ConsoleSettings(public_url="https://r.example", link_ttl=timedelta(days=31))
    assert (
        ConsoleSettings(public_url="https://r.example/base/").callback_url
        == "https://r.example/base/oauth/callback"
    )
