"""tests/support/box.py and rootfs.py: a box that cannot be built says why, and CI
refuses that skip; a box leaves nothing behind, even when its test process dies."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import install
from tests.support.box import Box, BoxUnavailable, cgroup_parents, remove_orphans
from tests.support.net import free_port, wait_until
from tests.support.rootfs import rootfs, rootfs_or_skip, unavailable

ROOT = Path(__file__).resolve().parents[2]


def test_a_box_that_cannot_be_built_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The reason the box tests skip with: no root, no debootstrap, or here, no mirror."""
    unreachable = f"http://127.0.0.1:{free_port()}/debian"
    monkeypatch.setenv("ROTATOR_BOX_MIRROR", unreachable)
    monkeypatch.setattr(install, "CACHE", tmp_path)
    with pytest.raises(BoxUnavailable) as refused:
        rootfs(("systemd", "a-package-list-never-cached"))
    reason = unavailable()
    if reason is None:
        assert str(refused.value).startswith(
            f"debootstrap could not build the box's rootfs from {unreachable} (exit 1): "
        )
    else:
        assert str(refused.value) == reason
    assert list(tmp_path.iterdir()) == []  # nothing half-built is left to be taken for a rootfs


def test_ci_accepts_no_reason_the_box_skips_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI runs as root with debootstrap installed by .ci/run: a skipped box is a red run."""
    reasons = ["debootstrap could not build the box's rootfs from http://x/debian (exit 1): E"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reasons.append(str(unavailable()))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    reasons.append(str(unavailable()))
    spec = importlib.util.spec_from_file_location("check_run", ROOT / ".ci" / "check_run.py")
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    allowed = (ROOT / ".ci" / "allowed-skips").read_text(encoding="utf-8")
    for reason in reasons:
        log = f"SKIPPED [1] tests/deploy/test_systemd_box.py:1: {reason}\n1 passed in 1.00s\n"
        code, lines = check.verdict(log, allowed)
        assert code == 1, lines
    assert "debootstrap" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_a_stopped_box_leaves_nothing_behind() -> None:
    with Box(rootfs_or_skip()) as box:
        cgroups, workdir = list(box.cgroups), box.workdir
        assert cgroups and all(cgroup.is_dir() for cgroup in cgroups)
        # its mounts stay in its own namespace
        assert str(workdir) not in Path("/proc/self/mountinfo").read_text(encoding="utf-8")
        # A service that shrugs off the power-off's SIGTERM: stop() ends unshare by its
        # PID when systemd is not done in time, and the box goes with it.
        box.run("systemd-run", "--unit=stubborn", "-p", "KillSignal=SIGCONT", "sleep", "600")
        procs = [cgroup / "system.slice/stubborn.service/cgroup.procs" for cgroup in cgroups]
        pids = {int(pid) for path in procs if path.is_file() for pid in path.read_text().split()}
        assert pids
        started = time.monotonic()
        box.stop(timeout=3)
        assert time.monotonic() - started < 15
    assert not any(Path(f"/proc/{pid}").exists() for pid in [box.pid, *pids])
    assert not any(cgroup.exists() for cgroup in cgroups)
    assert not workdir.exists()


def test_a_box_dies_with_the_test_process_that_booted_it() -> None:
    cached = rootfs_or_skip()
    boot = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.support.box import Box\n"
        "box = Box(Path(sys.argv[1]))\n"
        "box.start()\n"
        "print(box.pid, box.workdir, flush=True)\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", boot, str(cached)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert owner.stdout is not None
        pid, workdir = owner.stdout.readline().split()
        assert Path(f"/proc/{pid}").exists()
    finally:
        owner.kill()  # SIGKILL: no stop(), no finally in the owner
        owner.wait(timeout=30)
    wait_until(
        lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="the orphaned box to die"
    )
    remove_orphans()  # what the next box does first
    assert not Path(workdir).exists()
    assert not [
        top for parent in cgroup_parents() for top in parent.glob(f"rotator-box-{owner.pid}-*")
    ]
