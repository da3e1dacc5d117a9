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
  a custom tag) is refused rather than half understood.

Errors are ``yaml.YAMLError`` with a ``problem_mark``, like PyYAML's own.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = ["load"]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_TAG_CACHE = 4096


def load(text: str) -> Any:
    """The single document in ``text`` as Python objects (None when empty)."""
    loader = _Loader(text)
    try:
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        data = _Builder(loader).value()
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


class _Builder:
    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.anchors: dict[str, Any] = {}
        #: plain scalar -> resolved tag: keys and shared values repeat once per account
        self.plain_tags: dict[tuple[str, Any], str] = {}

    def value(self) -> Any:
        event: Any = self.loader.get_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", _mark(event)
                )
            return self.anchors[event.anchor]
        if isinstance(event, yaml.ScalarEvent):
            result = self._scalar(event)
        elif isinstance(event, yaml.SequenceStartEvent):
            self._check_tag(event, _SEQ)
            result = []
            if event.anchor is not None:
                self.anchors[event.anchor] = result
            while not self.loader.check_event(yaml.SequenceEndEvent):
                result.append(self.value())
            self.loader.get_event()
            return result
        elif isinstance(event, yaml.MappingStartEvent):
            self._check_tag(event, _MAP)
            result = {}
            if event.anchor is not None:
                self.anchors[event.anchor] = result
            self._fill_mapping(result, event)
            return result
        else:  # pragma: no cover - the parser only yields the events above here
            raise yaml.composer.ComposerError(None, None, f"unexpected {event}", event.start_mark)
        if event.anchor is not None:
            self.anchors[event.anchor] = result
        return result

    def _scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            if event.style is not None:
                # quoted or block: a string whatever it says (implicit is (False, True))
                tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
            else:
                key = (event.value, event.implicit)
                tag = self.plain_tags.get(key)
                if tag is None:
                    tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                    if len(self.plain_tags) < _TAG_CACHE:
                        self.plain_tags[key] = tag
        if tag == _STR:
            return event.value  # what SafeLoader's str constructor returns, minus the node
        node = yaml.ScalarNode(
            tag, event.value, event.start_mark, event.end_mark, style=event.style
        )
        constructors = self.loader.yaml_constructors
        construct = constructors.get(tag) or constructors[None]  # None: "undefined tag"
        return construct(self.loader, node)

    def _check_tag(self, event: Any, standard: str) -> None:
        if event.tag not in (None, "!", standard):
            raise ConstructorError(
                None, None, f"the tag {event.tag!r} is not supported here", event.start_mark
            )

    def _fill_mapping(self, result: dict[Any, Any], start: Any) -> None:
        merges: list[dict[Any, Any]] = []
        while not self.loader.check_event(yaml.MappingEndEvent):
            key_event = self.loader.peek_event()
            if self._is_merge_key(key_event):
                self.loader.get_event()
                merges.extend(self._merge_sources(self.loader.peek_event()))
                continue
            key = self.value()
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
                    None, None, f"key {key!r} appears twice in one mapping", key_event.start_mark
                )
            result[key] = self.value()
        self.loader.get_event()
        if merges:
            own = dict(result)
            result.clear()
            for source in reversed(merges):  # earlier merges win over later ones
                result.update(source)
            result.update(own)  # and the mapping's own keys over every merge

    def _is_merge_key(self, event: Any) -> bool:
        if not isinstance(event, yaml.ScalarEvent):
            return False
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        return bool(tag == _MERGE)

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
