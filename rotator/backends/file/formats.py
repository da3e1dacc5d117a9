"""What a file sink holds: the bytes consumers read, and reading them back.

``token`` and ``env`` files are read by programs that know nothing of rotator
(a shell ``source``, a ``$(cat ...)``), so their bytes are exactly the rendering
below and nothing else: the store keeps its own bookkeeping beside the file.

A ``json`` file holds the view as it is, Fax.Plus ``headers`` as an object. An
``env`` file is flat: ``ACCESS_TOKEN``, ``TOKEN_TYPE``, ``EXPIRES_AT`` and, when
the view has one, ``CLIENT_ID`` (the value of Fax.Plus's ``x-fax-clientid``
header); no headers variable, since a shell cannot use an object and the
``Authorization`` header is ``$TOKEN_TYPE $ACCESS_TOKEN``.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from typing import Any

from rotator.backends.base import record_data, store_data
from rotator.tokens import ViewValue

__all__ = ["canonical", "parse", "render", "version"]

_ENV_KEYS = (
    ("ACCESS_TOKEN", "access_token"),
    ("TOKEN_TYPE", "token_type"),
    ("EXPIRES_AT", "expires_at"),
)
# written only when the view has the key, so other vendors' env files stay as they were
_OPTIONAL_ENV_KEYS = (("CLIENT_ID", "client_id"),)
_SAFE_ENV = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=:-")


def _json_text(data: Mapping[str, ViewValue]) -> str:
    """``json.dumps(data, indent=2, ensure_ascii=False)``, byte for byte, for string maps.

    ``indent`` switches json to its pure-Python encoder (about 4x slower for a
    state record); a flat map of strings needs only the C string encoder.
    """
    texts = [(k, v) for k, v in data.items() if type(v) is str and type(k) is str]
    if not data or len(texts) != len(data):
        return json.dumps(store_data(data), indent=2, ensure_ascii=False)
    quote = json.encoder.encode_basestring
    return "{\n" + ",\n".join(f"  {quote(k)}: {quote(v)}" for k, v in texts) + "\n}"


def _text(data: Mapping[str, ViewValue], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{key} is an object; the token and env formats hold text only")
    return value


def render(data: Mapping[str, ViewValue], fmt: str) -> bytes:
    """The bytes a consumer reads for ``fmt`` (DESIGN.md, "What sinks receive")."""
    if fmt == "token":
        return (_text(data, "access_token") + "\n").encode("utf-8")
    if fmt == "env":
        lines = []
        present = tuple(pair for pair in _OPTIONAL_ENV_KEYS if pair[1] in data)
        for env_name, key in _ENV_KEYS + present:
            value = _text(data, key)
            shown = value if set(value) <= _SAFE_ENV else shlex.quote(value)
            lines.append(f"{env_name}={shown}\n")
        return "".join(lines).encode("utf-8")
    return (_json_text(data) + "\n").encode("utf-8")


def parse(raw: bytes, fmt: str) -> dict[str, ViewValue]:
    """The map ``raw`` holds in ``fmt``; ValueError (or UnicodeDecodeError) if it holds none."""
    text = raw.decode("utf-8", "replace")
    if fmt == "token":
        return {"access_token": text.strip()}
    if fmt == "env":
        by_env = dict(_ENV_KEYS + _OPTIONAL_ENV_KEYS)
        out: dict[str, ViewValue] = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and name in by_env:
                parts = shlex.split(value) if value else [""]
                out[by_env[name]] = parts[0] if parts else ""
        return out
    loaded: Any = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError("not a JSON object")
    return record_data(loaded)


def canonical(raw: bytes, fmt: str) -> bool:
    """Whether ``raw`` is byte for byte what :func:`render` writes for the map it holds.

    A rotator from before the ownership marker left none; a file it wrote is
    recognised by this, together with the lock file it always created beside it.
    """
    try:
        data = parse(raw, fmt)
        return bool(data) and render(data, fmt) == raw
    except (ValueError, KeyError, UnicodeDecodeError):
        return False


def version(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:24]
