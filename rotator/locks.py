"""Locks by name that exist only while someone holds or waits for them.

The rotator and the alert dispatcher each keep one lock per account so two runs
of one account exclude each other. A lock made on first use and kept forever
cost about 110 bytes an account (the lock and its dict entry): 11 MB at 100,000
accounts for each of the two, for locks that are almost never contended
(bench/results.md, eighth round). :class:`NamedLocks` keeps an entry only while
a thread holds or waits for it, so the table holds as many entries as there are
runs in flight. A striped table (a fixed number of locks, an account hashed to
one) would be as small but makes unrelated accounts wait for each other, and a
dispatcher holds its lock across a channel's retries.
"""

from __future__ import annotations

import threading
from types import TracebackType

__all__ = ["NamedLocks"]


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0  # threads holding or waiting for ``lock``


class NamedLocks:
    """``with locks(name):`` excludes every other holder of ``name``; thread-safe.

    Not reentrant (like :class:`threading.Lock`): a thread that takes a name it
    holds waits forever.
    """

    __slots__ = ("_entries", "_guard")

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def __call__(self, name: str) -> _Held:
        return _Held(self, name)

    def __len__(self) -> int:
        """Names held or waited for now (0 when nothing runs)."""
        return len(self._entries)

    def _join(self, name: str) -> _Entry:
        with self._guard:
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Entry()
            entry.users += 1
            return entry

    def _leave(self, name: str, entry: _Entry) -> None:
        with self._guard:
            entry.users -= 1
            if not entry.users:
                del self._entries[name]


class _Held:
    """One use of a name's lock: a context manager (``with``), made per use."""

    __slots__ = ("_entry", "_locks", "_name")

    def __init__(self, locks: NamedLocks, name: str) -> None:
        self._locks = locks
        self._name = name
        self._entry: _Entry | None = None

    def __enter__(self) -> None:
        entry = self._locks._join(self._name)
        try:
            entry.lock.acquire()
        except BaseException:  # interrupted while waiting: the entry is not ours to keep
            self._locks._leave(self._name, entry)
            raise
        self._entry = entry

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entry = self._entry
        if entry is None:
            raise RuntimeError("a named lock released without being taken")
        self._entry = None
        entry.lock.release()
        self._locks._leave(self._name, entry)
