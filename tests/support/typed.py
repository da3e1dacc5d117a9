"""Values compared by type as well as value, for tests that prove two paths give equal
models: Python's ``==`` takes 0 for 0.0, -0.0 for 0.0 and True for 1."""

from __future__ import annotations

from typing import Any

__all__ = ["typed"]


def typed(value: Any) -> Any:
    """A dump that tells 0 from 0.0, -0.0 from 0.0 and True from 1."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, repr(value))
