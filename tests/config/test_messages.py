"""Key-path messages (rotator/config/messages.py): readable paths, bounded, no passwords."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from rotator.config.messages import MAX_MESSAGE, closest, config_error, key_path


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("accounts", "idp-api", "sinks", 0, "store"), "accounts.idp-api.sinks[0].store"),
        (("accounts", "acct\n"), "accounts.'acct\\n'"),
        (("accounts", ""), "accounts.''"),
        (("stores", 3, True), "stores[3].True"),
        (("defaults", "http://u:pw123456@h/"), "defaults.(a URL with user:password@ in it)"),
    ],
)
def test_key_path(parts: tuple[object, ...], expected: str) -> None:
    assert key_path(parts) == expected  # type: ignore[arg-type]


def test_a_long_key_is_cut_short() -> None:
    assert len(key_path(("accounts", "k" * 100_000, "x"))) < 100


class _Many(BaseModel):
    values: list[int]


def test_a_message_lists_a_few_problems_and_stays_short() -> None:
    with pytest.raises(ValidationError) as caught:
        _Many.model_validate({"values": ["x" * 50] * 10_000})
    message = str(config_error(caught.value, prefix="accounts.a"))
    assert message.startswith("accounts.a.values[0]: 'xxxx")
    assert message.count("\n  also ") == 5
    assert len(message) <= MAX_MESSAGE


# -- a YAML number or boolean where text is expected: "quote it" (issue 16) -------------

#: the smallest valid account of every provider; each str key is then given a number
_ACCOUNTS: dict[str, dict[str, object]] = {
    "oauth2": {"token_url": "https://idp.example/t", "grant": "client_credentials"}
    | {"client_id": "svc", "client_secret": "env:S"},
    "faxplus": {"client_id": "APIK-x", "client_secret": "env:S", "enhanced_security": False},
    "faxplus-pat": {"token": "env:S", "expires_at": "2031-01-31"},
    "bifit": {"username": "79990001122", "password": "env:S"},
    "faxmax": {"domain": "fax.example.com", "username": "robot", "password": "env:S"},
}


def _text_keys() -> list[tuple[str, str]]:
    """(provider, key) for every key whose type is plain text (``str`` or ``str | None``)."""
    from rotator.providers.registry import provider_class

    found = []
    for provider in _ACCOUNTS:
        for name, field in provider_class(provider).settings_model.model_fields.items():
            # (``provider`` picks the model before it is validated: loading.py answers it)
            if field.annotation in (str, str | None) and name != "provider":
                found.append((provider, name))
    return found


@pytest.mark.parametrize(("provider", "key"), _text_keys())
@pytest.mark.parametrize(
    ("written", "hint"),
    [("79990001122", "is a YAML number"), ("1.5", "is a YAML number"), ("yes", "YAML boolean")],
)
def test_an_unquoted_number_or_boolean_for_a_text_key_says_quote_it(
    provider: str, key: str, written: str, hint: str
) -> None:
    from rotator.config import parse_config
    from rotator.errors import ConfigError

    body = "\n".join(
        f"    {k}: {v!r}" if isinstance(v, str) else f"    {k}: {str(v).lower()}"
        for k, v in {**_ACCOUNTS[provider], "provider": provider}.items()
        if k != key
    )
    text = (
        "stores: {files: {type: file, directory: /tmp/x}}\n"
        f"accounts:\n  acct:\n{body}\n    {key}: {written}\n"
        "    sinks: [{store: files, path: a.json}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    message = str(caught.value)
    assert message.startswith(f"accounts.acct.{key}: "), message
    assert hint in message and "quote the value as written" in message


def _typos(key: str) -> list[str]:
    """A key with one adjacent pair swapped, one letter dropped, one doubled."""
    swaps = [key[:i] + key[i + 1] + key[i] + key[i + 2 :] for i in range(len(key) - 1)]
    return [
        *(s for s in swaps if s != key),
        *(key[:i] + key[i + 1 :] for i in range(len(key))),
        *(key[:i] + key[i] + key[i:] for i in range(len(key))),
    ]


@pytest.mark.parametrize("provider", ["oauth2", "faxplus", "bifit", "faxmax", "faxplus-pat"])
def test_a_misspelt_account_key_is_answered_with_the_key_meant(provider: str) -> None:
    # the class: any key of any account model, mistyped the ways fingers do, is named
    # back; a typo nearer to another real key may name that one, never a non-key
    from rotator.providers.registry import provider_class

    model = provider_class(provider).settings_model
    keys = sorted(f.alias or n for n, f in model.model_fields.items())
    hits = total = 0
    for key in (k for k in keys if len(k) >= 5):
        for typo in _typos(key):
            if typo in keys:
                continue
            message = closest(typo, keys)
            total += 1
            assert message == "" or message.removeprefix("; did you mean ").strip("'?") in keys
            hits += message == f"; did you mean {key!r}?"
    assert total and hits / total > 0.9, f"{hits} of {total} typos named the key meant"


def test_a_huge_or_non_text_key_is_not_compared() -> None:
    assert closest("x" * 100_000, ["token_url"]) == ""
    assert closest(7, ["token_url"]) == ""
