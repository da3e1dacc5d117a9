"""The one interface every secret store implements.

A store holds small string maps at paths. Two users:

- the *state* of an account (refresh token, expiries, lease, last outcome), read
  and written with compare-and-set on the version read;
- the *sinks* consumers read (the consumer view), written the same way.

Contract (tests/backends/test_contract.py runs it against every store):

- ``read`` of a missing path is ``None``;
- ``write(..., expected_version=None)`` creates and fails with
  :class:`~rotator.errors.StoreConflict` if the path exists;
  ``write(..., expected_version=v)`` fails unless the current version is ``v``;
- writing the data a path already holds (at the expected version) writes nothing
  and returns ``WriteResult(version, changed=False)``: no new file, KV version or
  Secrets Manager version per cycle;
- a value is a string or an object of strings (a consumer view's ``headers``,
  :data:`~rotator.tokens.ViewValue`); it reads back as what was written, an
  object as an object, never as the JSON text of one. State and alert records
  hold strings only (:meth:`Record.strings`);
- errors are the typed :class:`~rotator.errors.StoreError` family, never an SDK
  exception, and never carry a secret.
"""

from __future__ import annotations

import json
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from rotator.errors import StoreError
from rotator.tokens import ViewValue

__all__ = [
    "FORMATS",
    "PATH_RULE",
    "Record",
    "SecretStore",
    "StoreFactory",
    "Validation",
    "ValidationStatus",
    "Version",
    "WriteResult",
    "canonical_json",
    "checked_path",
    "reason",
    "record_data",
    "record_identity",
    "require_json",
    "store_data",
    "written_by_rotator",
]

Version = int | str
FORMATS = ("json", "token", "env")


class ValidationStatus(StrEnum):
    READY = "READY"
    UNKNOWN = "UNKNOWN"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Validation:
    status: ValidationStatus
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    data: Mapping[str, ViewValue]
    version: Version

    def strings(self) -> dict[str, str]:
        """The data of a record that holds strings only (state, alert records). An
        object there was not written by rotator: it is given as its JSON text, so the
        reader reports that field as damaged instead of failing on its type."""
        return {k: v if isinstance(v, str) else _json_text(v) for k, v in self.data.items()}


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: Version
    changed: bool


