"""Secret values and secret references.

A :class:`Secret` holds a credential and prints as ``***`` wherever it ends up
(``repr``, ``str``, f-strings, log fields, exception messages); the value comes
out only through :meth:`Secret.reveal`, at the one place that sends it.

Configuration never holds a credential itself, only a reference to one:

- ``env:NAME``  the environment variable NAME
- ``file:/path`` the contents of a file (one trailing newline stripped)
- ``cred:NAME`` a systemd credential, ``$CREDENTIALS_DIRECTORY/NAME``
"""

from __future__ import annotations

import os
import re
import reprlib
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from rotator.errors import SecretRefError

__all__ = ["SCHEMES", "Secret", "SecretRef", "parse_ref", "resolve"]

SCHEMES: Final = ("env", "file", "cred")

_log = structlog.get_logger("rotator.secrets")
_warned_paths: set[str] = set()


class Secret:
    """A credential that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wants a str, got {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values are not picklable")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A parsed ``scheme:target`` reference; printing it shows where, never what."""

    scheme: str
    target: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"


def parse_ref(text: str) -> SecretRef:
    """Parse ``env:NAME`` / ``file:/path`` / ``cred:NAME``; raise ValueError otherwise.

    The whole text is read: a control character anywhere (a newline that a
    ``$`` would let through) is refused, as is a ``cred:`` name that leaves
    ``$CREDENTIALS_DIRECTORY`` (``..``). A message quotes the target cut short;
    it is a place, not a secret, but the file it came from is hostile input.
    """
    scheme, sep, target = text.partition(":")
    if not sep or scheme not in SCHEMES or not target:
        raise ValueError(
            "must be a secret reference: env:NAME, file:/absolute/path or cred:NAME "
            "(credentials are never written into the configuration itself)"
        )
    if _CONTROL.search(target):
        raise ValueError(
            f"{scheme}: reference must not contain control characters, got {_short(target)}"
        )
    if scheme == "file" and not target.startswith("/"):
        raise ValueError(f"file: reference needs an absolute path, got {_short(target)}")
    if scheme in ("env", "cred") and (
        "/" in target or target.strip() != target or target in (".", "..") or "=" in target
    ):
        raise ValueError(f"{scheme}: reference needs a plain name, got {_short(target)}")
    return SecretRef(scheme, target)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT = reprlib.Repr()
_SHORT.maxstring = 60


def _short(target: str) -> str:
    return _SHORT.repr(target)


def resolve(ref: SecretRef, environ: os._Environ[str] | dict[str, str] | None = None) -> Secret:
    """Read the value a reference points to. Raises :class:`SecretRefError`."""
    env = os.environ if environ is None else environ
    if ref.scheme == "env":
        value = env.get(ref.target)
        if value is None:
            raise SecretRefError(f"{ref}: environment variable {ref.target} is not set")
        if not value:
            raise SecretRefError(f"{ref}: environment variable {ref.target} is empty")
        return Secret(value)
    if ref.scheme == "cred":
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretRefError(
                f"{ref}: $CREDENTIALS_DIRECTORY is not set (cred: references work under "
                "systemd with LoadCredential=; use file: or env: elsewhere)"
            )
        return _read_file(ref, Path(directory) / ref.target)
    return _read_file(ref, Path(ref.target))


def _read_file(ref: SecretRef, path: Path) -> Secret:
    try:
        info = path.stat()
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretRefError(f"{ref}: file {path} does not exist") from None
    except PermissionError:
        raise SecretRefError(f"{ref}: file {path} is not readable by this user") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretRefError(f"{ref}: cannot read {path}: {type(exc).__name__}") from None
    if ref.scheme == "file" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        key = str(path)
        if key not in _warned_paths:
            _warned_paths.add(key)
            _log.warning(
                "secret file readable by other users",
                path=key,
                mode=oct(stat.S_IMODE(info.st_mode)),
                fix=f"chmod 600 {key}",
            )
    value = raw[:-1] if raw.endswith("\n") else raw
    if value.endswith("\r"):
        value = value[:-1]
    if not value:
        raise SecretRefError(f"{ref}: file {path} is empty")
    return Secret(value)
