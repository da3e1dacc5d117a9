"""README "Consuming tokens": the file recipes, run as printed against rotator's file sinks.

- ``consumer/file-watch``: the watcher sees every token rotator renames into
  place (and a file handle held open does not, which is why the recipe re-opens).
- ``consumer/systemd``: the env sink reads back exactly under systemd's
  ``EnvironmentFile=`` rules (tests/docs/systemd_env.py, checked against
  systemd's own parser), for any token RFC 6749 allows; the units verify with
  ``systemd-analyze verify``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.backends.file.formats import render
from tests.docs.conftest import Published
from tests.docs.systemd_env import GENERATOR, read_env_file, systemd_parse
from tests.support import docs, leakcheck
from tests.support.net import wait_until

README_TOKEN_FILE = "/var/lib/rotator/tokens/idp-api.token"


def test_file_watch_recipe_sees_every_replaced_token(pub: Published, tmp_path: Path) -> None:
    token_file = pub.tokens_dir / "idp-api.token"
    source = docs.substitute(
        docs.block("consumer/file-watch").text, {README_TOKEN_FILE: str(token_file)}
    )
    namespace: dict[str, object] = {"__name__": "readme_file_watch"}
    exec(compile(source, "docs/consuming.md:consumer/file-watch", "exec"), namespace)  # noqa: S102
    token_changes: Callable[..., Iterator[str]] = namespace["token_changes"]  # type: ignore[assignment]

    pub.rotate()
    changes = token_changes(str(token_file), interval=0.02)
    assert pub.label(next(changes)) == "T1"
    held = open(token_file, encoding="utf-8")  # noqa: SIM115 - what the recipe warns against
    try:
        pub.rotate()
        assert pub.label(next(changes)) == "T2"
        pub.rotate()
        assert pub.label(next(changes)) == "T3"
        # the old file, renamed over, still holds T1 for whoever kept it open
        assert pub.label(held.read().strip()) == "T1"
    finally:
        held.close()

    # The whole snippet as a program: it reports each change, and only changes.
    out = leakcheck.log_file("readme-file-watch")
    with open(out, "wb") as log:
        program = subprocess.Popen(
            [sys.executable, "-c", source], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            changed = lambda count: out.read_text().count("the token changed") >= count  # noqa: E731
            wait_until(lambda: changed(1), timeout=20, what="the program's first token")
            pub.rotate()
            wait_until(lambda: changed(2), timeout=20, what="the program seeing a rotation")
        finally:
            program.terminate()
            program.wait(timeout=10)
    assert out.read_text().splitlines() == ["the token changed"] * 2


def test_env_sink_reads_back_under_systemd_rules(pub: Published) -> None:
    pub.rotate()
    text = (pub.tokens_dir / "myapp" / "idp-api.env").read_text(encoding="utf-8")
    env = read_env_file(text)
    assert sorted(env) == ["ACCESS_TOKEN", "EXPIRES_AT", "TOKEN_TYPE"]
    assert pub.label(env["ACCESS_TOKEN"]) == "T1"
    assert {k: v for k, v in systemd_parse(text).items() if k in env} == env


# RFC 6749 A.12: an access token is 1*VSCHAR, %x20-7E (space, quotes, $, \ and all)
_vschar = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40)


@settings(max_examples=300)
@given(token=_vschar, token_type=_vschar, expires_at=_vschar)
def test_any_token_round_trips_through_the_env_format(
    token: str, token_type: str, expires_at: str
) -> None:
    view = {"access_token": token, "token_type": token_type, "expires_at": expires_at}
    env = read_env_file(render(view, "env").decode("utf-8"))
    assert env == {"ACCESS_TOKEN": token, "TOKEN_TYPE": token_type, "EXPIRES_AT": expires_at}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=_vschar.filter(lambda v: "$" not in v), token_type=st.sampled_from(["Bearer", "a b"]))
def test_the_reader_agrees_with_systemds_own_parser(token: str, token_type: str) -> None:
    """systemd's parser (via environment.d, which also expands $NAME) reads what the reader does."""
    view = {"access_token": token, "token_type": token_type, "expires_at": "2030-01-01T00:00:00Z"}
    text = render(view, "env").decode("utf-8")
    expected = read_env_file(text)
    assert {k: v for k, v in systemd_parse(text).items() if k in expected} == expected


def test_systemd_parser_is_here() -> None:
    """The cross-check above needs systemd's generator (the `systemd` package: .ci/run has it)."""
    assert GENERATOR.exists(), f"{GENERATOR} is missing: install the systemd package"


def _units(text: str) -> dict[str, str]:
    """The README block holds three files, each after a `# /etc/systemd/system/NAME` line."""
    units: dict[str, str] = {}
    name = ""
    for line in text.splitlines(keepends=True):
        if line.startswith("# /etc/systemd/system/"):
            name = line[len("# /etc/systemd/system/") :].strip()
            units[name] = ""
        elif name:
            units[name] += line
    return units


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install the systemd package"
    units = _units(docs.block("consumer/systemd").text)
    assert sorted(units) == [
        "myapp-token.path",
        "myapp-token.service",
        "myapp.service.d/token.conf",
    ]
    for name, body in units.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    # the consumer's own unit, which the drop-in extends
    (tmp_path / "myapp.service").write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    result = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            *(str(tmp_path / name) for name in ("myapp.service", *units) if "/" not in name),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )
    complaints = [line for line in result.stderr.splitlines() if "myapp" in line]
    assert result.returncode == 0 and complaints == [], result.stderr
    drop_in = units["myapp.service.d/token.conf"]
    path_unit = units["myapp-token.path"]
    # the drop-in reads the env sink the path unit watches the directory of
    env_file = drop_in.split("EnvironmentFile=")[1].split()[0]
    watched = path_unit.split("PathChanged=")[1].split()[0]
    assert env_file.endswith("/idp-api.env") and env_file.startswith(watched)
