"""Strict YAML loading straight from parser events, without a node graph.

``yaml.load`` first composes the whole document into nodes (each scalar with two
position marks) and only then builds Python objects: for a 10,000-account file
(under 1 MB of text) that graph peaks at about 55 MB, which the daemon's RSS
keeps for good. :func:`load` builds the objects while the events stream by, with
the same resolver and scalar constructors as ``SafeLoader`` (libyaml's parser
when PyYAML has it), so the result is what ``yaml.safe_load`` returns, and:

- a key given twice in one mapping is an error (PyYAML keeps the last value
  silently: a second ``accounts:`` section would drop the first one's accounts);
- merge keys (``<<: *anchor`` or a list of anchors) work as in YAML 1.1: keys of
  the mapping itself win, then earlier merges over later ones;
- only the standard tags: a collection tagged otherwise (``!!set``, ``!!omap``,
  a custom tag) is refused rather than half understood;
- the file is hostile input, so what it can make is bounded: nesting depth
  (:data:`MAX_DEPTH`), the length of a number (:data:`MAX_NUMBER_CHARS`: a
  5000-digit int is past Python's int/str limit), and alias expansion. An alias
  costs nothing here (the anchored object is shared), but whoever walks the
  result walks it expanded: seven nested levels of nine aliases in a 692-byte
  "billion laughs" file is 4.7 million nodes to validate and to print in an
  error. Each anchor remembers how many nodes it stands for; the expanded
  document may have :data:`EXPANSION_FACTOR` nodes per character of its text
  (plus :data:`EXPANSION_FLOOR`); a node takes at least two characters to
  write, so a file without aliases is far inside, and so is one merging a
  ``defaults`` anchor into each of 10,000 accounts.

Errors are ``yaml.YAMLError`` with a ``problem_mark``, like PyYAML's own, and a
``key_path`` (the keys and indexes down to the problem, outermost first).

``key_lines`` collects the line of every key of the top level and of the
mappings right under it (``accounts.acme`` is written on line 12): a message
about a whole account or section, which no parser error carries, can name
where it is, e.g. an account defined in two files.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = ["EXPANSION_FACTOR", "EXPANSION_FLOOR", "MAX_DEPTH", "MAX_NUMBER_CHARS", "load"]

#: collections inside collections; a configuration needs about six
MAX_DEPTH = 64
#: characters of an int or float scalar (a 64-bit int in binary, with separators)
MAX_NUMBER_CHARS = 100
#: nodes the expanded document may have per character of its text...
EXPANSION_FACTOR = 2
#: ...plus this many (a small file may share a large anchor a few times)
EXPANSION_FLOOR = 100_000
#: C0 and C1 controls, DEL and the Unicode line separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

#: libyaml's parser when PyYAML was built with it: the same events, about 5x faster
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_TAG_CACHE = 4096
# the parser's events are of exactly these classes: ``is`` is cheaper than isinstance
_ScalarEvent = yaml.ScalarEvent
_AliasEvent = yaml.AliasEvent
_SequenceStartEvent = yaml.SequenceStartEvent
_SequenceEndEvent = yaml.SequenceEndEvent
_MappingStartEvent = yaml.MappingStartEvent
_MappingEndEvent = yaml.MappingEndEvent


def load(
    text: str,
    *,
    one_line: bool = False,
    key_lines: dict[tuple[Any, ...], int] | None = None,
    loader: Any = None,
) -> Any:
    """The single document in ``text`` as Python objects (None when empty).

    ``one_line``: refuse a string (key or value) with a control character in it,
    a block scalar's newline too (a configuration's values are names, URLs and
    paths: a newline there passes a regex's ``$`` and fails only at run time).
    ``key_lines``: filled with ``(key,)`` and ``(key, inner key)`` -> line (from 1)
    for the keys of the top level and of the mappings directly under it.
    ``loader``: the PyYAML loader class whose parser and resolver read ``text``
    (default: libyaml's ``CSafeLoader`` when PyYAML has it, else ``SafeLoader``;
    both give the same result, tests/config/test_yamlfile.py).
    """
    loader = (loader or _Loader)(text)
    try:
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        budget = EXPANSION_FLOOR + EXPANSION_FACTOR * len(text)
        data = _Builder(loader, budget=budget, one_line=one_line, key_lines=key_lines).value()
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            event: Any = loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                None,
                "but found another document",
                event.start_mark,
            )
        return data
    finally:
        loader.dispose()


def _mark(event: Any) -> Any:
    return getattr(event, "start_mark", None)  # libyaml's Mark or PyYAML's


def _locate(exc: yaml.YAMLError, part: Any) -> None:
    """Add one key (or index) to the front of an error's ``key_path`` on its way out."""
    path: list[Any] | None = getattr(exc, "key_path", None)
    if path is None:
        exc.key_path = [part]  # type: ignore[attr-defined]
    else:
        path.insert(0, part)


