"""The shell snippets of the docs that can run here, run as printed, against the sandbox.

A snippet is marked ``<!-- test: shell/NAME -->`` and run by ``bash -euo
pipefail`` with placeholders swapped for the test's (tests/support/docs.py:
addresses, paths, credentials), in a fresh directory, with a ``rotator`` on
``PATH`` that is this checkout's (``python -m rotator``). What cannot run here
(``sudo``, systemd, kubectl, helm) is run by tests/deploy/ in a box or a pod.

- ``shell/quickstart``: ``make demo`` runs the repository's Makefile, with its
  virtualenv already in place (a ``.venv`` whose ``rotator`` is this checkout's:
  the step that creates it is pip's, not ours). The demo comes up on its
  sandbox, the token files the Quickstart lists (the block ``demo/tokens``)
  land, the alert it shows is printed (``demo/alert``), the status command the
  Quickstart gives lists every account, and
  Ctrl-C (SIGINT to the foreground process group) stops the daemon cleanly.
  ``make test`` is the whole suite: that the target exists is checked, not run.
- ``shell/webhook-secret``: the one-liner that makes a webhook secret writes
  one that rotator's webhook notifier takes.
- ``shell/console-status``: the ``curl`` of the console's status page, against
  ``rotator run`` on the console configuration the page shows (``console/config``:
  its listener, public URL and signing key swapped for the test's, an account
  on the OAuth2 emulator added): with the viewer token it answers the page with
  the account on it; with another token it does not.

The command synopses (``commands/synopsis``, ``commands/vendor-synopsis``) are
held to the parser: every command exists and is listed, every option and
``ACCOUNT`` shown is one the command takes, and between them they show every
option (``--help``, ``--log-format`` and ``--log-level``, which every command
takes, are said once in prose).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.cli import build_parser
from rotator.notify.webhook import signing_key
from tests.fakes.oauth2 import emulator
from tests.support import docs, leakcheck
from tests.support.net import free_port, wait_until
from tests.support.proc import ROOT, DaemonProcess, env_for

pytestmark = pytest.mark.timeout(120)

ROTATOR_SHIM = """\
#!/bin/bash
# this checkout's rotator, as a virtualenv's bin/rotator would be; records how it ended
{python} -m rotator "$@"
code=$?
echo "$code" > {exited}
exit "$code"
"""


def shim_bin(where: Path, exited: Path) -> Path:
    """A directory with ``rotator`` (and ``python``) standing in for a virtualenv's bin/."""
    where.mkdir(parents=True, exist_ok=True)
    rotator = where / "rotator"
    rotator.write_text(
        ROTATOR_SHIM.format(python=shlex.quote(sys.executable), exited=shlex.quote(str(exited)))
    )
    rotator.chmod(0o755)
    (where / "python").symlink_to(sys.executable)
    return where


