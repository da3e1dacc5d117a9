"""The box's root file system: Debian minbase by debootstrap, built once and cached.

Building takes about a minute and needs a Debian mirror, so the result is kept
under ~/.cache/rotator-tests keyed on the suite and the package list, and
built into a temporary sibling that is renamed only when complete. What keeps
a box from being built here (not root, no tools, no mirror) is a
:class:`BoxUnavailable` whose message the tests skip with.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import install

__all__ = [
    "PACKAGES",
    "SUITE",
    "BoxUnavailable",
    "mirror",
    "rootfs",
    "rootfs_or_skip",
    "unavailable",
]

SUITE = "bookworm"
#: minbase has no procps, so no /bin/kill: the unit must not need it (see its ExecReload=).
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv")
DEFAULT_MIRROR = "http://deb.debian.org/debian"

_refused: dict[tuple[tuple[str, ...], str, Path], str] = {}


class BoxUnavailable(Exception):
    """A step the box needs cannot run on this machine; the message says which and why."""


def mirror() -> str:
    """The Debian mirror apt already uses here ($ROTATOR_BOX_MIRROR wins)."""
    chosen = os.environ.get("ROTATOR_BOX_MIRROR")
    if chosen:
        return chosen
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8")
            found = re.search(r"(?m)^(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", text)
            if found:
                return found.group(1)
    return DEFAULT_MIRROR


def unavailable() -> str | None:
    """Why no box can be booted here, or None."""
    if sys.platform != "linux":
        return "the systemd box needs Linux namespaces"
    if os.geteuid() != 0:
        return "the systemd box needs root (namespaces, mounts, debootstrap)"
    for tool in ("unshare", "nsenter", "setpriv", "debootstrap"):
        if shutil.which(tool) is None:
            return f"the systemd box needs {tool} (apt-get install debootstrap util-linux)"
    return None


def rootfs(packages: tuple[str, ...] = PACKAGES) -> Path:
    """A minbase Debian rootfs with `packages`, built once per package list and cached.

    Built into a temporary sibling and renamed when complete, so an interrupted
    build never leaves a half rootfs where a complete one is expected.
    """
    reason = unavailable() or _refused.get((packages, mirror(), install.CACHE))
    if reason:
        raise BoxUnavailable(reason)
    key = hashlib.sha256(" ".join([SUITE, "minbase", *sorted(packages)]).encode()).hexdigest()
    target = install.CACHE / f"rootfs-{SUITE}-{key[:12]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(target.name + ".partial-*"):
        if time.time() - stale.stat().st_mtime > 86400:  # a build killed a day ago
            shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    partial.chmod(0o755)  # it becomes the box's "/"; mkdtemp made it 0700
    source = mirror()
    log = partial.with_name(partial.name + ".log")
    try:
        with log.open("w", encoding="utf-8") as out:
            built = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=" + ",".join(packages),
                    SUITE,
                    str(partial),
                    source,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=900,
                check=False,
            )
        if built.returncode != 0:
            lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            reason = (
                f"debootstrap could not build the box's rootfs from {source} "
                f"(exit {built.returncode}): {lines[-1] if lines else 'no output'}"
            )
            # once per session: every test that needs the box skips with the same reason
            _refused[(packages, source, install.CACHE)] = reason
            raise BoxUnavailable(reason)
        try:
            partial.rename(target)
        except OSError:  # another session finished first: use its rootfs
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        log.unlink(missing_ok=True)
    return target


def rootfs_or_skip() -> Path:
    """:func:`rootfs`, or the calling test skips with the reason it cannot be built."""
    try:
        return rootfs()
    except BoxUnavailable as exc:
        pytest.skip(str(exc))
