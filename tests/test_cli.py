"""The command line (rotator/cli.py): usage errors, exit codes, a fast ``--help``.

Mostly through ``main([...])`` in process; a few real subprocesses check what
only a process shows (the modules ``--help`` imports, the exit status).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.cli import main
from rotator.commands.terminal import printable
from tests.fakes.vendorhttp import Reply, Request, VendorServer, running
from tests.support import leakcheck
from tests.support.logcapture import keep_test_logging
from tests.support.proc import env_for, run_rotator

__all__ = ["keep_test_logging"]  # the autouse fixture, imported so pytest finds it here

pytestmark = pytest.mark.timeout(120)

CLIENT_SECRET = leakcheck.register("cli-test-client-secret-9f2c", "client secret")
ACCOUNTS = ("acme-fax", "idp-api")


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLI_TEST_SECRET", CLIENT_SECRET)


UNREACHABLE = "http://127.0.0.1:9/token"  # the discard port: nothing answers


def write_config(tmp_path: Path, token_url: str = UNREACHABLE, **store: Any) -> Path:
    """Two accounts (an OAuth2 client and a Fax.Plus app) over one file store."""
    config = {
        "stores": {
            "files": {"type": "file", "directory": str(tmp_path / "store"), **store},
        },
        "accounts": {
            "idp-api": {
                "provider": "oauth2",
                "grant": "client_credentials",
                "token_url": token_url,
                "client_id": "svc",
                "client_secret": "env:CLI_TEST_SECRET",
                "sinks": [{"store": "files", "path": "idp.json"}],
            },
            "acme-fax": {
                "provider": "faxplus",
                "client_id": "APIK-cli",
                "client_secret": "env:CLI_TEST_SECRET",
                "enhanced_security": False,
                "redirect_uri": "http://127.0.0.1:8765/callback",
                "sinks": [{"store": "files", "path": "fax.json"}],
            },
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_main(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None
) -> tuple[int, str, str]:
    """``main(argv)`` -> (exit code, stdout, stderr); argparse's exits become codes.

    The output is also written under the leak check's directory, so the suite's
    final scan covers in-process commands too.
    """
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stdin = saved
    out, err = capsys.readouterr()
    leakcheck.log_file("main-" + "-".join(argv[:2])).write_text(f"{out}\n--- stderr\n{err}")
    return code, out, err


# --- argparse's refusals: exit 2, the wrong thing named, the right usage shown -------------


@pytest.mark.parametrize(
    ("argv", "wrong"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["rotate"], "invalid choice: 'rotate'"),
        (["run", "extra"], "unrecognized arguments: extra"),
        (["check", "--log-format", "xml"], "argument --log-format: invalid choice: 'xml'"),
        (["status", "--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
        (["status", "--json=yes"], "ignored explicit argument 'yes'"),
        (["refresh"], "the following arguments are required: account"),
        (["refresh", "idp-api", "--wait", "soon"], "argument --wait: invalid float value"),
        (["import"], "the following arguments are required: account"),
        (["import", "idp-api", "--file"], "argument --file: expected one argument"),
        (["authorize"], "the following arguments are required: account"),
        (
            ["authorize", "acme-fax", "--code", "c", "--listen", "127.0.0.1:1"],
            "argument --listen: not allowed with argument --code",
        ),
        (["authorize", "acme-fax", "--timeout", "long"], "argument --timeout: invalid float"),
        (["faxmax-login-url", "a", "--remote-ip", "192.0.2.1"], "required: --user"),
        (["faxmax-login-url", "a", "--user", "u"], "required: --remote-ip"),
        (["probe"], "the following arguments are required: account"),
        (["probe", "a", "b"], "unrecognized arguments: b"),
        (["demo", "--lifetime", "short"], "argument --lifetime: invalid float value"),
    ],
)
def test_argparse_usage_errors_exit_2_naming_what_is_wrong_and_the_usage(
    argv: list[str], wrong: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert wrong in err
    # the right form, next to the refusal: the subcommand's usage where argparse knows it
    top_level = not argv or argv[0] == "rotate" or "unrecognized" in wrong
    assert f"usage: rotator {'[-h]' if top_level else argv[0] + ' [-h]'}" in err
    assert out == ""


# --- rotator's own usage checks: exit 2, "rotator: <what is wrong>; <what is right>" ------


@pytest.mark.parametrize(
    ("argv", "stdin", "wrong", "right"),
    [
        (["refresh", "idp-api", "--wait", "-1"], None, "--wait -1 is negative", "SECONDS >= 0"),
        (["authorize", "acme-fax", "--timeout", "0"], None, "--timeout 0", "SECONDS > 0"),
        (["demo", "--lifetime", "-5"], None, "--lifetime -5", "SECONDS > 0"),
        (
            ["import", "idp-api", "--authorized-at", "yesterday"],
            "tok",
            "'yesterday' is not an ISO 8601 time",
            "e.g. 2026-11-20T10:00:00Z",
        ),
        (["import", "idp-api", "--file", "/nonexistent/t"], None, "cannot read", "/nonexistent/t"),
        (["import", "idp-api"], "two words\n", "the refresh token must be", "one non-empty line"),
        (["import", "idp-api"], "", "the refresh token must be", "one non-empty line"),
        (
            ["authorize", "acme-fax", "--listen", "8765"],
            None,
            "--listen '8765' is not HOST:PORT",
            "e.g. 127.0.0.1:8765",
        ),
        (
            ["authorize", "acme-fax", "--code", "-"],
            "\n\n",
            "--code - read nothing from standard input",
            "pipe in the code",
        ),
    ],
)
def test_rotator_usage_errors_exit_2_naming_what_is_wrong_and_what_is_right(
    *,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str | None,
    wrong: str,
    right: str,
) -> None:
    config = write_config(tmp_path)
    extra = [] if argv[0] == "demo" else ["-c", str(config)]
    code, _, err = run_main([*argv, *extra], capsys, stdin=stdin)
    assert code == 2, err
    assert err.startswith("rotator: ") and wrong in err and right in err


@pytest.mark.parametrize(
    "argv",
    [
        ["refresh", "nope"],
        ["import", "nope"],
        ["authorize", "nope"],
        ["authorize", "nope", "--code", "-"],
        ["faxmax-login-url", "nope", "--user", "u", "--remote-ip", "192.0.2.1"],
        ["probe", "nope"],
    ],
)
def test_an_unknown_account_exits_2_naming_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    config = write_config(tmp_path)
    code, out, err = run_main([*argv, "-c", str(config)], capsys, stdin="a-token")
    assert code == 2
    assert f"no account 'nope' in {config} (accounts: acme-fax, idp-api)" in err
    assert out == ""


# --- configuration errors: exit 2, the key path first ---------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],
        ["check", "--online"],
        ["status"],
        ["refresh", "idp-api"],
        ["import", "idp-api"],
        ["probe", "idp-api"],
    ],
)
def test_config_errors_exit_2_with_the_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    config = write_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["accounts"]["idp-api"]["sinks"][0]["store"] = "fils"
    config.write_text(yaml.safe_dump(raw))
    code, out, err = run_main([*argv, "-c", str(config)], capsys, stdin="a-token")
    assert code == 2
    assert err.startswith("rotator: config: accounts.idp-api.sinks[0].store")
    assert "'fils'" in err and "files" in err  # the wrong name and the defined one
    assert out == ""


def test_a_missing_config_file_exits_2_saying_how_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("ROTATOR_CONFIG", str(missing))
    for argv in (["check"], ["status"], ["refresh", "idp-api"]):
        code, _, err = run_main(argv, capsys)
        assert code == 2
        assert f"{missing} does not exist (give -c FILE or set $ROTATOR_CONFIG)" in err


# --- success and runtime failure -------------------------------------------------------------


def test_check_and_status_succeed_on_a_good_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    code, out, _ = run_main(["check", "-c", str(config)], capsys)
    assert code == 0 and "configuration OK: 2 accounts, 1 stores" in out
    code, out, _ = run_main(["status", "-c", str(config)], capsys)
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["ACCOUNT", "PROVIDER", "STATE"]
    assert {line.split()[0] for line in out.splitlines()[1:]} == set(ACCOUNTS)


def test_import_seeds_the_token_and_never_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = leakcheck.register("cli-imported-refresh-token-4411", "refresh token")
    config = write_config(tmp_path)
    code, out, err = run_main(["import", "idp-api", "-c", str(config)], capsys, stdin=token + "\n")
    assert code == 0, err
    assert "refresh token imported into files:state/idp-api" in out
    assert token not in out + err
    assert token in (tmp_path / "store" / "state" / "idp-api").read_text()


def test_a_runtime_failure_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the vendor cannot be reached: the rotation fails, and says so
    config = write_config(tmp_path)
    code, _, err = run_main(["refresh", "idp-api", "-c", str(config)], capsys)
    assert code == 1
    assert "idp-api: transient_error: connection_error" in err
    assert CLIENT_SECRET not in err
    # the state store cannot be read: status prints what it can and exits 1
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    config = write_config(tmp_path, directory=str(blocker / "sub"))
    code, out, err = run_main(["status", "-c", str(config)], capsys)
    assert code == 1
    assert "error: idp-api: files: cannot" in err and "Not a directory" in err
    assert out.startswith("ACCOUNT")


# --- text from outside reaches the terminal escaped ------------------------------------------

TERMINAL_TRICKS = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202e\r"


class HostileVendor(VendorServer):
    """A token endpoint whose error description is full of terminal control sequences."""

    def route(self, request: Request) -> Reply:
        return Reply(400, {"error": "invalid_scope", "error_description": TERMINAL_TRICKS})


def test_error_messages_reach_the_terminal_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running(HostileVendor()) as vendor:
        config = write_config(tmp_path, token_url=vendor.base_url + "/token")
        code, out, err = run_main(["refresh", "idp-api", "-c", str(config)], capsys)
    assert code == 1 and out == ""
    assert vendor.requests, "the vendor was asked"
    assert all(line == printable(line) for line in err.split("\n")), err
    assert "\\x1b]0;owned\\x07" in err
    # a runtime error raised through main() (the config file name is the operator's, but
    # the same path prints every RotatorError, vendor text included)
    odd = tmp_path / "rotator\x1b[2J.yaml"
    code, _, err = run_main(["check", "-c", str(odd)], capsys)
    assert code == 2 and "rotator\\x1b[2J.yaml does not exist" in err
    assert "\x1b" not in err


# --- real processes ----------------------------------------------------------------------------

HEAVY = (
    "pydantic",
    "httpx",
    "apscheduler",
    "hvac",
    "boto3",
    "botocore",
    "yaml",
    "structlog",
    "cryptography",
    "rotator.config",
    "rotator.rotation",
    "rotator.providers",
    "rotator.backends",
    "rotator.service",
)
COMMANDS = ("run", "check", "status", "refresh", "import", "authorize", "faxmax-login-url", "demo")


def test_help_imports_nothing_heavy() -> None:
    """``rotator --help`` and every ``rotator COMMAND --help`` answer without the heavy
    libraries: a fresh interpreter, then a look at sys.modules."""
    script = f"""