def run_snippet(
    text: str,
    cwd: Path,
    *,
    path: Path,
    replacements: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The snippet under ``bash -euo pipefail``, placeholders swapped, ``path`` first on PATH."""
    script = docs.substitute(text, replacements) if replacements else text
    env = env_for({**(env or {}), "PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}"})
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    leakcheck.log_file("shell").write_text(f"{script}\n{result.stdout}\n{result.stderr}")
    return result


def register_demo_secrets(directory: Path) -> None:
    """The demo makes its secrets and tokens itself: the leak check learns them here."""
    for name in ("client-secret", "fax-secret"):
        if (directory / name).exists():
            leakcheck.register((directory / name).read_text().strip(), "demo client secret")
    for path in [*directory.glob("tokens/*"), *directory.glob("state/**/*")]:
        if path.is_file():
            for value in re.findall(r"(?:access|refresh)-[A-Za-z0-9_-]{20,}", path.read_text()):
                leakcheck.register(value, "demo token")


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A checkout-like directory with its .venv in place: ``make demo`` goes to the demo."""
    work = tmp_path / "checkout"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        (work / name).symlink_to(ROOT / name)
    exited = tmp_path / "rotator-exit-code"
    shim_bin(work / ".venv" / "bin", exited)
    # make rebuilds .venv/.installed when pyproject.toml is newer: it is not
    (work / ".venv" / ".installed").touch()
    yield work, exited
    register_demo_secrets(work / "rotator-demo")


def test_the_quickstart_runs_the_demo_as_printed(quickstart: tuple[Path, Path]) -> None:
    work, exited = quickstart
    snippet = docs.block("shell/quickstart")
    commands = [line.split("#")[0].strip() for line in snippet.text.splitlines()]
    assert commands == ["make demo", "make test"], f"{snippet.where}: the Quickstart changed"
    assert {"demo", "test"} <= makefile_targets()

    log = leakcheck.log_file("quickstart")
    with open(log, "wb") as out:
        # a terminal's foreground job: its own process group, so Ctrl-C reaches all of it
        make = subprocess.Popen(
            ["bash", "-c", "make demo"],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env_for(),
            start_new_session=True,
        )

        def running(condition: Callable[[], bool]) -> Callable[[], bool]:
            def check() -> bool:
                if make.poll() is not None:
                    out.flush()
                    raise AssertionError(f"make demo ended early:\n{log.read_text()[-3000:]}")
                return condition()

            return check

        try:
            demo = work / "rotator-demo"
            listed = [line.split()[0] for line in docs.block("demo/tokens").text.splitlines()]
            assert listed, "the Quickstart lists the token files"
            wait_until(
                running(lambda: all((demo / "tokens" / name).exists() for name in listed)),
                timeout=60,
                what=f"the Quickstart's token files {listed}",
            )
            # the alert the Quickstart shows, with its link: "..." and PORT stand for text
            # that varies, and so do its numbers (the minutes left)
            alert = docs.block("demo/alert")
            for line in alert.text.splitlines():
                pattern = re.sub(r"\d+", r"\\d+", re.escape(line.strip()))
                pattern = pattern.replace(re.escape("..."), ".*").replace("PORT", r"\d+")
                wait_until(
                    running(lambda p=pattern: re.search(p, log.read_text()) is not None),
                    timeout=30,
                    what=f"{alert.where}: {line.strip()!r} in the demo's output",
                )
            status = run_snippet(quickstart_status_command(), work, path=work / ".venv" / "bin")
            assert status.returncode == 0, status.stderr[-2000:]
            for account in ("demo-refresh", "demo-client", "demo-fax"):
                assert account in status.stdout, status.stdout
        finally:
            with contextlib.suppress(ProcessLookupError):  # the job may be gone already
                os.killpg(make.pid, signal.SIGINT)  # Ctrl-C, to the whole foreground job
            try:
                make.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait(timeout=10)
                raise
    # the daemon, not make, says whether Ctrl-C stopped it cleanly
    wait_until(exited.exists, timeout=15, what="rotator demo's exit after Ctrl-C")
    assert exited.read_text().strip() == "0", log.read_text()[-3000:]


def quickstart_status_command() -> str:
    """The Quickstart's ``rotator status`` command, as printed (a block, or inline code)."""
    found = docs.blocks()
    if "shell/quickstart-status" in found:
        return found["shell/quickstart-status"].text
    _, text = docs.section("demo")
    commands = re.findall(r"`([^`]*rotator status -c [^`]*)`", text)
    assert len(commands) == 1, "the Quickstart says how to see the accounts' status"
    return commands[0].replace(".venv/bin/rotator", "rotator", 1) + "\n"


def test_the_webhook_secret_one_liner_makes_a_secret_rotator_takes(tmp_path: Path) -> None:
    snippet = docs.block("shell/webhook-secret")
    target = tmp_path / "hook.secret"
    done = run_snippet(
        snippet.text,
        tmp_path,
        path=tmp_path,
        replacements={"/etc/rotator/hook.secret": str(target)},
    )
    assert done.returncode == 0, done.stderr
    secret = leakcheck.register(target.read_text().strip(), "webhook secret")
    assert secret.startswith("whsec_")
    assert len(signing_key(secret, "the docs' secret")) == 32


def test_the_console_status_page_answers_the_documented_curl(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = tmp_path / "console.key"
    key.write_text(secrets.token_urlsafe(32) + "\n")
    key.chmod(0o600)
    console: dict[str, Any] = yaml.safe_load(
        docs.substitute(
            docs.block("console/config").text,
            {
                "0.0.0.0:9464": f"127.0.0.1:{port}",
                "https://rotator.example.com": url,
                "/etc/rotator/console.key": str(key),
            },
        )
    )
    viewer = leakcheck.register("docs-viewer-" + secrets.token_hex(8), "console viewer token")
    client_secret = leakcheck.register("docs-console-s3cret-" + secrets.token_hex(6), "secret")
    (tmp_path / "client-secret").write_text(client_secret + "\n")
    (tmp_path / "client-secret").chmod(0o600)
    with emulator(clients={"svc": client_secret}) as vendor:
        vendor.on_issue = leakcheck.register
        config = {
            **console,
            "stores": {"files": {"type": "file", "directory": str(tmp_path / "files")}},
            "accounts": {
                "idp-console": {
                    "provider": "oauth2",
                    "token_url": vendor.url,
                    "grant": "client_credentials",
                    "client_id": "svc",
                    "client_secret": f"file:{tmp_path / 'client-secret'}",
                    "sinks": [{"store": "files", "path": "idp-console.json"}],
                }
            },
        }
        config["server"]["spool_dir"] = str(tmp_path / "spool")
        (tmp_path / "rotator.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        token_env = {"ROTATOR_CONSOLE_TOKEN": viewer}
        with DaemonProcess(tmp_path / "rotator.yaml", env=token_env) as daemon:
            wait_until(
                (tmp_path / "files" / "idp-console.json").exists,
                timeout=30,
                what="the daemon's first rotation",
            )
            snippet = docs.block("shell/console-status").text
            here = {"https://rotator.example.com/": f"{url}/"}
            page = run_snippet(snippet, tmp_path, path=tmp_path, replacements=here, env=token_env)
            assert page.returncode == 0, page.stderr
            assert "idp-console" in page.stdout and "OK" in page.stdout, page.stdout[-2000:]
            wrong = {"ROTATOR_CONSOLE_TOKEN": "not-the-viewer-token"}
            refused = run_snippet(snippet, tmp_path, path=tmp_path, replacements=here, env=wrong)
            assert "idp-console" not in refused.stdout
            assert daemon.stop() == 0


EVERY_COMMAND_TAKES = {"-h", "--help", "--log-format", "--log-level", "--config"}


def parser_commands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def synopsis(name: str) -> dict[str, str]:
    """``rotator COMMAND ARGS`` lines of a synopsis block: {command: its arguments}."""
    lines = re.findall(r"^rotator (\S+)\s+(.*)$", docs.block(name).text, re.M)
    return {command: arguments for command, arguments in lines}


def test_the_command_synopses_are_the_parsers() -> None:
    commands = parser_commands()
    main = synopsis("commands/synopsis")
    assert sorted(main) == sorted(commands), "every command, and only those, is in the synopsis"
    shown: dict[str, set[str]] = {name: set() for name in commands}
    for block in ("commands/synopsis", "commands/vendor-synopsis"):
        for command, arguments in synopsis(block).items():
            parser = commands[command]
            takes = {o for action in parser._actions for o in action.option_strings}
            options = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", arguments))
            assert options <= takes, f"{block}: rotator {command} takes no {options - takes}"
            positionals = {a.dest for a in parser._actions if not a.option_strings}
            assert ("ACCOUNT" in arguments) == ("account" in positionals), f"{block}: {command}"
            shown[command] |= options
    for command, parser in commands.items():
        takes = {o for action in parser._actions for o in action.option_strings if "--" in o}
        missing = takes - EVERY_COMMAND_TAKES - shown[command]
        assert not missing, f"rotator {command} takes {missing}: show it in a synopsis"
