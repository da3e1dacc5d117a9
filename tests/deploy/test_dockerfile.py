"""The Dockerfile, checked without a container engine (none runs here).

What can be checked offline: the build context that .dockerignore lets through
holds everything the image's build needs and the package runs from it alone;
the build stage installs with docker/install.sh from a `pip wheel` wheelhouse,
exactly as the deployment tests install into the systemd box
(tests/support/install.py), so what those tests prove is what the image does;
the image's user, entry point, command and state directory agree with the Helm
chart that runs it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from tests.support import install, leakcheck

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CHART_VALUES = ROOT / "helm" / "rotator" / "values.yaml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined; comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    out = []
    for line in joined:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def context_names() -> list[str]:
    """The top-level names .dockerignore lets into the build context."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the context is an allow list: exclude everything first"
    return [rule[1:] for rule in rules if rule.startswith("!")]


def test_copied_sources_are_in_the_build_context() -> None:
    allowed = set(context_names())
    copied: list[str] = []
    for word, args in instructions():
        if word == "COPY" and "--from=" not in args:
            *sources, _dest = shlex.split(args)
            copied += sources
    assert copied
    for source in copied:
        assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
    # pyproject's readme must travel with it, or the metadata build fails.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["readme"] in copied
    assert project["scripts"]["rotator"] == "rotator.cli:main"


def test_the_package_runs_from_the_build_context_alone(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for name in context_names():
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, context / name)
    config = tmp_path / "rotator.yaml"
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    config.write_text(yaml.safe_dump(values["config"]), encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "NOTIFY_SOCKET", "WATCHDOG_USEC")
    }
    env["PYTHONPATH"] = str(context)
    log = leakcheck.log_file("docker-context")
    with log.open("w", encoding="utf-8") as out:
        for args in (["--help"], ["check", "-c", str(config)]):
            result = subprocess.run(
                [sys.executable, "-m", "rotator", *args],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, log.read_text(encoding="utf-8")
    assert "configuration OK" in log.read_text(encoding="utf-8")
    # Imported from the context copy, not from the repository.
    where = subprocess.run(
        [sys.executable, "-c", "import rotator.cli; print(rotator.cli.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(context)


def stage(name: str) -> list[tuple[str, str]]:
    steps = instructions()
    start = next(i for i, (w, a) in enumerate(steps) if w == "FROM" and a.endswith(f" AS {name}"))
    end = next((i for i in range(start + 1, len(steps)) if steps[i][0] == "FROM"), len(steps))
    return steps[start:end]


def test_the_build_installs_with_the_script_the_tests_run() -> None:
    build = stage("build")
    copied = [args for word, args in build if word == "COPY"]
    assert "docker/install.sh ./docker/" in copied
    [run] = [shlex.split(args) for word, args in build if word == "RUN"]
    # One RUN: the wheelhouse, then the script; nothing else touches /opt/rotator. The
    # tests build their wheelhouse and install with these same commands.
    wheel, script = " ".join(run).split(" && ")
    assert shlex.split(wheel) == install.wheel_argv("python", "/wheels", ".")
    sh, path, *args = shlex.split(script)
    assert [sh, str(ROOT / path), *args] == install.install_argv(
        "/opt/rotator", "/wheels", "python"
    )
    final = dict(final_stage())
    assert final["COPY"] == "--from=build /opt/rotator /opt/rotator"


def test_image_runs_unprivileged_as_the_chart_expects() -> None:
    steps = dict(final_stage())
    user = steps["USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric UID lets Kubernetes check runAsNonRoot"
    assert gid.isdigit() and int(gid) > 0
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)
    assert yaml.safe_load(steps["ENTRYPOINT"]) == ["rotator"]
    assert yaml.safe_load(steps["CMD"]) == ["run", "-c", "/etc/rotator/rotator.yaml"]
    assert yaml.safe_load(steps["EXPOSE"]) == int(
        values["config"]["server"]["listen"].rpartition(":")[2]
    )
    env = " ".join(args for word, args in final_stage() if word == "ENV")
    assert "STATE_DIRECTORY=/var/lib/rotator" in env
    assert "PATH=/opt/rotator/bin:" in env


def test_both_stages_use_the_same_slim_python() -> None:
    steps = instructions()
    base = next(args for word, args in steps if word == "ARG" and args.startswith("PYTHON_IMAGE="))
    image = base.partition("=")[2]
    assert image.startswith("python:3.") and "-slim" in image
    minor = int(image.split(":")[1].split(".")[1].split("-")[0])
    assert minor >= 11  # requires-python
    froms = [args for word, args in steps if word == "FROM"]
    assert [f.split()[0] for f in froms] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
