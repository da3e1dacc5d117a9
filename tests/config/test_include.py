"""Accounts in many files (rotator/config/files.py, the include: pass of loading.py).

The property: however a valid accounts mapping is split between the main file
and included files, it loads to the same configuration as one file. The
refusals: each names the file, the key path, the line and what would be right.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.config import Config, load_config, loading, parse_config
from rotator.config import files as config_files
from rotator.errors import ConfigError
from tests.support.kubelet import atomic_writer
from tests.support.proc import run_rotator

MAIN: dict[str, Any] = {
    "stores": {
        "files": {"type": "file", "directory": "/tmp/rotator-include-test"},
        "vault": {
            "type": "vault",
            "url": "https://vault:8200",
            "auth": {"method": "token", "token": "env:VAULT_TOKEN"},
        },
    },
    "defaults": {"state": {"store": "files"}, "provider": "oauth2", "refresh_share": 0.5},
    "accounts": {},
}


def oauth_account(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "token_url": "https://idp.example/oauth/token",
        "client_id": f"client-{name}",
        "client_secret": "env:IDP_SECRET",
        "sinks": [{"store": "files", "path": f"{name}.json"}],
        **extra,
    }


def write(path: Path, data: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def main_with(tmp: Path, accounts: dict[str, Any], include: list[str] | None = None) -> Path:
    raw = copy.deepcopy(MAIN)
    raw["accounts"] = accounts
    if include is not None:
        raw["include"] = include
    return write(tmp / "rotator.yaml", raw)


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return str(caught.value)


def same(a: Config, b: Config) -> bool:
    ignored = {"source", "included", "unmatched_includes"}
    return a.model_dump(exclude=ignored) == b.model_dump(exclude=ignored)


# -- the property ------------------------------------------------------------------

NAMES = st.lists(
    st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True),
    min_size=1,
    max_size=12,
    unique=True,
)


@settings(max_examples=40, deadline=None)
@given(
    names=NAMES,
    files=st.integers(min_value=1, max_value=5),
    data=st.data(),
)
def test_any_split_into_files_loads_to_the_same_config(
    names: list[str], files: int, data: st.DataObject
) -> None:
    accounts = {
        name: oauth_account(name, **({"jitter": 0.2} if index % 3 == 0 else {}))
        for index, name in enumerate(names)
    }
    # each account goes to the main file (-1) or to one of the included files
    homes = data.draw(
        st.lists(st.integers(-1, files - 1), min_size=len(names), max_size=len(names))
    )
    nested = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        whole = load_config(str(main_with(tmp / "one", accounts)))
        split = tmp / "split"
        in_main = {
            n: a for n, a, home in zip(names, accounts.values(), homes, strict=True) if home < 0
        }
        for index in range(files):
            part = {
                n: a
                for n, a, home in zip(names, accounts.values(), homes, strict=True)
                if home == index
            }
            name = f"accounts.d/team{index}/accounts.yaml" if nested else f"accounts.d/{index}.yaml"
            write(split / name, {"accounts": part} if part else "")
        pattern = "accounts.d/*/*.yaml" if nested else "accounts.d/*.yaml"
        config = load_config(str(main_with(split, in_main, [pattern])))
        assert same(config, whole)
        assert len(config.included) == files
        # defaults of the main file applied to included accounts too
        assert all(a.refresh_share == 0.5 for a in config.accounts.values())


@settings(max_examples=25, deadline=None)
@given(names=NAMES, files=st.integers(min_value=1, max_value=4), data=st.data())
def test_any_name_written_twice_is_refused_naming_both_files(
    names: list[str], files: int, data: st.DataObject
) -> None:
    twice = data.draw(st.sampled_from(names))
    # two different homes for the twice-written name: -1 is the main file
    first, second = data.draw(
        st.lists(st.integers(-1, files - 1), min_size=2, max_size=2, unique=True)
    )
    shown = {-1: "rotator.yaml", **{i: f"accounts.d/{i}.yaml" for i in range(files)}}
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        parts: dict[int, dict[str, Any]] = {home: {} for home in range(-1, files)}
        for name in names:
            if name != twice:
                parts[data.draw(st.integers(-1, files - 1))][name] = oauth_account(name)
        for home in (first, second):
            parts[home][twice] = oauth_account(twice)
        for index in range(files):
            write(tmp / shown[index], {"accounts": parts[index]} if parts[index] else "")
        message = refusal(main_with(tmp, parts[-1], ["accounts.d/*.yaml"]))
    later, earlier = sorted((first, second), reverse=True)
    assert f"{shown[later]}: accounts.{twice}: defined twice, here (line " in message
    assert f"{shown[earlier]} (line " in message
    assert "(line 0)" not in message


# -- what is read, and in which order ------------------------------------------------


def test_files_are_read_sorted_once_and_named_relative_to_the_main_file(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/b.yaml", {"accounts": {"b": oauth_account("b")}})
    write(tmp_path / "accounts.d/a.yaml", {"accounts": {"a": oauth_account("a")}})
    extra = write(tmp_path.parent / f"{tmp_path.name}-extra.yaml", {"accounts": {}})
    main = main_with(tmp_path, {}, ["accounts.d/*.yaml", "accounts.d/a.yaml", str(extra)])
    config = load_config(str(main))
    assert config.included == ("accounts.d/a.yaml", "accounts.d/b.yaml", str(extra))
    assert list(config.accounts) == ["a", "b"]
    assert config.unmatched_includes == ()


def test_kubelet_configmap_layout_skips_the_dot_entries(tmp_path: Path) -> None:
    for team in ("red", "blue"):
        atomic_writer(
            tmp_path / "accounts.d" / team,
            {"accounts.yaml": yaml.safe_dump({"accounts": {team: oauth_account(team)}})},
        )
    config = load_config(str(main_with(tmp_path, {}, ["accounts.d/*/*.yaml"])))
    assert sorted(config.accounts) == ["blue", "red"]
    assert config.included == ("accounts.d/blue/accounts.yaml", "accounts.d/red/accounts.yaml")


def test_an_empty_glob_is_allowed_and_check_warns(tmp_path: Path) -> None:
    main = main_with(tmp_path, {"a": oauth_account("a")}, ["accounts.d/*.yaml"])
    assert load_config(str(main)).unmatched_includes == ("accounts.d/*.yaml",)
    proc = run_rotator(["check", "-c", str(main)])
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK: 1 accounts" in proc.stdout
    assert "warning: include: 'accounts.d/*.yaml' matches no file" in proc.stderr


def test_an_empty_included_file_adds_nothing(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/empty.yaml", "# no customers yet\n")
    write(tmp_path / "accounts.d/none.yaml", "accounts:\n")
    config = load_config(str(main_with(tmp_path, {}, ["accounts.d/*.yaml"])))
    assert config.accounts == {}
    assert len(config.included) == 2


def test_parse_config_resolves_patterns_against_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "more.yaml", {"accounts": {"x": oauth_account("x")}})
    raw = copy.deepcopy(MAIN)
    raw["include"] = ["more.yaml"]
    config = parse_config(yaml.safe_dump(raw), base_dir=str(tmp_path))
    assert list(config.accounts) == ["x"]


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "fix"),
    [
        ("stores", "move it to the main file"),
        ("defaults", "move it to the main file"),
        ("include", "included files include no others; add the pattern to include: in"),
        ("acounts", "the only section of an included file is accounts"),
    ],
)
def test_an_included_file_holds_accounts_only(tmp_path: Path, key: str, fix: str) -> None:
    text = "accounts:\n  a:\n    client_id: a\n" + f"{key}: {{}}\n"
    write(tmp_path / "accounts.d/x.yaml", text)
    message = refusal(main_with(tmp_path, {}, ["accounts.d/*.yaml"]))
    assert message.startswith(f"accounts.d/x.yaml: {key}: an included file holds accounts: only")
    assert "(line 4)" in message
    assert fix in message


def test_a_name_defined_in_two_included_files_names_both(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/a.yaml", {"accounts": {"acme": oauth_account("acme")}})
    write(
        tmp_path / "accounts.d/b.yaml",
        {"accounts": {"other": oauth_account("other"), "acme": oauth_account("acme")}},
    )
    message = refusal(main_with(tmp_path, {}, ["accounts.d/*.yaml"]))
    # safe_dump sorts keys: in b.yaml acme is written first, on line 2
    assert message.startswith("accounts.d/b.yaml: accounts.acme: defined twice, here (line 2)")
    assert "and in accounts.d/a.yaml (line 2)" in message
    assert "rename or remove one" in message


def test_a_name_in_the_main_file_and_an_included_file_names_both(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/a.yaml", {"accounts": {"acme": oauth_account("acme")}})
    main = main_with(tmp_path, {"acme": oauth_account("acme")}, ["accounts.d/*.yaml"])
    message = refusal(main)
    line = main.read_text().splitlines().index("  acme:") + 1
    assert message.startswith("accounts.d/a.yaml: accounts.acme: defined twice, here (line 2)")
    assert f"and in {main} (line {line})" in message


def test_account_errors_name_the_file_they_are_written_in(tmp_path: Path) -> None:
    broken = oauth_account("acme")
    del broken["token_url"]
    write(tmp_path / "accounts.d/x.yaml", {"accounts": {"acme": broken}})
    message = refusal(main_with(tmp_path, {}, ["accounts.d/*.yaml"]))
    assert message.startswith("accounts.d/x.yaml: accounts.acme.token_url: required key is missing")


def test_cross_reference_errors_name_the_file(tmp_path: Path) -> None:
    bad_store = oauth_account("acme")
    bad_store["sinks"] = [{"store": "fils", "path": "acme.json"}]
    write(tmp_path / "accounts.d/x.yaml", {"accounts": {"acme": bad_store}})
    message = refusal(main_with(tmp_path, {}, ["accounts.d/*.yaml"]))
    assert message.startswith("accounts.d/x.yaml: accounts.acme.sinks[0].store: 'fils' is not")


def test_with_include_in_use_main_file_errors_name_the_main_file(tmp_path: Path) -> None:
    broken = oauth_account("acme")
    broken["jitter"] = 3
    main = main_with(tmp_path, {"acme": broken}, ["accounts.d/*.yaml"])
    assert refusal(main).startswith(f"{main}: accounts.acme.jitter:")


def test_two_sinks_on_one_path_across_files_name_the_file(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/x.yaml", {"accounts": {"b": oauth_account("b")}})
    clash = oauth_account("a")
    clash["sinks"] = [{"store": "files", "path": "b.json"}]
    main = main_with(tmp_path, {"a": clash}, ["accounts.d/*.yaml"])
    message = refusal(main)
    assert "files:b.json is already written by" in message
    assert "accounts.d/x.yaml: accounts.b.sinks[0].path" in message


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        ("accounts.d/*.yaml", "include: must be a list of glob patterns"),
        ([""], "include[0]: must be a glob pattern"),
        ([3], "include[0]: must be a glob pattern"),
        (["missing.yaml"], "include[0]: "),
        (["*.yaml"], "matches the main file"),
        (["accounts.d"], "which is a directory"),
    ],
)
def test_include_refusals(tmp_path: Path, include: Any, expected: str) -> None:
    (tmp_path / "accounts.d").mkdir()
    message = refusal(main_with(tmp_path, {}, include))
    assert message.startswith(expected) or expected in message
    if include == ["missing.yaml"]:
        assert "missing.yaml' does not exist; write the path of an existing file" in message


def test_yaml_errors_name_the_included_file(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/x.yaml", "accounts:\n  a: [\n")
    assert refusal(main_with(tmp_path, {}, ["accounts.d/*.yaml"])).startswith(
        "accounts.d/x.yaml: not valid YAML"
    )
    write(tmp_path / "accounts.d/x.yaml", "accounts: [a, b]\n")
    assert refusal(main_with(tmp_path, {}, ["accounts.d/*.yaml"])).startswith(
        "accounts.d/x.yaml: accounts: must be a mapping of account name to settings (line 1)"
    )
    (tmp_path / "accounts.d/x.yaml").write_bytes(b"accounts: {a: \xff}\n")
    assert "accounts.d/x.yaml is not UTF-8" in refusal(
        main_with(tmp_path, {}, ["accounts.d/*.yaml"])
    )


def test_all_files_together_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(3):
        write(
            tmp_path / f"accounts.d/{index}.yaml", {"accounts": {f"a{index}": oauth_account("a")}}
        )
    main = main_with(tmp_path, {}, ["accounts.d/*.yaml"])
    main_size = main.stat().st_size
    monkeypatch.setattr(loading, "MAX_TOTAL_BYTES", main_size + 400)
    monkeypatch.setattr(config_files, "MAX_TOTAL_BYTES", main_size + 400)
    message = refusal(main)
    assert message.startswith("include[0]: the main file and its included files pass")
    assert "MB together at accounts.d/" in message


def test_check_exits_2_naming_the_included_file(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/x.yaml", {"accounts": {"a": oauth_account("a")}, "alerts": {}})
    proc = run_rotator(["check", "-c", str(main_with(tmp_path, {}, ["accounts.d/*.yaml"]))])
    assert proc.returncode == 2
    assert proc.stderr.startswith("rotator: config: accounts.d/x.yaml: alerts: ")
    assert "Traceback" not in proc.stderr


def test_check_counts_the_files(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/x.yaml", {"accounts": {"a": oauth_account("a")}})
    main = main_with(tmp_path, {"b": oauth_account("b")}, ["accounts.d/*.yaml"])
    proc = run_rotator(["check", "-c", str(main)])
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK: 2 accounts (from 2 files), 2 stores" in proc.stdout


@settings(max_examples=60, deadline=None)
@given(
    include=st.one_of(
        st.lists(st.text(max_size=40), max_size=4),
        st.lists(st.sampled_from(["*", "../*", "/", ".", "[", "accounts.d/[!a]*", "**/*"])),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
        st.integers(),
    ),
    body=st.text(max_size=200),
)
def test_any_include_and_any_included_text_gives_a_config_or_a_config_error(
    include: Any, body: str
) -> None:
    """Hostile input: nothing but ConfigError leaves, whatever the patterns and the files."""
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory) / "etc"
        (tmp / "accounts.d").mkdir(parents=True)
        (tmp / "accounts.d" / "x.yaml").write_text(body, encoding="utf-8")
        raw = copy.deepcopy(MAIN)
        raw["include"] = include
        try:
            main = write(tmp / "rotator.yaml", raw)
        except ValueError:  # text YAML cannot write (a lone surrogate)
            return
        try:
            load_config(str(main))
        except ConfigError as exc:
            assert loading.INTERNAL not in str(exc)


def test_check_shows_the_refusals_of_every_file_at_once(tmp_path: Path) -> None:
    broken = oauth_account("x")
    del broken["token_url"]
    write(tmp_path / "accounts.d/a.yaml", {"accounts": {"a": broken}, "stores": {}})
    write(tmp_path / "accounts.d/b.yaml", "accounts:\n  b: [\n")
    write(tmp_path / "accounts.d/c.yaml", {"accounts": {"c": broken}})
    main = main_with(tmp_path, {}, ["accounts.d/*.yaml"])
    first = refusal(main)
    assert first.startswith("accounts.d/a.yaml: stores: ")
    assert "\n  also accounts.d/b.yaml: not valid YAML" in first
    # once every file reads, the accounts' own refusals come together
    write(tmp_path / "accounts.d/a.yaml", {"accounts": {"a": broken}})
    write(tmp_path / "accounts.d/b.yaml", {"accounts": {"b": oauth_account("b")}})
    proc = run_rotator(["check", "-c", str(main)])
    assert proc.returncode == 2
    assert proc.stderr.startswith("rotator: config: accounts.d/a.yaml: accounts.a.token_url: ")
    assert "\n  also accounts.d/c.yaml: accounts.c.token_url: " in proc.stderr


def test_refusals_are_bounded_however_many_accounts_are_broken(tmp_path: Path) -> None:
    accounts = {f"a{index}": {"sinks": "nope"} for index in range(5000)}
    write(tmp_path / "accounts.d/x.yaml", {"accounts": accounts})
    message = refusal(main_with(tmp_path, {}, ["accounts.d/*.yaml"]))
    assert message.count("accounts.d/x.yaml: accounts.") == 6  # one per account refused
    assert message.endswith("(the first 6 refusals; there may be more)")
    assert len(message) <= 2000


def test_a_file_name_a_terminal_would_act_on_is_quoted(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d/x\nrotator: configuration OK.yaml", "stores: {}\n")
    main = main_with(tmp_path, {}, ["accounts.d/*.yaml"])
    assert refusal(main).startswith("'accounts.d/x\\nrotator: configuration OK.yaml': stores: ")
    proc = run_rotator(["check", "-c", str(main)])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1  # one line: the name's newline is shown escaped


@pytest.mark.parametrize(
    ("bad", "key", "says"),
    [
        ({"client_id": None}, "", "client_auth 'basic' needs client_id"),  # the model validator
        ({"sinks": [{"store": "files", "path": "../x"}]}, ".sinks[0].path", "'..' parts"),
        ({"jitter": 0.9}, ".jitter", "less than or equal to 0.5"),
    ],
)
def test_run_refuses_a_bad_account_among_many_alike_before_any_vendor_call(
    tmp_path: Path, bad: dict[str, Any], key: str, says: str
) -> None:
    """Accounts written alike are validated through a template (config/templates.py):
    one bad account in the seventh of ten files, among hundreds that differ from it
    only in the bad key, still stops ``rotator run`` with exit 2 naming the file and
    the key, before any account is rotated."""
    out = tmp_path / "out"
    for part in range(10):
        accounts = {}
        for index in range(100):
            name = f"acct-{part}-{index:03d}"
            accounts[name] = oauth_account(name, token_url="http://127.0.0.1:9/token")
            if (part, index) == (6, 50):
                accounts[name] |= bad
        write(tmp_path / f"accounts.d/{part:02d}.yaml", {"accounts": accounts})
    raw = copy.deepcopy(MAIN)
    raw["stores"] = {"files": {"type": "file", "directory": str(out)}}
    raw["server"] = {"spool_dir": str(tmp_path / "spool")}
    raw["include"] = ["accounts.d/*.yaml"]
    main = write(tmp_path / "rotator.yaml", raw)
    proc = run_rotator(["run", "-c", str(main)], env={"IDP_SECRET": "x"})
    assert proc.returncode == 2, proc.stderr
    assert f"accounts.d/06.yaml: accounts.acct-6-050{key}" in proc.stderr
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.rglob("*"))
