"""A Kubernetes pod's constraints on a real process, without Kubernetes.

Rendering proves the chart's manifest says the right things; this makes a
process live under what the kubelet and a container runtime do with it
(tests/deploy/test_pod.py): new mount and PID namespaces (the entrypoint is PID
1) whose root is an overlay of the host's root, the image layer (the virtualenv
docker/install.sh built, at the image's prefix) and the image's user, remounted
read-only; the volumes as the kubelet prepares them (a ConfigMap in its
atomic-writer layout, an emptyDir as a tmpfs of its sizeLimit, a claim as a host
directory, the projected ServiceAccount token, all with the fsGroup ownership);
the image's environment, then the container's, Secrets resolved; the user,
groups and privileges by ``setpriv``. Not modelled: the seccomp profile, cgroup
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support import leakcheck
from tests.support.install import INSTALL_SCRIPT, ROOT, wheelhouse
from tests.support.net import wait_until

__all__ = ["IMAGE_PREFIX", "Image", "Pod", "PodSpec", "image_layer", "missing", "pod_python"]

DOCKERFILE = ROOT / "Dockerfile"
#: where the Dockerfile puts the virtualenv (its scripts name this path)
IMAGE_PREFIX = "/opt/rotator"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOOLS = ("unshare", "setpriv", "nsenter", "mount", "umount", "pivot_root")
UNSHARE = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


# --- the image and the launcher ----------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's final stage gives a container."""

    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    #: USER as "UID[:GID]"
    user: str

    @classmethod
    def from_dockerfile(cls, path: Path = DOCKERFILE) -> Image:
        stages: list[list[tuple[str, str]]] = []
        for line in path.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
            word, _, rest = line.strip().partition(" ")
            if word.upper() == "FROM":
                stages.append([])
            elif word and not word.startswith("#") and stages:
                stages[-1].append((word.upper(), rest.strip()))
        env: dict[str, str] = {"PATH": DEFAULT_PATH}
        found = {"WORKDIR": "/", "USER": "0", "ENTRYPOINT": "[]", "CMD": "[]"}
        for word, rest in stages[-1]:
            if word == "ENV":
                for item in shlex.split(rest):
                    key, _, value = item.partition("=")
                    env[key] = value.replace("$PATH", env.get("PATH", DEFAULT_PATH))
            elif word in found:
                found[word] = rest
        return cls(
            env=env,
            entrypoint=json.loads(found["ENTRYPOINT"]),
            cmd=json.loads(found["CMD"]),
            workdir=found["WORKDIR"],
            user=found["USER"],
        )

    def passwd_line(self) -> str:
        """The Dockerfile's user (useradd rotator, home /var/lib/rotator, the WORKDIR)."""
        uid, _, gid = self.user.partition(":")
        return f"rotator:x:{uid}:{gid or uid}::{self.workdir}:/usr/sbin/nologin"


def _script(mounts: Sequence[str], *, final: str, read_only_root: bool, workdir: str) -> str:
    """The launcher, run by sh as PID 1 of new mount and PID namespaces, the stage dir as $1."""
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


def _inside(target: str) -> str:
    """``target`` relative to the new root, its symbolic links resolved as the pod sees them
    (the host's root is the image's lower layer): ``mkdir -p`` through an absolute link such
    as /var/run -> /run would otherwise create the directory on the host."""
    return shlex.quote("." + os.path.realpath(target))


def _bind(source: Path | str, target: str, *, read_only: bool) -> list[str]:
    dest = _inside(target)
    out = [f"mkdir -p {dest}", f"mount --bind {shlex.quote(str(source))} {dest}"]
    if read_only:
        out.append(f"mount -o remount,bind,ro,nosuid,nodev {dest}")
    return out


