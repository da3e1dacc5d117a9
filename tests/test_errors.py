"""errors.scrub_values and scrub: any text, any secret, never a raise, never the secret."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from rotator.errors import printable, scrub, scrub_values

#: any code point, lone surrogates and control characters included
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)
# (a secret made of the mask itself could be rebuilt by masking: not a secret worth a test)
SECRETS = st.text(st.characters(codec=None, exclude_categories=()), min_size=4, max_size=24).filter(
    lambda s: "*" not in s
)


@given(before=ANY_TEXT, secret=SECRETS, after=ANY_TEXT)
def test_a_known_value_is_gone_whatever_surrounds_it(before: str, secret: str, after: str) -> None:
    scrubbed = scrub_values(f"{before}{secret}{after}", [secret])
    assert secret not in scrubbed


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
