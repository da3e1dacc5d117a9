"""The markers of the docs hold together: every named block is run, nothing runnable is unmarked.

- Every block marked ``<!-- test: NAME -->`` anywhere in the docs is asked for by
  a test (its name is a string in a test module, a test builds names under its
  prefix as in ``f"first-account/{step}"``, or a ``policy:`` marker pairs a
  policy with it): a marker no test reads would pretend a snippet is tested.
- Every block of "Consuming tokens" is a recipe marked ``test: consumer/...``
  and run by tests/docs/test_consumers_*.py: that section cannot hold an
  untested recipe.
- Every ``shell/`` block is run by tests/docs/test_shell.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import docs

TESTS = Path(__file__).resolve().parents[1]


def all_test_sources() -> str:
    return "".join(
        path.read_text(encoding="utf-8")
        for path in sorted(TESTS.rglob("*.py"))
        if path.name != Path(__file__).name
    )


def test_every_marked_block_is_asked_for_by_a_test() -> None:
    sources = all_test_sources()
    paired = {
        block.markers["policy"].partition(" ")[2].strip()
        for block in docs.fences()
        if "policy" in block.markers
    }
    # a test that builds its names (f"first-account/{step}") asks for the whole prefix
    prefixes = tuple(re.findall(r"""f["']([\w./-]+/)\{""", sources))
    unasked = [
        f"{block.where}: test: {name}"
        for name, block in docs.blocks().items()
        if f'"{name}"' not in sources and name not in paired and not name.startswith(prefixes)
    ]
    assert unasked == [], "marked blocks no test runs"


def test_every_block_of_consuming_tokens_is_a_marked_recipe() -> None:
    path, _ = docs.section("consuming")
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if "<!-- section:consuming -->" in line)
    end = next((i for i in range(start + 1, len(lines)) if "<!-- section:" in lines[i]), len(lines))
    in_section = [block for block in docs.fences(path) if start < block.line <= end]
    assert in_section, "the section has recipes"
    unmarked = [block.where for block in in_section if not block.name.startswith("consumer/")]
    assert unmarked == [], "every block of 'Consuming tokens' is a tested consumer/ recipe"


def test_every_consumer_recipe_and_shell_snippet_has_its_test() -> None:
    here = Path(__file__).resolve().parent
    consumers = "".join(p.read_text(encoding="utf-8") for p in here.glob("test_consumers_*.py"))
    asked = set(re.findall(r'docs\.block\("(consumer/[^"]+)"\)', consumers))
    marked = {name for name in docs.blocks() if name.startswith("consumer/")}
    assert marked == asked
    shell = (here / "test_shell.py").read_text(encoding="utf-8")
    for name in docs.blocks():
        if name.startswith("shell/"):
            assert f'"{name}"' in shell, f"{name} is run by tests/docs/test_shell.py"
