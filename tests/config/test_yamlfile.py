"""The streaming YAML loader gives what yaml.safe_load gives, and is stricter."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.config.yamlfile import (
    EXPANSION_FACTOR,
    EXPANSION_FLOOR,
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    load,
)

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


# -- bounds: the file is hostile input ----------------------------------------------------


def _refused(text: str, **options: bool) -> yaml.YAMLError:
    with pytest.raises(yaml.YAMLError) as caught:
        load(text, **options)
    return caught.value


def _problem(error: yaml.YAMLError) -> str:
    return str(error.problem)  # type: ignore[attr-defined]


def test_nesting_up_to_the_bound_loads_and_one_more_is_refused() -> None:
    deep = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)  # inside the top mapping
    assert load(f"a: {deep}\n") is not None
    error = _refused(f"a: [{deep}]\n")
    assert "nested more than 64 deep" in _problem(error)
    assert error.key_path == ["a"] + [0] * (MAX_DEPTH - 1)  # type: ignore[attr-defined]


def test_a_number_up_to_the_bound_loads_and_a_longer_one_is_refused() -> None:
    assert load("n: " + "9" * MAX_NUMBER_CHARS) == {"n": int("9" * MAX_NUMBER_CHARS)}
    error = _refused("x:\n  n: " + "9" * 5000 + "\n")
    assert "a number of 5000 characters" in _problem(error)
    assert error.key_path == ["x", "n"]  # type: ignore[attr-defined]
    assert load("n: '" + "9" * 5000 + "'")["n"] == "9" * 5000  # quoted: a string


@pytest.mark.parametrize("text", ["t: 2024-13-45\n", "t: 2024-02-30\n", "t: 2024-01-01 25:00:00\n"])
def test_a_scalar_its_constructor_cannot_read_is_a_yaml_error(text: str) -> None:
    assert "cannot be read as timestamp" in _problem(_refused(text))


@pytest.mark.parametrize("depth", [4, 7, 8, 30])
def test_alias_expansion_past_the_budget_is_refused_at_once(depth: int) -> None:
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth + 1)]
    text = "\n".join(levels) + "\n"
    budget = EXPANSION_FLOOR + EXPANSION_FACTOR * len(text)
    if 10 ** (depth + 1) < budget:  # small enough to load
        assert len(load(text)) == depth + 1
        return
    error = _refused(text)
    assert f"aliases expand the document past {budget} values" in _problem(error)


def test_the_budget_counts_expanded_nodes_not_aliases() -> None:
    # one anchor of 1000 values, used 200 times: 200,000 values from 5 KB of text
    def text(uses: int) -> str:
        big = ", ".join(["1"] * 1000)
        return f"big: &b [{big}]\nuses: [{', '.join(['*b'] * uses)}]\n"

    assert "aliases expand" in _problem(_refused(text(200)))
    assert len(load(text(20))["uses"]) == 20  # 20,000 values: inside the floor


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    assert "inside its own anchor" in _problem(_refused("a: &x {b: *x}\n"))
    assert "inside its own anchor" in _problem(_refused("a: &x [1, [*x]]\n"))
    assert load("a: &x [1]\nb: [*x, *x]\n") == {"a": [1], "b": [[1], [1]]}


def test_one_line_refuses_control_characters_in_keys_and_values() -> None:
    text = "a:\n  b: |\n    two\n    lines\n"
    assert load(text) == yaml.safe_load(text)  # the loader itself keeps YAML's meaning
    assert _refused(text, one_line=True).key_path == ["a", "b"]  # type: ignore[attr-defined]
    assert _refused('"k\\x00": 1\n', one_line=True).key_path == ["k\x00"]  # type: ignore[attr-defined]
    for char in ["\t", "\r", "\x7f", "\x85", "\u2028"]:
        error = _refused(f"a: [ok, {json.dumps('x' + char)}]\n", one_line=True)
        assert "control characters" in _problem(error)
        assert error.key_path == ["a", 1]  # type: ignore[attr-defined]
    assert load("a: 'naïve café ✓'\n", one_line=True) == {"a": "naïve café ✓"}


def test_messages_quote_a_long_key_cut_short() -> None:
    key = "k" * 10_000
    error = _refused(f"{{{key}: 1, {key}: 2}}\n")
    assert len(_problem(error)) < 200


# -- libyaml's parser and PyYAML's own give one result ------------------------------------

#: plain words that resolve to every implicit type, and near misses that stay strings
_PLAIN = st.sampled_from(
    [
        "yes", "No", "on", "OFF", "true", "False", "null", "~", "Null", "0", "-1", "+7",
        "0600", "0o17", "0x1F", "0b101", "1_000", "1:30", "1.5", "-.5", "1e3", "6.02e+23",
        ".inf", "-.Inf", ".nan", "2024-01-01", "2024-01-01 10:00:00", "2024-01-01T10:00:00Z",
        "<<", "=", "1h", "30s", "bench-x-000001", "x", "tokens/acme", "http://a.example/t",
        "n", "y", "Yes please", "1.2.3", "+", "-", ".", "0.", "00", "v1", "~x",
    ]
)  # fmt: skip
_KEYS = st.sampled_from(["a", "b", "c", "<<", "on", "1", "null", "k-1"])


def _plain_document(draw: st.DrawFn) -> str:
    """A document of plain scalars in block and flow style, merge keys and anchors."""
    lines = ["base: &base {x: 1, y: two}"]
    for index in range(draw(st.integers(0, 8))):
        key = f"k{index}"
        shape = draw(st.sampled_from(["scalar", "flow", "block", "merge", "alias", "list"]))
        if shape == "scalar":
            lines.append(f"{key}: {draw(_PLAIN)}")
        elif shape == "flow":
            pairs = draw(st.dictionaries(_KEYS, _PLAIN, max_size=3))
            lines.append(f"{key}: {{{', '.join(f'{k}: {v}' for k, v in pairs.items())}}}")
        elif shape == "block":
            lines.append(f"{key}:")
            lines += [
                f"  {k}: {v}" for k, v in draw(st.lists(st.tuples(_KEYS, _PLAIN), max_size=3))
            ]
        elif shape == "merge":
            lines += [f"{key}:", "  <<: *base", f"  y: {draw(_PLAIN)}"]
        elif shape == "alias":
            lines.append(f"{key}: *base")
        else:
            lines.append(f"{key}: [{', '.join(draw(st.lists(_PLAIN, max_size=4)))}]")
    return "\n".join(lines) + "\n"


def _outcome(text: str, loader: object) -> tuple[str, ...]:
    """What load gives with ``loader``: the result's repr, or the error's problem and line."""
    try:
        return ("ok", repr(load(text, one_line=True, loader=loader)))
    except (yaml.scanner.ScannerError, yaml.parser.ParserError):
        return ("syntax",)  # the two parsers word (and place) a syntax error each their way
    except yaml.YAMLError as exc:  # refused by the loader itself: the same words and place
        mark = getattr(exc, "problem_mark", None)
        return (
            "error",
            str(getattr(exc, "problem", exc)),
            str(mark.line if mark is not None else None),
            repr(getattr(exc, "key_path", None)),
        )


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.composite(_plain_document)())
def test_libyaml_and_the_pure_parser_give_one_result(text: str) -> None:
    # The daemon parses with libyaml's events (5x faster at 100,000 accounts); the two
    # parsers mark a plain scalar differently ('' vs None), so the class of defect is a
    # value typed by one and not the other, a duplicate key or a line seen by one only.
    libyaml = _outcome(text, yaml.CSafeLoader)
    assert libyaml == _outcome(text, yaml.SafeLoader)
    if libyaml[0] == "ok":
        assert libyaml[1] == repr(yaml.safe_load(text))  # no duplicate key: as PyYAML reads it


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=8) | _PLAIN,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")
@settings(max_examples=200, deadline=None)
@given(_VALUES, st.booleans())
def test_what_safe_dump_writes_both_parsers_read_back(value: object, flow: bool) -> None:
    text = yaml.safe_dump({"v": value}, default_flow_style=flow, allow_unicode=True)
    expected = repr(yaml.safe_load(text))
    assert repr(load(text, loader=yaml.CSafeLoader)) == expected
    assert repr(load(text, loader=yaml.SafeLoader)) == expected
