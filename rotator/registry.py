"""One small registry type for every plug-in point: providers, backends, alert channels.

A registry maps a name (what a user writes in the configuration: ``provider:
faxplus``, ``type: vault``, ``type: webhook``) to an implementation given as
``"module:attr"``. The module is imported on first use, so ``rotator --help``
never pays for hvac or boto3. A registry refuses a name given twice, answers a
typo with the valid names (and the closest one), and lets a test put a stand-in
under a name for the length of a ``with`` block.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from rotator.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")
#: how much of an unknown name an error shows and compares
_SHOWN = 64


class Registry(Generic[T]):
    """Names -> lazily imported implementations of one kind (``kind`` names it in errors)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        self._overrides: dict[str, T] = {}
        self._guard = threading.Lock()

    def register(self, name: str, spec: str) -> None:
        """Add ``name`` -> ``"module:attr"``; a name already registered is refused."""
        module, sep, attr = spec.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"a {self.kind} is registered as 'module:attr', not {spec!r}")
        with self._guard:
            if name in self._specs:
                raise ValueError(
                    f"the {self.kind} {name!r} is already registered ({self._specs[name]})"
                )
            self._specs[name] = spec

    def names(self) -> list[str]:
        return sorted(self._specs.keys() | self._overrides.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._specs or name in self._overrides

    def get(self, name: str, *, path: str = "") -> T:
        """The implementation registered as ``name``; a :class:`ConfigError` at ``path``
        naming the valid names when there is none."""
        found = self._overrides.get(name)
        if found is not None:
            return found
        found = self._loaded.get(name)
        if found is not None:
            return found
        spec = self._specs.get(name)
        if spec is None:
            raise ConfigError(self.unknown(name), path=path)
        module, _, attr = spec.partition(":")
        loaded: T = getattr(importlib.import_module(module), attr)
        self._loaded[name] = loaded
        return loaded

    def unknown(self, name: object) -> str:
        """The message for a name that is not registered: the valid ones, the closest."""
        valid = self.names()
        # a name is looked at and shown only as long as a real one could be: a hostile
        # configuration's 100 KB "name" must cost neither time (difflib) nor screen
        shown = name[:_SHOWN] + "\u2026" if isinstance(name, str) and len(name) > _SHOWN else name
        close = difflib.get_close_matches(shown, valid, n=1) if isinstance(shown, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{shown!r} is not a known {self.kind} (known: {', '.join(valid)}){hint}"

    def load_all(self) -> dict[str, T]:
        """Every implementation, imported (the protocol conformance test uses it)."""
        return {name: self.get(name) for name in self.names()}

    @contextmanager
    def override(self, name: str, implementation: T) -> Iterator[None]:
        """Tests: answer ``name`` with ``implementation`` inside the ``with`` block."""
        with self._guard:
            previous = self._overrides.get(name)
            self._overrides[name] = implementation
        try:
            yield
        finally:
            with self._guard:
                if previous is None:
                    self._overrides.pop(name, None)
                else:
                    self._overrides[name] = previous
