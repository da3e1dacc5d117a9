"""Code blocks out of the documentation, so the suite runs what the documentation shows.

"The docs" are README.md and every Markdown page under docs/ (sorted), read as
one: :func:`fences` yields every fenced block in them, marked or not, with its
file, line, language and markers, so a test can hold *every* block of a kind
(each YAML configuration, each Vault policy) to what it claims to be.

A marker is an HTML comment of the form ``<!-- KEY: VALUE -->`` on the line(s)
right before a fence (blank lines may stand between, nothing else)::

    <!-- test: consumer/hvac -->
    ```python
    ...
    ```

The keys (the scheme is in one place, here):

- ``test: NAME`` names a block a test runs; NAME is unique across all the docs
  (a duplicate is refused naming both places). :func:`block` returns it; a
  marker that is missing, used twice, or not followed by a fence fails the test
  that asked for it, so an edit cannot silently drop a tested snippet.
- ``config: fragment`` (a partial rotator configuration, checked merged into a
  minimal one) or ``config: none`` (YAML that is not a rotator configuration:
  Helm values, manifests, Prometheus rules): see tests/docs/test_configs.py.
- ``policy: ROLE CONFIG``: a Vault policy, ROLE ``daemon`` or ``consumer``,
  for the configuration block marked ``test: CONFIG``: see
  tests/docs/test_policies.py.
- ``section:NAME`` marks where a section starts (it need not precede a fence).

Any other key before a fence is refused, so a misspelt marker is not an
unmarked block in disguise. Fences follow CommonMark: backticks or tildes,
three or more, indented as a list item's are (the indentation of the opening
fence is removed from every line of the block), closed by a fence of the same
character at least as long.

Placeholders: a tested snippet is written with the example values a reader
replaces (``https://openbao.example.com:8200``, ``/etc/myapp/role-id``), and
the test swaps those for the test's own with :func:`substitute`, which fails
when a value it was told to replace is not in the text. The scheme is only
that: addresses, paths and credentials are replaced; every other character of
the snippet runs as printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DOCS",
    "MARKER_KEYS",
    "README",
    "ROOT",
    "Block",
    "DocsError",
    "block",
    "blocks",
    "doc_files",
    "fences",
    "matches_output",
    "page",
    "pages",
    "section",
    "substitute",
]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKER_KEYS = frozenset({"test", "config", "policy", "section"})

_MARKER = re.compile(r"^\s*<!--\s*(?P<key>[A-Za-z-]+)\s*:\s*(?P<value>.*?)\s*-->\s*$")
_NAME = re.compile(r"[A-Za-z0-9_./-]+")
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


class DocsError(AssertionError):
    """The documentation does not hold what a test expects (an AssertionError: a test fails)."""


@dataclass(frozen=True, slots=True)
class Block:
    #: the ``test:`` marker's name; "" for a block without one
    name: str
    #: the first word of the fence's info string, e.g. "python" or "hcl"
    lang: str
    text: str
    #: 1-based line of the opening fence, for messages
    line: int
    path: Path
    #: every marker right before the fence, by key (``{"config": "fragment"}``)
    markers: Mapping[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """``docs/stores.md:60``: what a failure names so a reader finds the block."""
        return f"{_shown(self.path)}:{self.line}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def doc_files() -> list[Path]:
    """README.md, then every page under docs/ in sorted order."""
    pages = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []
    return [README, *pages]


def pages() -> list[Path]:
    """README.md and every page of the site, in a stable order (as :func:`doc_files`)."""
    return doc_files()


def page(name: str) -> str:
    """The text of ``docs/NAME`` (e.g. ``"stores.md"``)."""
    return (DOCS / name).read_text(encoding="utf-8")


def fences(path: Path | None = None) -> Iterator[Block]:
    """Every fenced block of ``path`` (default: every file of the docs), in order."""
    for one in [path] if path is not None else doc_files():
        yield from _parse(one)


def _parse(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    shown = _shown(path)
    markers: dict[str, str] = {}
    marker_line = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        marker = _MARKER.match(line)
        if marker is not None:
            key, value = marker["key"], marker["value"]
            if key == "section":
                continue  # a section starts here; it marks no block
            if key in markers:
                raise DocsError(f"{shown}:{index}: a second '{key}:' marker for one block")
            if key == "test" and not _NAME.fullmatch(value):
                raise DocsError(f"{shown}:{index}: 'test: {value}' is not a name ([A-Za-z0-9_./-])")
            markers[key] = value
            marker_line = marker_line or index
            continue
        if not line.strip():
            continue
        opening = _FENCE.match(line)
        if opening is None:
            if markers.keys() & MARKER_KEYS:
                described = ", ".join(f"'{k}: {v}'" for k, v in markers.items())
                raise DocsError(
                    f"{shown}:{marker_line}: marker {described} is not followed by a fenced block"
                )
            # an HTML comment of prose (<!-- note: ... -->) before a paragraph is no marker
            markers, marker_line = {}, 0
            continue
        unknown = sorted(markers.keys() - MARKER_KEYS)
        if unknown:
            raise DocsError(
                f"{shown}:{marker_line}: unknown marker '{unknown[0]}:' before a fenced block "
                f"(known: {', '.join(sorted(MARKER_KEYS))})"
            )
        start = index
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        while True:
            if index >= len(lines):
                raise DocsError(f"{shown}:{start}: the block is never closed")
            line = lines[index]
            index += 1
            stripped = line.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                break
            # CommonMark: remove up to the fence's indentation from each content line
            cut = len(line) - len(line.lstrip(" "))
            body.append(line[min(cut, indent) :])
        info = opening["info"].strip()
        yield Block(
            name=markers.get("test", ""),
            lang=info.split(" ")[0] if info else "",
            text="".join(f"{line}\n" for line in body),
            line=start,
            path=path,
            markers=dict(markers),
        )
        markers = {}
        marker_line = 0


def blocks(path: Path | None = None) -> dict[str, Block]:
    """Every block marked ``test: NAME`` (in ``path``, default all the docs), by name."""
    found: dict[str, Block] = {}
    for one in fences(path):
        if not one.name:
            continue
        if one.name in found:
            raise DocsError(
                f"{one.where}: marker 'test: {one.name}' is used twice "
                f"(also at {found[one.name].where})"
            )
        found[one.name] = one
    return found


def block(name: str, path: Path | None = None) -> Block:
    """The block marked ``<!-- test: NAME -->``; DocsError if there is none."""
    found = blocks(path)
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        where = _shown(path) if path is not None else "the docs (README.md, docs/)"
        raise DocsError(
            f"{where} has no block marked '<!-- test: {name} -->' (marked blocks: {known})"
        )
    return found[name]


def section(name: str) -> tuple[Path, str]:
    """The file holding ``<!-- section:NAME -->`` and the text from it to the next section."""
    tag = f"<!-- section:{name} -->"
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        if tag in text:
            after = text.split(tag, 1)[1]
            return path, after.split("<!-- section:", 1)[0]
    raise DocsError(f"no file of the docs has {tag}")


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


def matches_output(sample: str, printed: str) -> None:
    """Each line of the page's sample output matches the line printed, ``...`` being
    anything and a run of spaces any run of spaces (columns are padded to fit)."""
    wanted = sample.strip().splitlines()
    got = printed.strip().splitlines()
    assert len(got) == len(wanted), printed
    for want, line in zip(wanted, got, strict=True):
        pattern = r"\s+".join(
            ".+".join(re.escape(part) for part in word.split("...")) for word in want.split()
        )
        assert re.fullmatch(pattern, line.strip()), (want, line)
