"""Accounts share equal configuration values instead of holding one copy each.

Accounts filled from ``defaults`` hold equal values; at 100,000 accounts the
copies pydantic makes were about half of the configuration's memory
(bench/results.md, seventh round).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from rotator.config.models import Model

__all__ = ["STRINGS", "shared_values"]

#: distinct strings one load remembers; past them, a string is looked up, not kept
STRINGS = 4096


def shared_values(model: Any, seen: dict[Any, Any], *, only: Iterable[str] | None = None) -> Any:
    """``model`` with each value equal to one an earlier account has replaced by that one.

    Accounts filled from ``defaults`` hold equal values (a ``state`` reference, a
    secret reference, the set of fields given, an empty ``notify`` list); pydantic
    builds each anew for every account. At 100,000 accounts the copies were about
    half of the configuration's memory. The models are frozen, so a shared value is
    never changed through one of them (``model_copy`` copies the fields set first).

    Numbers and durations are left alone: merged from ``defaults`` they are already
    one object. Strings an account spells out (a sink's ``store: sinks``) are one
    object per value, but only the first :data:`STRINGS` distinct ones are
    remembered: most of an account's strings are its own (a client id, a path), and
    remembering every one would cost more while loading than sharing saves.

    ``only``: the fields to look at (a copy of a shared model whose other values are
    already shared: config/templates.py).
    """
    values = model.__dict__
    for key in values if only is None else only:
        value = values[key]
        if type(value) is str:
            values[key] = _string(value, seen)
            continue
        if isinstance(value, _PLAIN):
            continue
        if isinstance(value, list):
            values[key] = _list(key, value, seen)
            continue
        inner = shared_values(value, seen) if isinstance(value, Model) else value
        try:
            values[key] = seen.setdefault((key, type(inner), _frozen(inner)), inner)
        except TypeError:  # unhashable: kept as it is
            continue
    fields_set = model.__pydantic_fields_set__
    fields_set = seen.setdefault((type(model), frozenset(fields_set)), fields_set)
    object.__setattr__(model, "__pydantic_fields_set__", fields_set)
    return model


#: values not worth sharing (see shared_values)
_PLAIN = (str, int, float, type(None), timedelta)


def _string(value: str, seen: dict[Any, Any]) -> str:
    strings: dict[str, str] = seen.setdefault(_STRINGS_KEY, {})
    if len(strings) < STRINGS:
        return strings.setdefault(value, value)
    return strings.get(value, value)


#: the key of ``seen`` that holds its strings (an object no value can equal)
_STRINGS_KEY = object()


def _list(key: str, value: list[Any], seen: dict[Any, Any]) -> list[Any]:
    """A list's models shared inside it; a list of plain values shared as a whole."""
    if any(isinstance(item, Model) for item in value):
        # models differ from account to account (a sink's path): no use hashing them
        return [shared_values(v, seen) if isinstance(v, Model) else v for v in value]
    try:
        shared: list[Any] = seen.setdefault((key, list, _frozen(value)), value)
    except TypeError:  # unhashable items: kept as it is
        return value
    return shared


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a value, with the types inside it (1 is not True)."""
    if isinstance(value, dict):
        return tuple((k, type(v), _frozen(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return (type(value), *((type(v), _frozen(v)) for v in value))
    return value
