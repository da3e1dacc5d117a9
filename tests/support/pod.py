"""A Kubernetes pod's constraints on a real process, without Kubernetes.

Rendering proves the chart's manifest says the right things; this makes a
process live under what the kubelet and a container runtime do with it
(tests/deploy/test_pod.py): new mount, PID and UTS namespaces (the entrypoint is
PID 1, the hostname the pod's) whose root is an overlay of the host's root, the
image layer (the virtualenv docker/install.sh built, at the image's prefix) and
the image's user, remounted read-only; the volumes, environment, user and groups
that tests/support/kubelet.py reads from the pod spec; no capabilities and
``no_new_privs`` by ``setpriv``. Not modelled: the seccomp profile, cgroup
limits, a network namespace (the pod shares the host's loopback with the tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tests.support import leakcheck
from tests.support.install import INSTALL_SCRIPT, wheelhouse
from tests.support.kubelet import DEFAULT_PATH, Image, PodSpec, bind_lines
from tests.support.net import wait_until

__all__ = ["IMAGE_PREFIX", "Image", "Pod", "PodSpec", "image_layer", "missing", "pod_python"]

#: where the Dockerfile puts the virtualenv (its scripts name this path)
IMAGE_PREFIX = "/opt/rotator"
TOOLS = ("unshare", "setpriv", "nsenter", "mount", "umount", "pivot_root")
UNSHARE = ["unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child"]
UNSHARE += ["--propagation", "private"]


def pod_python() -> str | None:
    """An interpreter an unprivileged UID can run (the host's default one may sit under a
    0700 /root) of this interpreter's version, the one the wheelhouse is built for."""
    wanted = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (f"/usr/bin/{wanted}", f"/usr/local/bin/{wanted}"):
        real = Path(candidate).resolve()
        if real.is_file() and all(p.stat().st_mode & stat.S_IXOTH for p in (real, *real.parents)):
            return candidate
    return None


def missing() -> str | None:
    """Why a pod cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces, setpriv to the pod's UID); CI runs as root"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"needs util-linux's {', '.join(absent)}"
    if pod_python() is None:
        return "no Python of the wheelhouse's version that an unprivileged UID can run"
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"cannot create mount and PID namespaces: {probe.stderr.strip()}"
    return None


# --- the launcher and the image layer -----------------------------------------------------


def _script(mounts: Sequence[str], *, final: str, read_only_root: bool, workdir: str) -> str:
    """The launcher, run by sh as PID 1 of the new namespaces, with the stage dir as $1."""
    lines = [
        "set -eu",
        'stage=$1; root="$stage/root"',
        'mount -t tmpfs -o mode=0755 pod-stage "$stage"',
        'mkdir "$stage/upper" "$stage/work" "$root"',
        # the host's root as the image's lower layer; what the launcher adds lands in the tmpfs
        'layers="lowerdir=/,upperdir=$stage/upper,workdir=$stage/work"',
        'mount -t overlay pod-root -o "$layers" "$root"',
        'cd "$root"',
        "mount -t proc proc proc",
        # the pod's name as its hostname (a lease owner names its host)
        'echo "${HOSTNAME:-pod}" > /proc/sys/kernel/hostname',
        "mount -t sysfs -o ro,nosuid,nodev,noexec sysfs sys",
        "mount -t tmpfs -o mode=0755,nosuid dev dev",
        "for node in null zero full random urandom tty; do"
        ' touch "dev/$node"; mount --bind "/dev/$node" "dev/$node"; done',
        "ln -s /proc/self/fd dev/fd && ln -s /proc/self/fd/0 dev/stdin",
        "ln -s /proc/self/fd/1 dev/stdout && ln -s /proc/self/fd/2 dev/stderr",
        "mkdir dev/shm && mount -t tmpfs -o mode=1777,nosuid,nodev,size=64m shm dev/shm",
        *mounts,
        *(["mount -o remount,bind,ro ."] if read_only_root else []),
        "pivot_root . .",
        "umount -l .",
        f"cd {shlex.quote(workdir)}",
        # dash exports PWD and OLDPWD; a container runtime sets neither
        f"exec env -u PWD -u OLDPWD {final}",
    ]
    return "\n".join(lines) + "\n"


def image_layer(python: str | None = None) -> Path:
    """The virtualenv docker/install.sh builds at IMAGE_PREFIX on a read-only root, cached
    per wheelhouse, install script and interpreter; bind-mounted there in every pod."""
    python = python or pod_python()
    assert python, missing()
    wheels = wheelhouse(python)
    key = hashlib.sha256((INSTALL_SCRIPT.read_text() + python).encode()).hexdigest()[:12]
    target = wheels.parent / f"pod-image-{wheels.name}-{key}"
    if (target / ".complete").exists():
        return target
    # the venv names IMAGE_PREFIX, not the host directory, so it can be built aside and renamed
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o755, parents=True)
    mounts = [
        *bind_lines(partial, IMAGE_PREFIX, read_only=False),
        *bind_lines(wheels, "/wheels", read_only=True),
        *bind_lines(INSTALL_SCRIPT.parent, "/src", read_only=True),
        "mkdir -p tmp && mount -t tmpfs tmp tmp",
    ]
    command = f"sh /src/{INSTALL_SCRIPT.name} {IMAGE_PREFIX} /wheels {shlex.quote(python)}"
    script = _script(mounts, final=command, read_only_root=True, workdir="/")
    with tempfile.TemporaryDirectory(prefix="rotator-image-") as stage:
        built = subprocess.run(
            [*UNSHARE, "sh", "-c", script, "launcher", stage],
            env={"PATH": DEFAULT_PATH, "HOME": "/tmp", "PIP_NO_CACHE_DIR": "1"},
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    if built.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"install.sh failed ({built.returncode}):\n{built.stderr[-4000:]}")
    (partial / ".complete").touch()
    if (target / ".complete").exists():  # another run finished first; its pods may use it
        shutil.rmtree(partial)
        return target
    shutil.rmtree(target, ignore_errors=True)  # an unfinished one
    partial.rename(target)
    return target


_TRY_WRITES = """
import errno, json, os, sys
out = {}
for path in sys.argv[1:]:
    name = os.path.join(path, ".pod-write-probe")
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(name)
        out[path] = "written"
    except OSError as exc:
        out[path] = errno.errorcode[exc.errno]
