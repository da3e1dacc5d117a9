"""rotator installed the way the image installs it: `docker/install.sh` from a wheelhouse.

The deployment tests (the systemd box, the pod's constraints) run the same
install script as the Dockerfile, so what they prove is what the image does.
The wheelhouse (rotator's wheel and every dependency's) is built once per
source tree and cached under ~/.cache/rotator-tests, keyed on a hash of
pyproject.toml and the package sources; building it needs the package registry,
which CI reaches.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "docker" / "install.sh"
CACHE = Path(os.environ.get("ROTATOR_TEST_CACHE", Path.home() / ".cache" / "rotator-tests"))


def source_hash() -> str:
    """A digest of everything that goes into the wheel (the Dockerfile's build context)."""
    digest = hashlib.sha256()
    files = [ROOT / "pyproject.toml", *sorted((ROOT / "rotator").rglob("*.py"))]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def wheel_argv(python: str, wheel_dir: str, source: str) -> list[str]:
    """`pip wheel` exactly as the Dockerfile's build stage runs it (test_dockerfile.py checks)."""
    return [python, "-m", "pip", "wheel", "--wheel-dir", wheel_dir, source]


def install_argv(prefix: str, wheel_dir: str, python: str) -> list[str]:
    """docker/install.sh as the Dockerfile's build stage runs it (test_dockerfile.py checks)."""
    return ["sh", str(INSTALL_SCRIPT), prefix, wheel_dir, python]


def python_version(python: str) -> str:
    """The full version of an interpreter on this host ("3.11.2")."""
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def wheelhouse(python: str | None = None) -> Path:
    """rotator's wheel and its dependencies' wheels, resolved for ``python``, built once.

    Dependencies carry environment markers down to the patch version (redis needs
    ``async-timeout`` below Python 3.11.3): a wheelhouse resolved by the suite's
    3.11.7 lacked a wheel Debian's 3.11.2 needs. So the wheels are resolved by the
    interpreter that installs them (its own virtualenv's pip, as the Dockerfile's
    build stage does with the image's Python), and the cache is keyed on its version.
    """
    python = python or sys.executable
    version = python_version(python)
    target = CACHE / f"wheelhouse-{source_hash()}-py{version}"
    if (target / ".complete").exists():
        return target
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    with tempfile.TemporaryDirectory(prefix="rotator-wheel-") as builder:
        if Path(python).resolve() != Path(sys.executable).resolve():
            made = subprocess.run(
                [python, "-m", "venv", builder], check=False, capture_output=True, text=True
            )
            if made.returncode != 0:
                raise RuntimeError(f"{python} -m venv failed:\n{made.stderr[-4000:]}")
            python = str(Path(builder) / "bin" / "python")
        built = subprocess.run(
            wheel_argv(python, str(partial), str(ROOT)),
            check=False,
            capture_output=True,
            text=True,
            env=env,
        )
    if built.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"pip wheel failed ({built.returncode}):\n{built.stderr[-4000:]}")
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def install(prefix: Path, python: str = "python3") -> Path:
    """A new virtualenv at `prefix` with rotator, by docker/install.sh; returns its bin/rotator."""
    subprocess.run(install_argv(str(prefix), str(wheelhouse(python)), python), check=True)
    return prefix / "bin" / "rotator"
