"""The snippet extractor must return what the Markdown shows, and refuse what it cannot find."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import docs

# any text line that is not itself a fence of the block's kind
_lines = st.lists(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).filter(
        lambda line: not line.strip().startswith(("```", "~~~"))
    ),
    max_size=8,
)


@given(body=_lines, indent=st.integers(0, 6), fence=st.sampled_from(["```", "````", "~~~"]))
def test_a_marked_block_comes_back_as_written(
    tmp_path_factory: pytest.TempPathFactory, body: list[str], indent: int, fence: str
) -> None:
    pad = " " * indent
    markdown = "\n".join(
        [
            "# Title",
            "```sh",
            "not marked",
            "```",
            f"{pad}<!-- test: any/name -->",
            "",
            f"{pad}{fence}python extra words",
            *(f"{pad}{line}" if line else "" for line in body),
            f"{pad}{fence}",
            "after",
        ]
    )
    path = tmp_path_factory.mktemp("docs") / "doc.md"
    path.write_text(markdown, encoding="utf-8")
    found = docs.block("any/name", path)
    assert found.lang == "python"
    assert found.text == "".join(f"{line}\n" for line in body)
    assert list(docs.blocks(path)) == ["any/name"]


def test_a_shorter_fence_inside_does_not_close_the_block(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("<!-- test: a -->\n````md\n```\ninner\n```\n````\n", encoding="utf-8")
    assert docs.block("a", path).text == "```\ninner\n```\n"


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("no markers here\n", "has no block marked '<!-- test: a -->' (marked blocks: none)"),
        ("<!-- test: a -->\ntext\n```\nx\n```\n", "is not followed by a fenced block"),
        ("<!-- test: a -->\n```\nx\n", "is never closed"),
        ("<!-- test: a -->\n```\nx\n```\n<!-- test: a -->\n```\ny\n```\n", "is used twice"),
    ],
)
def test_a_missing_or_broken_marker_fails_loudly(
    tmp_path: Path, markdown: str, message: str
) -> None:
    path = tmp_path / "doc.md"
    path.write_text(markdown, encoding="utf-8")
    with pytest.raises(docs.DocsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        docs.block("a", path)


def test_substitute_replaces_every_placeholder_and_refuses_a_missing_one() -> None:
    text = "addr /run/app/token /run/app\n"
    assert docs.substitute(text, {"/run/app": "/tmp/x", "/run/app/token": "/tmp/t"}) == (
        "addr /tmp/t /tmp/x\n"
    )
    with pytest.raises(docs.DocsError, match="no longer contains 'https://gone'"):
        docs.substitute(text, {"addr": "a", "https://gone": "b"})
