"""The snippet extractor must return what the Markdown shows, and refuse what it cannot find."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_every_fence_comes_back_with_its_markers_and_place(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text(
        "<!-- section:intro -->\n"
        "text\n"
        "<!-- note: a prose comment, no marker -->\n"
        "more text\n"
        "```yaml\n"
        "a: 1\n"
        "```\n"
        "<!-- test: c/one -->\n"
        "<!-- config: fragment -->\n"
        "\n"
        "   ~~~~ hcl\n"
        "   x\n"
        "   ~~~~\n",
        encoding="utf-8",
    )
    first, second = docs.fences(path)
    assert (first.lang, first.line, first.name, dict(first.markers)) == ("yaml", 5, "", {})
    assert (second.lang, second.line, second.name) == ("hcl", 11, "c/one")
    assert dict(second.markers) == {"test": "c/one", "config": "fragment"}
    assert second.text == "x\n"
    assert second.where.endswith("page.md:11")


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("<!-- cofig: none -->\n```yaml\na: 1\n```\n", "unknown marker 'cofig:'"),
        ("<!-- config: none -->\n<!-- config: fragment -->\n```\nx\n```\n", "a second 'config:'"),
        ("<!-- policy: daemon x -->\nprose\n", "is not followed by a fenced block"),
        ("<!-- test: bad name -->\n```\nx\n```\n", "is not a name"),
    ],
)
def test_a_misspelt_or_stray_marker_is_refused(tmp_path: Path, markdown: str, message: str) -> None:
    path = tmp_path / "doc.md"
    path.write_text(markdown, encoding="utf-8")
    with pytest.raises(docs.DocsError, match=message):
        list(docs.fences(path))


def test_the_docs_are_the_readme_and_every_page_and_names_are_unique_across_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- test: a -->\n```\nfront\n```\n", encoding="utf-8")
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.md").write_text("<!-- test: b -->\n```\nb\n```\n", encoding="utf-8")
    (tmp_path / "docs" / "sub" / "c.md").write_text("```sh\nc\n```\n", encoding="utf-8")
    monkeypatch.setattr(docs, "README", readme)
    monkeypatch.setattr(docs, "DOCS", tmp_path / "docs")
    assert [p.name for p in docs.doc_files()] == ["README.md", "b.md", "c.md"]
    assert [block.text for block in docs.fences()] == ["front\n", "b\n", "c\n"]
    assert docs.block("b").path == tmp_path / "docs" / "b.md"
    (tmp_path / "docs" / "sub" / "c.md").write_text("<!-- test: a -->\n```\nc\n```\n")
    with pytest.raises(docs.DocsError, match=r"c\.md:2: marker 'test: a' is used twice \(also at "):
        docs.blocks()


_prose = st.lists(
    st.text(st.characters(whitelist_categories=("L", "N", "Zs")), max_size=20), max_size=3
)
_fenced = st.tuples(
    st.fixed_dictionaries(
        {},
        optional={
            "test": st.from_regex(r"[a-z]{1,5}/[a-z0-9]{1,5}", fullmatch=True),
            "config": st.sampled_from(["fragment", "none"]),
            "policy": st.sampled_from(["daemon x/y", "consumer x/y"]),
        },
    ),
    st.sampled_from(["", "yaml", "hcl", "sh"]),
    _lines,
    st.integers(0, 3),
    st.sampled_from(["```", "~~~", "````"]),
    _prose,
)


@given(page=st.lists(_fenced, max_size=5, unique_by=lambda f: f[0].get("test", id(f))))
def test_every_fence_of_a_page_is_found_with_its_markers(
    tmp_path_factory: pytest.TempPathFactory, page: list[Any]
) -> None:
    lines: list[str] = ["# Page", "<!-- section:x -->"]
    for markers, lang, body, indent, fence, prose in page:
        pad = " " * indent
        lines += [line.strip() or "." for line in prose]  # a paragraph before each block
        lines += [""] + [f"{pad}<!-- {key}: {value} -->" for key, value in markers.items()]
        lines += [f"{pad}{fence}{lang}", *(f"{pad}{line}" if line else "" for line in body)]
        lines += [f"{pad}{fence}", ""]
    path = tmp_path_factory.mktemp("docs") / "page.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    found = list(docs.fences(path))
    assert [(dict(b.markers), b.lang, b.text) for b in found] == [
        (markers, lang, "".join(f"{line}\n" for line in body)) for markers, lang, body, *_ in page
    ]
    assert [b.name for b in found] == [markers.get("test", "") for markers, *_ in page]
