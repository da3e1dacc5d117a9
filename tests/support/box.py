"""A real systemd, booted in namespaces, for the deployment tests.

These machines have no systemd as PID 1, and a `chroot` is not enough: every
`Private*=`/`Protect*=` setting of the unit then fails with 226/NAMESPACE. So a
Debian rootfs (tests/support/rootfs.py: debootstrap, cached) is booted as its own
PID namespace with its own mounts: `unshare` runs a shell that lays the box's file
system out (an overlay over the cached rootfs, so the cache is never written;
its own /dev, /run, /tmp), `pivot_root`s into it, makes `/` shared (without
that, `LoadCredential=` yields an empty directory: systemd mounts credentials
in a child namespace and they never propagate) and execs systemd. The network
namespace is shared, so a unit in the box reaches an emulator on the host's
loopback and the host reaches the unit's listener.

The box is driven through `nsenter` (:meth:`Box.run`, :meth:`Box.systemctl`)
and its files are reached from the host through `/proc/PID/root`
(:meth:`Box.path`). It lives in cgroups of its own, made under this process's
cgroups, so its systemd never writes into the host's cgroup roots and two boxes
never meet; :meth:`Box.stop` powers it off, ends `unshare` by its PID, checks
that no process is left in those cgroups and removes them. Its mounts live and
die with its mount namespace.

A step that cannot run here (not root, no debootstrap, no mirror) raises
:class:`BoxUnavailable`, whose message is the reason the tests skip with.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from tests.support import install
from tests.support.net import wait_until
from tests.support.rootfs import PACKAGES, BoxUnavailable, mirror, rootfs, unavailable

__all__ = [
    "PACKAGES",
    "Box",
    "BoxUnavailable",
    "cgroup_parents",
    "mirror",
    "remove_orphans",
    "rootfs",
    "unavailable",
]

#: what a command in the box sees: nothing of the test process's environment
BOX_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "SYSTEMD_PAGER=",
    "SYSTEMD_COLORS=0",
)

# Runs as PID 1 of the new PID namespace, in a new mount namespace with private
# propagation: nothing it mounts is seen by the host, and all of it goes away
# with the namespace. $1 the cached rootfs (read only), $2 an empty directory,
# then the cgroup directories to join.
BOOT = r"""
set -eu
lower=$1 scratch=$2
shift 2
for cgroup in "$@"; do echo $$ > "$cgroup/cgroup.procs"; done
mount -t tmpfs -o mode=0755 box-scratch "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
new=$scratch/root
if ! mount -t overlay -o "lowerdir=$lower,upperdir=$scratch/upper,workdir=$scratch/work" \
    box-root "$new" 2>/dev/null; then
  echo "box: no overlayfs here, copying the rootfs" >&2
  cp -a --reflink=auto "$lower/." "$new/"
  mount --bind "$new" "$new"
fi
mount -t proc proc "$new/proc"
mount --rbind /sys "$new/sys"
mount -t tmpfs -o mode=0755,nosuid box-dev "$new/dev"
for name in null zero full random urandom tty; do
  touch "$new/dev/$name"
  mount --bind "/dev/$name" "$new/dev/$name"
done
mkdir "$new/dev/shm" "$new/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev box-shm "$new/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$new/dev/pts"
ln -s pts/ptmx "$new/dev/ptmx"
mount -t tmpfs -o mode=0755,nosuid,nodev box-run "$new/run"
mount -t tmpfs -o mode=1777,nosuid,nodev box-tmp "$new/tmp"
mkdir "$new/.oldroot"
cd "$new"
pivot_root . .oldroot
exec /bin/sh -c 'umount -l /.oldroot && rmdir /.oldroot && mount --make-rshared / &&
  exec env -i container=other /lib/systemd/systemd --system'