def image_layer(python: str) -> Path:
    """The virtualenv docker/install.sh builds at IMAGE_PREFIX on a read-only root, cached
    per wheelhouse, install script and interpreter; bind-mounted there in every pod."""
    wheels = wheelhouse()
    key = hashlib.sha256((INSTALL_SCRIPT.read_text() + python).encode()).hexdigest()[:12]
    target = wheels.parent / f"pod-image-{wheels.name}-{key}"
    if (target / ".complete").exists():
        return target
    # the venv names IMAGE_PREFIX, not the host directory, so it can be built aside and renamed
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o755, parents=True)
    mounts = [
        *_bind(partial, IMAGE_PREFIX, read_only=False),
        *_bind(wheels, "/wheels", read_only=True),
        *_bind(INSTALL_SCRIPT.parent, "/src", read_only=True),
        "mkdir -p tmp && mount -t tmpfs tmp tmp",
    ]
    command = f"sh /src/{INSTALL_SCRIPT.name} {IMAGE_PREFIX} /wheels {shlex.quote(python)}"
    script = _script(mounts, final=command, read_only_root=True, workdir="/")
    with tempfile.TemporaryDirectory(prefix="rotator-image-") as stage:
        subprocess.run(
            [*UNSHARE, "sh", "-c", script, "launcher", stage],
            env={"PATH": DEFAULT_PATH, "HOME": "/tmp", "PIP_NO_CACHE_DIR": "1"},
            check=True,
            timeout=600,
        )
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


# --- the pod spec, as the kubelet reads it -------------------------------------------------


def set_volume_ownership(path: Path, fs_group: int | None, *, read_only: bool) -> None:
    """The kubelet's ``fsGroup`` treatment: group-owned, group-readable (and writable unless
    read-only), directories setgid so that new files inherit the group."""
    if fs_group is None:
        return
    mask = 0o440 if read_only else 0o660
    for entry in [path, *path.rglob("*")]:
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        os.chown(entry, -1, fs_group)
        extra = mask | (0o110 | stat.S_ISGID if stat.S_ISDIR(info.st_mode) else 0)
        entry.chmod(stat.S_IMODE(info.st_mode) | extra)


def atomic_writer(directory: Path, files: Mapping[str, str], mode: int = 0o644) -> Path:
    """A ConfigMap or Secret volume as the kubelet writes it: the files in a timestamped
    directory, ``..data`` linking to it, and each key a link through ``..data``."""
    directory.mkdir(mode=0o755, parents=True)
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.000000001", time.gmtime())
    (directory / stamp).mkdir(mode=0o755)
    for name, text in files.items():
        (directory / stamp / name).write_text(text, encoding="utf-8")
        (directory / stamp / name).chmod(mode)
        (directory / name).symlink_to(f"..data/{name}")
    (directory / "..data").symlink_to(stamp)
    return directory


