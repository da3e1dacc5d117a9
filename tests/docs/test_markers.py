"""Every recipe in docs/consuming.md ("Consuming tokens") is marked, and every marked recipe is run.

A block added to the section without a ``<!-- test: ... -->`` marker, or a
marker no test asks for, fails here: the section cannot hold an untested recipe.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import docs

HERE = Path(__file__).resolve().parent


def section_lines() -> list[str]:
    return docs.page("consuming.md").splitlines()


def test_every_block_in_the_section_is_marked() -> None:
    lines = section_lines()
    unmarked = []
    inside = False
    for index, line in enumerate(lines):
        if not re.match(r"\s*(```|~~~)", line):
            continue
        if not inside:
            previous = next(text for text in reversed(lines[:index]) if text.strip())
            if not previous.strip().startswith("<!-- test: consumer/"):
                unmarked.append(line)
        inside = not inside
    assert unmarked == []


def test_every_marked_recipe_is_run_by_a_test() -> None:
    marked = {
        name for path in docs.pages() for name in docs.blocks(path) if name.startswith("consumer/")
    }
    tests = "".join(path.read_text(encoding="utf-8") for path in HERE.glob("test_*.py"))
    asked = set(re.findall(r'docs\.block\("(consumer/[^"]+)"\)', tests))
    assert marked == asked
    in_section = {
        m.group(1) for m in map(re.compile(r"<!-- test: (\S+) -->").search, section_lines()) if m
    }
    # the consumer policy lives with the Vault store; every other recipe in this section
    assert marked - in_section == {"consumer/policy"}
