"""Key-path messages (rotator/config/messages.py): readable paths, bounded, no passwords."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from rotator.config.messages import MAX_MESSAGE, config_error, key_path


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