print(json.dumps(out))
"""


# --- a running pod ------------------------------------------------------------------------


class Pod:
    """A PodSpec's container as a process, started at once; stopped by PID."""

    def __init__(self, spec: PodSpec, layer: Path, *, name: str = "pod", stdin: str = "") -> None:
        self.spec = spec
        # the launcher's tmpfs goes over it inside the pod's mount namespace only
        self.stage = Path(tempfile.mkdtemp(prefix="rotator-pod-"))
        self.log_path = leakcheck.log_file(name)
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115
        mounts = [*bind_lines(layer, IMAGE_PREFIX, read_only=True), *spec.mounts]
        final = shlex.join([*spec.setpriv(), *spec.argv])
        ro = spec.read_only_root
        script = _script(mounts, final=final, read_only_root=ro, workdir=spec.workdir)
        self.proc = subprocess.Popen(
            [*UNSHARE, "sh", "-c", script, "launcher", str(self.stage)],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=spec.env,
        )
        assert self.proc.stdin is not None
        with self.proc.stdin:  # what `kubectl run -i` pipes in, then closed
            self.proc.stdin.write(stdin.encode())
        self._pid: int | None = None

    @property
    def pid(self) -> int:
        """The host's PID of the container's PID 1."""
        if self._pid is None:
            self._pid = wait_until(self._container_pid, timeout=30, what="the pod's PID 1")
        return self._pid

    def _container_pid(self) -> int | None:
        self._alive()
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and f"\nPPid:\t{self.proc.pid}\n" in (
                    (entry / "status").read_text()
                ):
                    return int(entry.name)
            except OSError:
                continue
        return None

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the pod exited ({self.proc.returncode}):\n{self.output()}")

    def wait_started(self, timeout: float = 30) -> None:
        """Until PID 1 is the entrypoint (the launcher has exec'd it), not the launcher."""
        tail = "\0".join(self.spec.argv[1:]) + "\0"

        def started() -> bool:
            self._alive()
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().decode(errors="replace")
            return cmdline.endswith(tail) and "setpriv" not in cmdline

        wait_until(started, timeout=timeout, what="the pod's entrypoint")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def status(self) -> dict[str, str]:
        """/proc/PID/status of the container's PID 1 (Uid, CapEff, NoNewPrivs, VmHWM, ...)."""
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    def try_writes(self, directories: Sequence[str]) -> dict[str, str]:
        """Whether the pod's user can create a file in each directory: "written", or the
        errno's name (EROFS on a read-only mount, EACCES where permissions refuse)."""
        answer = self.exec([f"{IMAGE_PREFIX}/bin/python", "-c", _TRY_WRITES, *directories])
        assert answer.returncode == 0, answer.stderr
        result: dict[str, str] = json.loads(answer.stdout)
        return result

    def exec(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl exec``: a command in the container's namespaces, as its user, with its env."""
        command = ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--uts", "--root", "--wd"]
        result = subprocess.run(
            [*command, *self.spec.setpriv(), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.spec.env,
            timeout=timeout,
            check=False,
        )
        log = leakcheck.log_file("pod-exec-" + "-".join(argv[:2]).replace("/", "_"))
        log.write_text(f"$ {shlex.join(argv)}\n{result.stdout}\n--- stderr\n{result.stderr}")
        return result

    def stop(self, timeout: float) -> tuple[int, float]:
        """SIGTERM to PID 1, as the kubelet sends it; (exit code, seconds it took)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout), time.monotonic() - started

    def wait(self, timeout: float) -> int:
        """The exit code (a pod that runs to completion, or one told to stop)."""
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # --kill-child takes the container with it
            self.proc.wait(timeout=10)
        self._log.close()
        if self.stage.exists():
            self.stage.rmdir()