import sys
from rotator.cli import main
for argv in [["--help"], *[[c, "--help"] for c in {list(COMMANDS)!r}]]:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))
print("HEAVY:", ",".join(heavy))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY: \n" in proc.stdout
    for command in COMMANDS:
        assert f"usage: rotator {command} [-h]" in proc.stdout


def test_help_documents_code_from_stdin_and_the_listen_warning() -> None:
    proc = run_rotator(["authorize", "--help"])
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "'-' reads it from standard input" in text
    assert "non-loopback address" in text


def test_exit_codes_of_real_processes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = {"CLI_TEST_SECRET": CLIENT_SECRET}
    assert run_rotator(["--version"]).returncode == 0
    bad = run_rotator(["refresh"])
    assert bad.returncode == 2 and "required: account" in bad.stderr
    unknown = run_rotator(["refresh", "nope", "-c", str(config)], env=env)
    assert unknown.returncode == 2 and "(accounts: acme-fax, idp-api)" in unknown.stderr
    failed = run_rotator(["refresh", "idp-api", "-c", str(config)], env=env)
    assert failed.returncode == 1 and "connection_error" in failed.stderr
    ok = run_rotator(["status", "--json", "-c", str(config)], env=env)
    assert ok.returncode == 0 and '"accounts"' in ok.stdout
