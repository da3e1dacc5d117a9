"""Key-path error messages: a pydantic ``ValidationError`` -> one :class:`ConfigError`.

pydantic reports a location such as ``('stores', 'vault', 'vault', 'auth', 'token',
'token')``, with the tag of each discriminated union in it; a user wrote
``stores.vault.auth.token``. The location is cleaned by walking the input next to
it, an unknown key is answered with the valid keys of the model it sits in, and
the message is bounded: a value is quoted through :func:`~rotator.config.fields.shown`
(cut short, never a URL's password) and at most a few problems are listed, so a
hostile file cannot print megabytes.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from rotator.config.fields import has_userinfo, shown
from rotator.errors import ConfigError

__all__ = ["MAX_MESSAGE", "Refusals", "config_error", "key_path", "model_at"]

#: the longest message a configuration error may have (a few problems, each one line)
MAX_MESSAGE = 2000
_MAX_PART = 60
_MAX_LINES = 6

_TAG_CHOICES = {
    "type": "file, vault, aws for stores; webhook, command, email for channels; "
    "exec, webhook for notify",
    "method": "token, approle, kubernetes",
}
_UNION_TAGS = {
    "file",
    "vault",
    "aws",
    "token",
    "approle",
    "kubernetes",
    "webhook",
    "command",
    "email",
    "exec",
}


def key_path(parts: tuple[int | str, ...] | list[int | str]) -> str:
    """``accounts.idp-api.sinks[0].store``; a key that is not a plain name is quoted, cut short."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        text = part if isinstance(part, str) else shown(part)
        if not text.isprintable() or len(text) > _MAX_PART or not text or has_userinfo(text):
            text = shown(part)  # quoted, cut short, a URL's password never shown
        out += f".{text}" if out else text
    return out


def _child(node: Any, part: int | str) -> tuple[bool, Any]:
    if isinstance(node, dict) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def _clean_loc(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    """Drop the union tags pydantic inserts into a location, by walking the input."""
    out: list[int | str] = []
    node = data
    tag_skipped_in: object = None
    for part in loc:
        if (
            isinstance(part, str)
            and part in _UNION_TAGS
            and isinstance(node, dict)
            and part in (node.get("type"), node.get("method"))
            # once per mapping: in `auth: {method: token}` the second `token` is the key
            and tag_skipped_in is not node
        ):
            tag_skipped_in = node
            continue  # pydantic's tag for the union member, not a key of the input
        found, child = _child(node, part)
        if found:
            node = child
        elif isinstance(part, str) and part in _UNION_TAGS and not isinstance(node, dict):
            # lost track of the input: a tag cannot be told from a key; drop it
            continue
        else:
            node = None
        out.append(part)
    return tuple(out)


def config_error(
    exc: ValidationError,
    *,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    data: Any = None,
) -> ConfigError:
    """One ConfigError for every problem pydantic found (the first ones, bounded)."""
    lines = []
    for error in exc.errors(include_url=False)[:_MAX_LINES]:
        loc = _clean_loc(error["loc"], data)
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, str(ctx.get("discriminator", "")).strip("'"))
        path = key_path(loc)
        full = f"{prefix}.{path}" if prefix and path else (prefix or path)
        if kind == "union_tag_invalid":
            message = f"{shown(ctx.get('tag'))} is not valid (valid: {ctx.get('expected_tags')})"
        elif kind == "union_tag_not_found":
            message = f"required key is missing (valid: {_TAG_CHOICES.get(str(loc[-1]), '')})"
        elif kind == "extra_forbidden":
            parent = model_at(model, loc[:-1], data) if model else None
            keys = sorted(f.alias or n for n, f in parent.model_fields.items()) if parent else []
            valid = f" (valid keys: {', '.join(keys)})" if keys else ""
            message = f"unknown key{valid}{closest(loc[-1] if loc else None, keys)}"
        elif kind == "missing":
            message = "required key is missing" + _why_required(model, loc, data)
        elif kind == "string_type" and isinstance(error.get("input"), bool | int | float):
            message = _quote_hint(error["input"])
        else:
            message = error["msg"].removeprefix("Value error, ")
            if kind not in ("value_error", "assertion_error") and "input" in error:
                value = error["input"]
                # a long value is more likely a pasted token than a typo: not quoted
                if isinstance(value, str | int | float | bool) and len(shown(value)) < _MAX_PART:
                    message = f"{shown(value)}: {message}"
        lines.append(f"{full}: {message}" if full else message)
    first, *rest = lines
    if rest:
        first += "".join(f"\n  also {line}" for line in rest)
    if len(first) > MAX_MESSAGE:
        first = first[: MAX_MESSAGE - 1] + "…"
    return ConfigError(first)


