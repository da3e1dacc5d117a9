"""CI's verdict (.ci/check_run.py): no test run and an unlisted skip are red runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = (ROOT / ".ci" / "allowed-skips").read_text(encoding="utf-8")


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_run", ROOT / ".ci" / "check_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _checker()
CLOSING = "714 passed, 2 skipped in 420.73s (0:07:00)\n"


def test_a_run_without_tests_is_red() -> None:
    code, lines = check.verdict("no tests ran in 0.01s\n", ALLOWED)
    assert code == 1
    assert "no test ran" in lines[0]
    code, _ = check.verdict("", ALLOWED)
    assert code == 1


def test_test_output_saying_passed_does_not_count() -> None:
    # only pytest's closing line counts, not a test that prints "3 passed"
    code, _ = check.verdict("3 passed somewhere in the output\n1 failed in 2.00s\n", ALLOWED)
    assert code == 1


def test_allowed_skips_pass_and_are_listed() -> None:
    log = (
        "SKIPPED [1] tests/backends/test_contract.py:224: the file store has no credentials\n"
        "SKIPPED [1] tests/backends/test_contract.py:236: the file store has no server\n" + CLOSING
    )
    code, lines = check.verdict(log, ALLOWED)
    assert code == 0
    assert sum("allowed: tests/backends/test_contract.py" in line for line in lines) == 2


def test_a_skip_ci_does_not_allow_is_red_and_named() -> None:
    log = (
        "SKIPPED [1] tests/backends/test_file.py:252: root ignores directory permissions\n"
        + CLOSING
    )
    code, lines = check.verdict(log, ALLOWED)
    assert code == 1
    assert any(line.startswith("  NOT ALLOWED: tests/backends/test_file.py:252") for line in lines)


def test_tests_that_must_run_as_root_are_not_allowed_to_skip() -> None:
    # CI runs as root: the permission tests and the full-disk test must run there
    for reason in ("root ignores file permissions", "systemd-analyze is not installed"):
        assert not any(
            re.search(line.strip(), reason)
            for line in ALLOWED.splitlines()
            if line.strip() and not line.startswith("#")
        )


def test_the_script_exit_code_is_the_verdict(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("SKIPPED [1] tests/x.py:1: something else\n" + CLOSING, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / ".ci" / "check_run.py"),
            str(log),
            str(ROOT / ".ci/allowed-skips"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "NOT ALLOWED: tests/x.py:1 something else" in done.stdout
