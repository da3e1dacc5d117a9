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


def wheelhouse() -> Path:
    """A directory with rotator's wheel and its dependencies' wheels, built once per source tree."""
    target = CACHE / f"wheelhouse-{source_hash()}"
    if (target / ".complete").exists():
        return target
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    built = subprocess.run(
        wheel_argv(sys.executable, str(partial), str(ROOT)),
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if built.returncode != 0:
        raise RuntimeError(f"pip wheel failed ({built.returncode}):\n{built.stderr[-4000:]}")
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def install(prefix: Path, python: str = "python3") -> Path:
    """A new virtualenv at `prefix` with rotator, by docker/install.sh; returns its bin/rotator."""
    subprocess.run(install_argv(str(prefix), str(wheelhouse()), python), check=True)
    return prefix / "bin" / "rotator"