def closest(key: object, keys: list[str]) -> str:
    """``; did you mean 'KEY'?`` for a misspelt key, else "" (a key longer than any real
    one is not compared: a hostile file's 100 KB key must not cost difflib's time)."""
    if not isinstance(key, str) or not keys or len(key) > 2 * max(map(len, keys)):
        return ""
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


class Refusals:
    """Refusals collected across accounts and files, raised as one bounded ConfigError.

    An operator fixing generated account files wants every broken file in one
    ``check``, not one per run. Collecting stops at ``limit`` (:attr:`full`): a
    hostile file with 100,000 broken accounts is neither validated to the end
    nor printed whole.
    """

    def __init__(self, limit: int = _MAX_LINES) -> None:
        self.limit = limit
        self.messages: list[str] = []

    @property
    def full(self) -> bool:
        return len(self.messages) >= self.limit

    def add(self, exc: ConfigError) -> None:
        if not self.full:
            self.messages.append(str(exc))

    def raise_any(self) -> None:
        if not self.messages:
            return
        first, *rest = self.messages
        text = first + "".join(f"\n  also {message}" for message in rest)
        if self.full:
            text += f"\n  (the first {self.limit} refusals; there may be more)"
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 1] + "…"
        raise ConfigError(text)


def _quote_hint(value: bool | int | float) -> str:
    """YAML read an unquoted scalar as a number or a boolean where text is expected
    (``username: 79990001122``, ``client_id: 1234``, ``user: no``): say to quote it."""
    if isinstance(value, bool):
        return (
            f"a YAML boolean (read as {str(value).lower()}), not text: an unquoted yes, no, "
            'on, off, true or false is one; quote the value as written, e.g. "yes"'
        )
    text = shown(value)
    what = text if len(text) < _MAX_PART else "this value"
    return (
        f"{what} is a YAML number, not text: quote the value as written, e.g. "
        f'"{what}" (unquoted, a leading 0 or + is lost)'
    )


def _why_required(model: type[BaseModel] | None, loc: tuple[int | str, ...], data: Any) -> str:
    """A required key's ``description``, when its model gives one: why it has no default."""
    parent = model_at(model, loc[:-1], data) if model and loc else None
    field = parent.model_fields.get(str(loc[-1])) if parent else None
    return f": {field.description}" if field is not None and field.description else ""


def model_at(
    model: type[BaseModel] | None, loc: tuple[int | str, ...], data: Any
) -> type[BaseModel] | None:
    """The nested model class a location points into, to list its valid keys.

    Walks the annotations and the input together: inside ``dict[str, Store]`` or
    ``list[Channel]`` the key or index is skipped, and a union of models is
    resolved by the input's discriminator (``type`` / ``method``).
    """
    annotation: Any = model
    node = data
    for part in loc:
        current = _pick_model(annotation, node)
        if current is not None:
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        else:
            args = typing.get_args(_unwrap(annotation))
            annotation = args[-1] if args else None
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return _pick_model(annotation, node)


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None`` down to the type that matters."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (types.UnionType, typing.Union):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) == 1:
                annotation = rest[0]
                continue
        return annotation


def _pick_model(annotation: Any, node: Any) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) not in (types.UnionType, typing.Union):
        return None
    members = [_unwrap(a) for a in typing.get_args(annotation)]
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if not isinstance(node, dict):
        return models[0] if len(models) == 1 else None
    for candidate in models:
        for tag in ("type", "method"):
            field = candidate.model_fields.get(tag)
            if field is not None and node.get(tag) in typing.get_args(field.annotation):
                return candidate
    return None
