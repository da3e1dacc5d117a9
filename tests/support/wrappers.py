"""Real parts seen through a thin wrapper, to count calls or inject a fault.

Nothing here stands in for a store or an SDK: every call goes on to the real
one. A test subclasses :class:`PassThroughStore` and overrides the one method it
watches (for writes, the hooks :meth:`~PassThroughStore.on_write` and
:meth:`~PassThroughStore.wrote`, so that no test repeats the write's signature);
:class:`Counting` lists the calls it forwards to any client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rotator.backends.base import Record, SecretStore, Validation, Version, WriteResult
from rotator.errors import StoreConflict

__all__ = ["Counting", "PassThroughStore"]


class PassThroughStore:
    """A :class:`SecretStore` that forwards every call to the real ``inner`` store."""

    def __init__(self, inner: SecretStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        return self.inner.read(path, fmt=fmt)

    def write(
        self,
        path: str,
        data: Mapping[str, str],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult:
        self.on_write(path, data)
        try:
            result = self.inner.write(
                path, data, expected_version=expected_version, fmt=fmt, adopt=adopt
            )
        except StoreConflict:
            self.wrote(path, data, None)
            raise
        self.wrote(path, data, result)
        return result

    def on_write(self, path: str, data: Mapping[str, str]) -> None:
        """Before each write goes on to the real store; may raise (a fault injected)."""

    def wrote(self, path: str, data: Mapping[str, str], result: WriteResult | None) -> None:
        """After each write: its result, or None when it lost its compare-and-set."""

    def delete(self, path: str) -> None:
        self.inner.delete(path)

    def validate(self, probe_path: str | None = None) -> Validation:
        return self.inner.validate(probe_path)

    def close(self) -> None:
        self.inner.close()


class Counting:
    """Any client, listing the names of the calls it forwards (``calls``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call