_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60


def _quoted(value: Any) -> str:
    """A value for a message: cut short, and never a URL that may carry a password."""
    if isinstance(value, str) and "://" in value and "@" in value:
        return "(a URL with '@' in it)"
    return _SHORT.repr(value)


class _Builder:
    def __init__(
        self,
        loader: Any,
        *,
        budget: int,
        one_line: bool,
        key_lines: dict[tuple[Any, ...], int] | None = None,
    ) -> None:
        self.loader = loader
        self.key_lines = key_lines
        #: the top-level key whose value is being built (for ``key_lines``)
        self.top_key: Any = None
        self.one_line = one_line
        self.anchors: dict[str, Any] = {}
        #: anchor -> how many nodes its value stands for, aliases inside it expanded
        self.sizes: dict[str, int] = {}
        #: anchors whose collection is still open: an alias to one would be a cycle
        self.open: set[str] = set()
        #: nodes of the document with every alias expanded, and how many it may have
        self.expanded = 0
        self.budget = budget
        self.depth = 0
        #: plain scalar -> resolved tag: keys and shared values repeat once per account
        self.plain_tags: dict[str, str] = {}
        resolvers = loader.yaml_implicit_resolvers
        #: a plain scalar whose first character starts none of the resolver's patterns
        #: is a string (what ``resolve`` finds too, after a call and a dict look-up);
        #: None (no shortcut) when the resolver has a pattern for any first character
        self.resolved_by: frozenset[str] | None = (
            None
            if None in resolvers or loader.yaml_path_resolvers
            else frozenset(k for k in resolvers if k)
        )

    def value(self, event: Any = None) -> Any:
        """The node that starts with ``event`` (default: the next one) as an object."""
        if event is None:
            event = self.loader.get_event()
        kind = event.__class__
        if kind is _ScalarEvent:
            self.expanded += 1
            result = self._scalar(event)
            if event.anchor is not None:
                self.anchors[event.anchor] = result
                self.sizes[event.anchor] = 1
            return result
        if kind is _AliasEvent:
            return self._alias(event)
        start = self.expanded
        self.expanded += 1
        if kind is _SequenceStartEvent:
            self._check_tag(event, _SEQ)
            result = []
            self._open(event, result)
            get = self.loader.get_event
            index = 0
            while (item := get()).__class__ is not _SequenceEndEvent:
                try:
                    result.append(self.value(item))
                except yaml.YAMLError as exc:
                    _locate(exc, index)
                    raise
                index += 1
        elif kind is _MappingStartEvent:
            self._check_tag(event, _MAP)
            result = {}
            self._open(event, result)
            self._fill_mapping(result, event)
        else:  # pragma: no cover - the parser only yields the events above here
            raise yaml.composer.ComposerError(None, None, f"unexpected {event}", event.start_mark)
        self.depth -= 1
        if event.anchor is not None:
            self.open.discard(event.anchor)
            self.sizes[event.anchor] = self.expanded - start
        return result

    def _open(self, event: Any, result: Any) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"collections are nested more than {MAX_DEPTH} deep; "
                "a configuration needs a handful of levels",
                event.start_mark,
            )
        if event.anchor is not None:
            self.anchors[event.anchor] = result
            self.open.add(event.anchor)

    def _alias(self, event: Any) -> Any:
        anchor = event.anchor
        if anchor not in self.anchors:
            raise yaml.composer.ComposerError(
                None, None, f"found undefined alias {_SHORT.repr(anchor)}", _mark(event)
            )
        if anchor in self.open:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the alias {_SHORT.repr(anchor)} is inside its own anchor (a cycle)",
                _mark(event),
            )
        self.expanded += self.sizes[anchor]
        if self.expanded > self.budget:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases expand the document past {self.budget} values "
                "(an alias of an alias of ... multiplies); write the values out "
                "or share fewer levels",
                _mark(event),
            )
        return self.anchors[anchor]

    def _tag(self, event: Any) -> str:
        """The scalar's tag, resolved as ``SafeLoader`` resolves it."""
        tag: str | None = event.tag
        if tag is not None and tag != "!":
            return tag
        # libyaml marks a plain scalar's style '', PyYAML's own parser None
        if event.style or not event.implicit[0]:
            # quoted, block, or "!": a string whatever it says (implicit is (False, True))
            resolved: str = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
            return resolved
        value: str = event.value
        chars = self.resolved_by
        if chars is not None and value and value[0] not in chars:
            return _STR
        tag = self.plain_tags.get(value)
        if tag is None:
            tag = self.loader.resolve(yaml.ScalarNode, value, event.implicit)
            if len(self.plain_tags) < _TAG_CACHE:
                self.plain_tags[value] = tag
        return tag

    def _scalar(self, event: Any) -> Any:
        tag = self._tag(event)
        if tag == _STR:
            value: str = event.value
            # isprintable() first: the C fast path for the common, clean string
            if self.one_line and not value.isprintable() and _CONTROL.search(value):
                raise ConstructorError(
                    None,
                    None,
                    "must not contain control characters (a newline, a tab, NUL); "
                    "write the value on one line",
                    _mark(event),
                )
            return value  # what SafeLoader's str constructor returns, minus the node
        if tag in (_INT, _FLOAT) and len(event.value) > MAX_NUMBER_CHARS:
            raise ConstructorError(
                None,
                None,
                f"a number of {len(event.value)} characters; no key takes more "
                f"than {MAX_NUMBER_CHARS} (quote it if it is a string)",
                _mark(event),
            )
        node = yaml.ScalarNode(
            tag, event.value, event.start_mark, event.end_mark, style=event.style
        )
        constructors = self.loader.yaml_constructors
        construct = constructors.get(tag) or constructors[None]  # None: "undefined tag"
        try:
            return construct(self.loader, node)
        except (ValueError, OverflowError):
            # a timestamp such as 2024-13-45 matches the resolver's pattern, not the calendar
            raise ConstructorError(
                None,
                None,
                f"{_quoted(event.value)} cannot be read as {tag.rpartition(':')[2]} "
                "(quote it if it is a string)",
                _mark(event),
            ) from None

    def _check_tag(self, event: Any, standard: str) -> None:
        if event.tag not in (None, "!", standard):
            raise ConstructorError(
                None,
                None,
                f"the tag {_SHORT.repr(event.tag)} is not supported here",
                event.start_mark,
            )

    def _fill_mapping(self, result: dict[Any, Any], start: Any) -> None:
        merges: list[dict[Any, Any]] = []
        get = self.loader.get_event
        while (key_event := get()).__class__ is not _MappingEndEvent:
            if key_event.__class__ is _ScalarEvent and self._tag(key_event) == _MERGE:
                try:
                    merges.extend(self._merge_sources(self.loader.peek_event()))
                except yaml.YAMLError as exc:
                    _locate(exc, "<<")
                    raise
                continue
            try:
                key = self.value(key_event)
            except yaml.YAMLError as exc:
                if key_event.__class__ is _ScalarEvent:
                    _locate(exc, key_event.value)  # the key itself is what was refused
                raise
            try:
                duplicate = key in result
            except TypeError:
                raise ConstructorError(
                    "while constructing a mapping",
                    start.start_mark,
                    "found unhashable key",
                    key_event.start_mark,
                ) from None
            if duplicate:
                raise ConstructorError(
                    None,
                    None,
                    f"key {_quoted(key)} appears twice in one mapping",
                    key_event.start_mark,
                )
            if self.depth <= 2:
                self._note_line(key, key_event)
            try:
                result[key] = self.value()
            except yaml.YAMLError as exc:
                _locate(exc, key)
                raise
        if merges:
            own = dict(result)
            result.clear()
            for source in reversed(merges):  # earlier merges win over later ones
                result.update(source)
            result.update(own)  # and the mapping's own keys over every merge

    def _note_line(self, key: Any, event: Any) -> None:
        lines = self.key_lines
        if lines is None:
            return
        mark = _mark(event)
        line = mark.line + 1 if mark is not None else 0
        if self.depth == 1:
            self.top_key = key
            lines[(key,)] = line
        else:
            # a mapping at depth 2 is the value of the top key being built
            lines[(self.top_key, key)] = line

    def _merge_sources(self, event: Any) -> list[dict[Any, Any]]:
        value = self.value()
        sources = value if isinstance(event, yaml.SequenceStartEvent) else [value]
        for source in sources:
            if not isinstance(source, dict):
                raise ConstructorError(
                    "while constructing a mapping",
                    None,
                    "expected a mapping or list of mappings for merging",
                    event.start_mark,
                )
        return list(sources)