@dataclass
class PodSpec:
    """One container of a pod spec, turned into what its process gets."""

    uid: int
    gid: int
    groups: list[int]
    argv: list[str]
    env: dict[str, str]
    workdir: str
    read_only_root: bool
    no_new_privs: bool
    drop_all: bool
    #: launcher lines that mount the image's files and the volumes (cwd: the new root)
    mounts: list[str] = field(default_factory=list)

    @classmethod
    def from_pod_spec(
        cls,
        spec: Mapping[str, Any],
        *,
        image: Image,
        workspace: Path,
        configmaps: Mapping[str, Mapping[str, str]],
        secrets: Mapping[str, Mapping[str, str]],
        claims: Mapping[str, Path],
        service_account_token: str,
    ) -> PodSpec:
        [box] = spec["containers"]
        pod_ctx = spec.get("securityContext") or {}
        ctx = {**pod_ctx, **(box.get("securityContext") or {})}
        image_uid, _, image_gid = image.user.partition(":")
        uid = int(ctx.get("runAsUser", image_uid))
        gid = int(ctx.get("runAsGroup", image_gid or 0))
        fs_group = pod_ctx.get("fsGroup")
        groups = sorted({fs_group, *pod_ctx.get("supplementalGroups", [])} - {None})
        # HOME: the image's passwd entry for the UID, else /
        home = image.workdir if str(uid) == image_uid else "/"
        env = {**image.env, "HOSTNAME": "rotator-pod", "HOME": home}
        for source in box.get("envFrom", []):
            env.update(secrets[source["secretRef"]["name"]])
        for item in box.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            env[item["name"]] = secrets[ref["name"]][ref["key"]] if ref else item["value"]
        pod = cls(
            uid=uid,
            gid=gid,
            groups=[int(g) for g in groups],
            argv=[*(box.get("command") or image.entrypoint), *box.get("args", image.cmd)],
            env=env,
            workdir=box.get("workingDir") or image.workdir,
            read_only_root=bool(ctx.get("readOnlyRootFilesystem")),
            no_new_privs=ctx.get("allowPrivilegeEscalation") is False,
            drop_all="ALL" in (ctx.get("capabilities") or {}).get("drop", []),
            mounts=[f"echo {shlex.quote(image.passwd_line())} >> etc/passwd"],
        )
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        sources = {**configmaps, **{f"claim:{k}": v for k, v in claims.items()}}
        for mount in box.get("volumeMounts", []):
            pod._mount(volumes[mount["name"]], mount, workspace, sources, fs_group=fs_group)
        if spec.get("automountServiceAccountToken", True):
            files = {"token": service_account_token, "namespace": "default", "ca.crt": ""}
            tokens = atomic_writer(workspace / "serviceaccount", files)
            set_volume_ownership(tokens, fs_group, read_only=True)
            pod.mounts += _bind(tokens, SERVICE_ACCOUNT_DIR, read_only=True)
        return pod

    def _mount(
        self,
        volume: Mapping[str, Any],
        mount: Mapping[str, Any],
        workspace: Path,
        sources: Mapping[str, Any],
        *,
        fs_group: int | None,
    ) -> None:
        target, read_only = mount["mountPath"], bool(mount.get("readOnly"))
        name = volume["name"]
        if "emptyDir" in volume:
            limit = (volume["emptyDir"] or {}).get("sizeLimit", "")
            size = limit.replace("Ki", "k").replace("Mi", "m").replace("Gi", "g")
            options = "mode=2777" + (f",gid={fs_group}" if fs_group is not None else "")
            options += (f",size={size}" if size else "") + (",ro" if read_only else "")
            dest = _inside(target)
            self.mounts += [f"mkdir -p {dest}", f"mount -t tmpfs -o {options} {name} {dest}"]
            return
        if "configMap" in volume:
            source = atomic_writer(workspace / name, sources[volume["configMap"]["name"]])
            set_volume_ownership(source, fs_group, read_only=True)
        elif "persistentVolumeClaim" in volume:
            source = sources[f"claim:{volume['persistentVolumeClaim']['claimName']}"]
            set_volume_ownership(source, fs_group, read_only=read_only)
        else:
            raise AssertionError(f"volume {name}: kind not modelled: {sorted(volume)}")
        self.mounts += _bind(source, target, read_only=read_only)

    def setpriv(self) -> list[str]:
        """The user and privileges the runtime gives the container's processes."""
        groups = ",".join(map(str, self.groups))
        command = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}"]
        command.append(f"--groups={groups}" if groups else "--clear-groups")
        if self.drop_all:
            command += ["--inh-caps=-all", "--bounding-set=-all"]
        if self.no_new_privs:
            command.append("--no-new-privs")
        return [*command, "--"]


# --- a running pod ------------------------------------------------------------------------


class Pod:
    """A PodSpec's container as a process, started at once; stopped by PID."""

    def __init__(self, spec: PodSpec, layer: Path, *, name: str = "pod", stdin: str = "") -> None:
        self.spec = spec
        # the launcher's tmpfs goes over it inside the pod's mount namespace only
        self.stage = Path(tempfile.mkdtemp(prefix="rotator-pod-"))
        self.log_path = leakcheck.log_file(name)
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115
        mounts = [*_bind(layer, IMAGE_PREFIX, read_only=True), *spec.mounts]
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

    def exec(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl exec``: a command in the container's namespaces, as its user, with its env."""
        command = ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--root", "--wd"]
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
