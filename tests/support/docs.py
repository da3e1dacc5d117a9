"""Code blocks out of Markdown, so the suite runs what the documentation shows.

A block is marked by an HTML comment right before its fence (blank lines may
stand between, nothing else)::

    <!-- test: consumer/hvac -->
    ```python
    ...
    ```

:func:`block` returns that block's text; a marker that is missing, used twice,
or not followed by a fence fails the test that asked for it, so a README edit
cannot silently drop a tested snippet. Fences follow CommonMark: backticks or
tildes, three or more, indented as a list item's are (the indentation of the
opening fence is removed from every line of the block), closed by a fence of the
same character at least as long.

Placeholders: a tested snippet is written with the example values a reader
replaces (``https://openbao.example.com:8200``, ``/etc/myapp/role-id``), and
the test swaps those for the test's own with :func:`substitute`, which fails
when a value it was told to replace is not in the text. The scheme is only
that: addresses, paths and credentials are replaced; every other character of
the snippet runs as printed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DOCS", "README", "Block", "DocsError", "block", "blocks", "page", "pages", "substitute"]

README = Path(__file__).resolve().parents[2] / "README.md"
#: the documentation site's pages (mkdocs.yml); README.md is the front door
DOCS = README.parent / "docs"


def pages() -> list[Path]:
    """README.md and every page of the site, in a stable order."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def page(name: str) -> str:
    """The text of ``docs/NAME`` (e.g. ``"stores.md"``)."""
    return (DOCS / name).read_text(encoding="utf-8")


_MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<name>[A-Za-z0-9_./-]+)\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


class DocsError(AssertionError):
    """The documentation does not hold what a test expects (an AssertionError: a test fails)."""


@dataclass(frozen=True, slots=True)
class Block:
    name: str
    #: the fence's info string, e.g. "python" or "hcl"
    lang: str
    text: str
    #: 1-based line of the opening fence, for messages
    line: int
    path: Path


def blocks(path: Path = README) -> dict[str, Block]:
    """Every marked block of the Markdown file ``path``, by marker name."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: dict[str, Block] = {}
    index = 0
    while index < len(lines):
        marker = _MARKER.match(lines[index])
        index += 1
        if marker is None:
            continue
        name = marker["name"]
        where = f"{path.name}:{index}"
        if name in found:
            raise DocsError(f"{where}: marker 'test: {name}' is used twice")
        while index < len(lines) and not lines[index].strip():
            index += 1
        opening = _FENCE.match(lines[index]) if index < len(lines) else None
        if opening is None:
            raise DocsError(f"{where}: marker 'test: {name}' is not followed by a fenced block")
        indent, fence = len(opening["indent"]), opening["fence"]
        start = index
        body: list[str] = []
        index += 1
        while True:
            if index >= len(lines):
                raise DocsError(f"{path.name}:{start + 1}: the block '{name}' is never closed")
            line = lines[index]
            index += 1
            stripped = line.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                break
            # CommonMark: remove up to the fence's indentation from each content line
            cut = len(line) - len(line.lstrip(" "))
            body.append(line[min(cut, indent) :])
        found[name] = Block(
            name=name,
            lang=opening["info"].strip().split(" ")[0] if opening["info"].strip() else "",
            text="".join(f"{line}\n" for line in body),
            line=start + 1,
            path=path,
        )
    return found


def block(name: str, path: Path | None = None) -> Block:
    """The block marked ``<!-- test: NAME -->`` in ``path`` (default: anywhere in the docs,
    README.md and docs/; a name marked in two pages is refused); DocsError if there is none."""
    found: dict[str, Block] = {}
    for source in [path] if path is not None else pages():
        for key, value in blocks(source).items():
            if key in found:
                raise DocsError(
                    f"marker 'test: {key}' is used in {found[key].path.name} and {source.name}"
                )
            found[key] = value
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        where = path.name if path is not None else "the docs"
        raise DocsError(
            f"{where} has no block marked '<!-- test: {name} -->' (marked blocks: {known})"
        )
    return found[name]


def substitute(text: str, replacements: Mapping[str, str]) -> str:
    """``text`` with each key replaced by its value; DocsError if a key does not occur.

    Keys are replaced longest first, so ``/run/myapp/token`` is not cut by a
    shorter ``/run/myapp`` replaced before it.
    """
    missing = [old for old in replacements if old not in text]
    if missing:
        raise DocsError(
            "the snippet no longer contains "
            + ", ".join(repr(m) for m in missing)
            + ": the documentation changed; update the test's placeholders with it"
        )
    ordered = sorted(replacements, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(old) for old in ordered))
    return pattern.sub(lambda match: replacements[match.group(0)], text)
