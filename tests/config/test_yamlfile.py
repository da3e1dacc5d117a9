"""The streaming YAML loader gives what yaml.safe_load gives, and is stricter."""

from __future__ import annotations

import pytest
import yaml

from rotator.config.yamlfile import load

SAME_AS_SAFE_LOAD = [
    "",
    "# only a comment\n",
    "a: 1\nb: [1, 2.5, true, null, '3', 2024-01-01]\nc: {d: e}\n",
    "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n",
    "a: &a {k: 1}\nb: &b {k: 2, j: 5}\nc:\n  <<: [*a, *b]\n  z: 0\n",
    "s: &s hello\nt: *s\nlist: &l [1, 2]\nm: *l\n",
    "x: |\n  multi\n  line\ny: >\n  folded\n  text\n",
    "on: yes\noff: no\n",
    "t: 1h\nmode: '0600'\noctal: 0600\n",
    "~: 1\n",
    "!!str 1: !!int '3'\n",
    "accounts:\n  a: {client_id: a, sinks: [{store: s, path: a.json}]}\n",
]


@pytest.mark.parametrize("text", SAME_AS_SAFE_LOAD)
def test_the_result_is_what_safe_load_returns(text: str) -> None:
    assert load(text) == yaml.safe_load(text)


def test_repeated_scalars_keep_their_types() -> None:
    # plain scalars' tags are cached per document; quoted ones are strings
    text = (
        "a: [1, 1, true, true, '1', 'true', \"1\", x, x, null, null, ~, 1.5, 1.5, 0600, 0600]\n"
        "b:\n  1: one\n  '1': quoted\n  x: |\n    1\n"
        "c: [1, true, null, 1.5, x]\n"
    )
    # repr, not ==: 1 == True and 1 == 1.0 in Python
    assert repr(load(text)) == repr(yaml.safe_load(text))


@pytest.mark.parametrize(
    ("text", "problem", "line"),
    [
        ("a: 1\nb: 2\na: 3\n", "key 'a' appears twice in one mapping", 2),
        ("a:\n  x: 1\n  x: 1\n", "key 'x' appears twice in one mapping", 2),
        ("a: *nope\n", "found undefined alias 'nope'", 0),
        ("a: !!set {x}\n", "is not supported here", 0),
        ("a: 1\n---\nb: 2\n", "but found another document", 1),
        ("<<: 3\n", "expected a mapping or list of mappings for merging", 0),
        ("? [a]\n: 1\n", "found unhashable key", 0),
        ("a: [\n", "did not find expected node content", 1),
    ],
)
def test_bad_documents_are_errors_with_a_position(text: str, problem: str, line: int) -> None:
    with pytest.raises(yaml.YAMLError) as caught:
        load(text)
    assert problem in str(caught.value.problem)  # type: ignore[attr-defined]
    assert caught.value.problem_mark.line == line  # type: ignore[attr-defined]


def test_merged_keys_do_not_count_as_duplicates_and_own_keys_win() -> None:
    text = "base: &b {x: 1, y: 2}\nm:\n  x: 9\n  <<: *b\n"
    assert load(text)["m"] == {"x": 9, "y": 2}
