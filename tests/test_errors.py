"""errors.scrub_values and scrub: any text, any secret, never a raise, never the secret."""

from __future__ import annotations

import argparse
import re
from urllib.parse import quote

from hypothesis import assume, given
from hypothesis import strategies as st

from rotator.cli import build_parser
from rotator.config.loading import ACCOUNT_NAME
from rotator.errors import _COMMAND_PHRASE, COMMANDS, _public_phrase, printable, scrub, scrub_values

#: any code point, lone surrogates and control characters included
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)
# (a secret made of the mask itself could be rebuilt by masking: not a secret worth a test)
SECRETS = st.text(st.characters(codec=None, exclude_categories=()), min_size=4, max_size=24).filter(
    lambda s: "*" not in s
)


def exposed(text: str, secret: str, public: tuple[str, ...] = ()) -> list[int]:
    """Where *secret* is left in *text* outside a public phrase (rotator <command>, a name)."""
    kept = [m.span() for m in _public_phrase(list(public)).finditer(text)]
    kept += [(m.start(), m.end()) for name in public for m in re.finditer(re.escape(name), text)]
    starts = [m.start() for m in re.finditer(f"(?={re.escape(secret)})", text)]
    end = len(secret)
    return [i for i in starts if not any(a <= i and i + end <= b for a, b in kept)]


@given(before=ANY_TEXT, secret=SECRETS, after=ANY_TEXT)
def test_a_known_value_is_gone_whatever_surrounds_it(before: str, secret: str, after: str) -> None:
    scrubbed = scrub_values(f"{before}{secret}{after}", [secret])
    assert exposed(scrubbed, secret) == []


@given(before=ANY_TEXT, secret=SECRETS, after=ANY_TEXT)
def test_only_a_command_phrase_ever_keeps_a_secret(before: str, secret: str, after: str) -> None:
    """Without a `rotator <command>` in the text, no occurrence is ever kept."""
    text = f"{before}{secret}{after}"
    if _COMMAND_PHRASE.search(text) is None:
        assert secret not in scrub_values(text, [secret])


def test_the_command_words_are_the_command_lines() -> None:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == COMMANDS


# -- a secret that is a word of a fix text never makes the fix unusable ---------------------

ACCOUNTS = st.from_regex(ACCOUNT_NAME, fullmatch=True).filter(lambda a: len(a) <= 30)
PROSE = st.sampled_from(
    [
        "no refresh token stored; seed one with: {command}",
        "no refresh token stored; run: rotator authorize {account} (or seed one: {command})",
        "invalid_grant: grant revoked; fix: {command} (a new refresh token)",
        "check accounts.{account}.client_id and client_secret, then: {command}",
    ]
)


@given(data=st.data(), account=ACCOUNTS, command=st.sampled_from(sorted(COMMANDS)), prose=PROSE)
def test_a_secret_inside_a_fix_text_leaves_its_command_whole(
    data: st.DataObject, account: str, command: str, prose: str
) -> None:
    """The issue's `(or seed a refresh token: *** import idp-api)`, as a class.

    Any secret (4+ characters) that is a substring of the fix text and does not
    reach across the command's edge (then it holds a word beyond every public
    phrase, and is scrubbed whole): the command survives, and an echo of the
    secret by the vendor elsewhere in the text is scrubbed as ever.
    """
    fix = f"rotator {command} {account}"
    text = prose.format(account=account, command=fix)
    start = data.draw(st.integers(0, len(text) - 4), label="start")
    secret = text[start : data.draw(st.integers(start + 4, len(text)), label="end")]
    fixes = [m.start() for m in re.finditer(re.escape(fix), text)]
    for i in (m.start() for m in re.finditer(f"(?={re.escape(secret)})", text)):
        j = i + len(secret)
        assume(all(j <= at or i >= at + len(fix) or at <= i <= j <= at + len(fix) for at in fixes))
    assume("*" not in secret)
    echoed = f"vendor said: <{secret}> was refused; {text}"
    scrubbed = scrub_values(echoed, [secret], public=(account,))
    assert fix in scrubbed
    assert exposed(scrubbed, secret, (account,)) == []
    if not any(secret in phrase for phrase in (f"rotator {c}" for c in COMMANDS)) and (
        secret not in account
    ):
        assert f"<{secret}>" not in scrubbed  # the vendor's echo: gone


def test_a_password_that_is_the_program_name_keeps_the_fix_and_hides_the_echo() -> None:
    text = (
        "invalid_grant: password rotator refused (or seed a refresh token: rotator import idp-api)"
    )
    assert scrub_values(text, ["rotator"]) == (
        "invalid_grant: password *** refused (or seed a refresh token: rotator import idp-api)"
    )
    # a secret reaching past the phrase is scrubbed whole, phrase and all
    assert scrub_values("seed: rotator import idp-api", [": rotator"]) == "seed*** import idp-api"
    # the account's name is public where the caller says so, and only there
    assert scrub_values("rotator import acme-fax", ["acme"]) == "rotator import ***-fax"
    assert scrub_values("rotator import acme-fax; acme", ["acme"], public=["acme-fax"]) == (
        "rotator import acme-fax; ***"
    )
    # overlapping and repeated occurrences: no piece of the secret is left between masks
    assert scrub_values("aaaaa|aaaa", ["aaaa"]) == "***|***"


@given(secret=SECRETS)
def test_a_url_encoded_echo_is_gone_too(secret: str) -> None:
    encoded = quote(secret, safe="", errors="surrogatepass")
    assert encoded not in scrub_values(
        f"grant_type=refresh_token&refresh_token={encoded}", [secret]
    )


@given(text=ANY_TEXT)
def test_scrubbed_text_is_printable_and_encodes(text: str) -> None:
    shown = scrub(text)
    assert shown == printable(shown)
    shown.encode("utf-8")  # no lone surrogate survives: a state or log write cannot fail
