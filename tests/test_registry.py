"""rotator.registry.Registry: the one plug-in table (providers, store types, alert channels)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.errors import ConfigError
from rotator.registry import Registry


def _registry() -> Registry[object]:
    registry: Registry[object] = Registry("thing")
    registry.register("vault", "json:dumps")
    registry.register("file", "json:loads")
    return registry


def test_a_name_given_twice_is_refused_and_a_bad_spec_too() -> None:
    registry = _registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("vault", "json:loads")
    with pytest.raises(ValueError, match="module:attr"):
        registry.register("other", "json.dumps")


def test_a_typo_names_the_valid_ones_the_closest_and_the_key_path() -> None:
    with pytest.raises(ConfigError) as refused:
        _registry().get("vaul", path="stores.main.type")
    message = str(refused.value)
    assert "stores.main.type" in message
    assert "(known: file, vault)" in message and "did you mean 'vault'?" in message


@given(name=st.text(min_size=65, max_size=200_000))
def test_an_unknown_name_is_shown_bounded_whatever_its_length(name: str) -> None:
    message = _registry().unknown(name)
    # 64 characters shown, each at most 10 once escaped by repr, and the known names
    assert len(message) < 64 * 10 + 100


def test_an_override_answers_inside_its_block_only() -> None:
    registry = _registry()
    stand_in = object()
    with registry.override("memory", stand_in):
        assert registry.get("memory") is stand_in
        assert "memory" in registry.names()
    assert "memory" not in registry
    with pytest.raises(ConfigError):
        registry.get("memory")


def test_implementations_are_imported_on_first_use() -> None:
    import json

    assert _registry().load_all() == {"file": json.loads, "vault": json.dumps}