"""


def cgroup_parents() -> list[Path]:
    """This process's directory in every cgroup hierarchy the box can have a child of.

    cpuset is left out: a v1 cpuset child takes no process before its cpus and
    mems are set, and systemd does not use it there.
    """
    mounts: list[tuple[set[str], Path, str]] = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _source, options) = left.split(), right.split()[:3]
        if fstype == "cgroup2":
            mounts.append(({""}, Path(fields[4]), fields[3]))
        elif fstype == "cgroup":
            mounts.append((set(options.split(",")), Path(fields[4]), fields[3]))
    parents = []
    for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
        _, controllers, path = line.split(":", 2)
        wanted = set(controllers.split(",")) if controllers else {""}
        if "cpuset" in wanted:
            continue
        for mounted, mountpoint, root in mounts:
            if wanted <= mounted and path.startswith(root):
                parents.append(mountpoint / os.path.relpath(path, root))
                break
    return parents


def _remove_empty(top: Path) -> bool:
    """Remove the cgroup `top` and its children, deepest first; False while one is busy."""
    if not top.exists():
        return True
    dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for directory in [*dirs, top]:
        with contextlib.suppress(OSError):  # busy while a process is still in it
            directory.rmdir()
    return not top.exists()


def remove_orphans() -> None:
    """What boxes left whose test process died without stopping them: the box itself died
    with that process (see Box.start), its empty cgroups and its work directory did not."""
    for parent in cgroup_parents():
        for top in parent.glob("rotator-box-*"):
            if _orphaned(top.name):
                _remove_empty(top)
    for workdir in Path(tempfile.gettempdir()).glob("rotator-box-*"):
        if _orphaned(workdir.name):
            shutil.rmtree(workdir, ignore_errors=True)


def _orphaned(name: str) -> bool:
    owner = name.split("-")[2]  # rotator-box-PID-...
    return owner.isdigit() and not Path(f"/proc/{owner}").exists()


class Box:
    """systemd from `rootfs` booted in namespaces; `with Box(rootfs) as box:`."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self.name = f"rotator-box-{os.getpid()}-{secrets.token_hex(3)}"
        self.workdir = Path(tempfile.mkdtemp(prefix=self.name + "-"))
        self.console = self.workdir / "console.log"
        self.cgroups: list[Path] = []
        self._unshare: subprocess.Popen[bytes] | None = None
        self.pid = 0  # systemd's PID on the host

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Box:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 90) -> None:
        """Boot, and return once `systemctl is-system-running` says running or degraded."""
        remove_orphans()
        for parent in cgroup_parents():
            with contextlib.suppress(OSError):  # a hierarchy we may not write: not joined
                (parent / self.name).mkdir()
                self.cgroups.append(parent / self.name)
        scratch = self.workdir / "scratch"
        scratch.mkdir()
        with self.console.open("wb") as console:
            self._unshare = subprocess.Popen(
                [
                    # Should this process die without stop(), unshare dies with it, and
                    # --kill-child takes the box along: no box outlives its test session.
                    *("setpriv", "--pdeathsig", "KILL"),
                    "unshare",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    BOOT,
                    "boot",
                    str(self.rootfs),
                    str(scratch),
                    *map(str, self.cgroups),
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = wait_until(self._systemd_pid, timeout=timeout, what="systemd to exec in the box")
        state = wait_until(self._booted, timeout=timeout, what="the box to finish booting")
        if state not in ("running", "degraded"):
            raise AssertionError(f"the box came up {state}")

    def _systemd_pid(self) -> int:
        unshare = self._unshare
        assert unshare is not None
        if unshare.poll() is not None:
            raise AssertionError(
                f"the box did not boot (exit {unshare.returncode}):\n{self.console_text()}"
            )
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text()
            for pid in children.split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return 0

    def _booted(self) -> str:
        state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
        return state if state not in ("", "initializing", "starting", "offline") else ""

    def stop(self, timeout: float = 30) -> None:
        """Power off (SIGRTMIN+4 to systemd), end `unshare` by its PID, remove the cgroups.

        Fails when a process is left in the box's cgroups: nothing may outlive it.
        """
        unshare, self._unshare = self._unshare, None
        if unshare is not None:
            if self.pid and unshare.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGRTMIN + 4)
            try:
                unshare.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # --kill-child: its death SIGKILLs the box's PID 1, and with it the box.
                os.kill(unshare.pid, signal.SIGKILL)
                unshare.wait(timeout=timeout)
        try:
            # No process may outlive the box: its cgroups only go once they are empty, and
            # its PID 1 goes (is reaped) only after the kernel ended all its processes.
            wait_until(self._cgroups_removed, timeout=timeout, what="the box's cgroups to empty")
            if self.pid:
                gone = Path(f"/proc/{self.pid}")
                wait_until(lambda: not gone.exists(), timeout=timeout, what="the box's PID 1 to go")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _cgroups_removed(self) -> bool:
        return all([_remove_empty(top) for top in self.cgroups])

    def console_text(self) -> str:
        return self.console.read_text(encoding="utf-8", errors="replace")[-4000:]

    # -- driving it --------------------------------------------------------------------------

    def run(
        self, *argv: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """`argv` in the box (its namespaces and root), with a clean environment."""
        command = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-r", "-w"]
        done = subprocess.run(
            [*command, "env", "-i", *BOX_ENV, *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"in the box, {' '.join(argv)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
            )
        return done

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show UNIT -p ...` as a dict."""
        flags = [f"--property={name}" for name in properties]
        out = self.systemctl("show", unit, *flags).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def path(self, inside: str) -> Path:
        """Where the box's `inside` is, seen from the host."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644, owner: int = 0) -> Path:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        os.chown(target, owner, owner)
        target.chmod(mode)
        return target

    def install_rotator(self, prefix: str = "/opt/rotator") -> None:
        """rotator into `prefix` as the image does it: docker/install.sh, the box's python3."""
        version = self.run(
            "python3", "-c", "import platform; print(platform.python_version())"
        ).stdout.strip()
        # The wheels are resolved by a host interpreter of the box's exact version
        # (markers reach the patch level: tests/support/install.py).
        builder = next(
            (
                python
                for python in ("/usr/bin/python3", sys.executable)
                if Path(python).exists() and install.python_version(python) == version
            ),
            None,
        )
        if builder is None:
            raise BoxUnavailable(
                f"the box's python3 is {version} and this host has no Python {version} to "
                "resolve its wheels with (Debian bookworm's python3 is; run on that kind)"
            )
        shutil.copytree(install.wheelhouse(builder), self.path("/tmp/wheelhouse"))
        shutil.copy(install.INSTALL_SCRIPT, self.path("/tmp/install.sh"))
        self.run(
            "sh", "/tmp/install.sh", prefix, "/tmp/wheelhouse", "/usr/bin/python3", timeout=300
        )
        shutil.rmtree(self.path("/tmp/wheelhouse"))
