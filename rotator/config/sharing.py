"""Accounts share equal configuration values instead of holding one copy each.

Accounts filled from ``defaults`` hold equal values; at 100,000 accounts the
copies pydantic makes were about half of the configuration's memory
(bench/results.md, seventh round).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rotator.config.models import Model

__all__ = ["shared_values"]


def shared_values(model: Any, seen: dict[Any, Any]) -> Any:
    """``model`` with each value equal to one an earlier account has replaced by that one.

    Accounts filled from ``defaults`` hold equal values (a ``state`` reference, a
    secret reference, the set of fields given); pydantic builds each anew for
    every account. At 100,000 accounts the copies were about half of the
    configuration's memory. The models are frozen, so a shared value is never
    changed through one of them (``model_copy`` copies the fields set first).
    Strings, numbers and durations are left alone: a value merged from
    ``defaults`` is already the same object, and one an account spells out is small.
    """
    values = model.__dict__
    for key, value in values.items():
        if isinstance(value, _PLAIN):
            continue
        if isinstance(value, list):
            values[key] = [shared_values(v, seen) if isinstance(v, Model) else v for v in value]
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


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a value, with the types inside it (1 is not True)."""
    if isinstance(value, dict):
        return tuple((k, type(v), _frozen(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return (type(value), *((type(v), _frozen(v)) for v in value))
    return value