class SecretStore(Protocol):
    """What rotation needs from a store. ``fmt`` matters only to the file store."""

    kind: ClassVar[str]
    name: str

    def read(self, path: str, *, fmt: str = "json") -> Record | None: ...

    def write(
        self,
        path: str,
        data: Mapping[str, ViewValue],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult: ...

    def delete(self, path: str) -> None: ...

    def validate(self, probe_path: str | None = None) -> Validation: ...

    def close(self) -> None: ...


def require_json(store_name: str, holds: str, fmt: str, path: str) -> None:
    """Only the file store renders ``token``/``env``; the others hold the json fields."""
    if fmt != "json":
        raise StoreError(
            f"format {fmt!r} applies to the file store only; {holds} holds the json fields",
            store=store_name,
            path=path,
        )


def reason(exc: StoreError, store_name: str) -> str:
    """An error's message without the ``store: `` prefix (a Validation names the store)."""
    text = str(exc)
    prefix = f"{store_name}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def canonical_json(data: Mapping[str, ViewValue]) -> str:
    return json.dumps(store_data(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_text(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def store_data(data: Mapping[str, ViewValue]) -> dict[str, ViewValue]:
    """``data`` as plain JSON to send: a copy, objects as dicts (never ``str()`` of one,
    which would publish a Python repr)."""
    return {
        str(k): v if isinstance(v, str) else {str(ik): str(iv) for ik, iv in v.items()}
        for k, v in data.items()
    }


def record_data(loaded: Mapping[Any, Any]) -> dict[str, ViewValue]:
    """A decoded JSON object as store data: strings and objects of strings as they are
    (so a view reads back equal to what was written), any other value (a number, a
    list, a nested object: not rotator's) as its JSON text."""
    out: dict[str, ViewValue] = {}
    for key, value in loaded.items():
        if isinstance(value, str):
            out[str(key)] = value
        elif isinstance(value, dict) and all(
            isinstance(ik, str) and isinstance(iv, str) for ik, iv in value.items()
        ):
            out[str(key)] = dict(value)
        else:
            out[str(key)] = _json_text(value)
    return out


def record_identity(data: Mapping[str, ViewValue] | None) -> tuple[str, ...] | None:
    """What a record rotator writes is about, read from the record itself; None for
    anything rotator does not write.

    - ``("record", account)``: a record that carries ``format`` and ``requires:
      rotator>=X`` (a state record, rotator/state.py; the alert and notify records
      of the state store) and the account it belongs to;
    - ``("view", account, provider)``: a consumer view (``base_view`` in
      rotator/providers/base.py: an ``access_token`` with its ``account`` and
      ``provider``).
    """
    if not data:
        return None
    account = data.get("account")
    if not isinstance(account, str) or not account:
        return None
    requires = data.get("requires")
    if "format" in data and isinstance(requires, str) and requires.startswith("rotator>="):
        return ("record", account)
    provider = data.get("provider")
    if isinstance(provider, str) and provider and isinstance(data.get("access_token"), str):
        return ("view", account, provider)
    return None


def written_by_rotator(
    current: Mapping[str, ViewValue] | None, new: Mapping[str, ViewValue]
) -> bool:
    """Whether ``current`` (a path's latest data) is rotator's to overwrite with ``new``
    by its content alone: a record rotator writes *for the same thing* (the same
    account's record; a view of the same account and provider).

    The ownership rule of every store that cannot carry a marker for free (Vault
    and OpenBao: custom metadata is a call of its own). Safe because it asks for
    more than "looks like rotator's": a sink pointed by mistake at someone else's
    secret finds data that is neither a rotator record nor a view of *this*
    account, and is refused as before; and a create never reaches this question
    (it is a create-only write, which leaves an existing path untouched).
    """
    mine = record_identity(current)
    return mine is not None and mine == record_identity(new)


#: what every store path must be; Vault and AWS enforce it themselves (issue
#: "hardening" #11: ``apps/%2e%2e/%2e%2e/team-b/victim`` left Vault's prefix, because
#: the server decodes what the client sent as opaque text)
PATH_RULE = (
    "a store path is relative to the store's prefix, has no '.' or '..' segment "
    "(percent-encoded or not) and no control character"
)
#: enough rounds to undo any encoding a config file could plausibly stack (%252e...)
_DECODE_ROUNDS = 4


def checked_path(path: str, *, store: str) -> str:
    """``path`` when it keeps to :data:`PATH_RULE`; a :class:`StoreError` naming the rule
    and what broke it otherwise. Checked on every percent-decoded form of the path, since
    a server may decode once more than its client encoded."""
    forms = [path]
    for _ in range(_DECODE_ROUNDS):
        decoded = urllib.parse.unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    why = ""
    if not path.strip("/"):
        why = "is empty"
    elif any(unicodedata.category(ch) == "Cc" for form in forms for ch in form):
        why = "holds a control character"
    elif any(form.startswith("/") for form in forms):
        why = "is absolute"
    elif any(part in (".", "..") for form in forms for part in form.split("/")):
        why = "has a '.' or '..' segment" + (" once percent-decoded" if len(forms) > 1 else "")
    if why:
        raise StoreError(f"path {path!r} {why}; {PATH_RULE}", store=store, path=path)
    return path


#: what a registered store type is: ``Class(name, settings)`` -> a SecretStore. Each store
#: module assigns its class to it under TYPE_CHECKING, so mypy checks the constructor and
#: every method of :class:`SecretStore` (the registry reaches the classes through strings).
StoreFactory = Callable[[str, Any], SecretStore]
