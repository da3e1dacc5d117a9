"""A pod spec read as the kubelet and a container runtime read it, for tests/support/pod.py.

The container's process gets the image's environment (the Dockerfile's final
stage), then the container's, Secrets resolved; its user and groups from the
security contexts (fsGroup as a supplementary group); and its volumes as the
kubelet prepares them: a ConfigMap in the atomic writer's layout (``..data``
links), an emptyDir as a tmpfs of its sizeLimit, a claim as a host directory,
the projected ServiceAccount token, each with the fsGroup ownership. Volumes
become launcher lines (``mount`` commands run in the pod's new root).
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.install import ROOT

__all__ = [
    "DEFAULT_PATH",
    "Image",
    "PodSpec",
    "atomic_writer",
    "bind_lines",
    "set_volume_ownership",
]

DOCKERFILE = ROOT / "Dockerfile"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


def _inside(target: str) -> str:
    """``target`` relative to the new root, its symbolic links resolved as the pod sees them
    (the host's root is the image's lower layer): ``mkdir -p`` through an absolute link such
    as /var/run -> /run would otherwise create the directory on the host."""
    return shlex.quote("." + os.path.realpath(target))


def bind_lines(source: Path | str, target: str, *, read_only: bool) -> list[str]:
    dest = _inside(target)
    out = [f"mkdir -p {dest}", f"mount --bind {shlex.quote(str(source))} {dest}"]
    if read_only:
        out.append(f"mount -o remount,bind,ro,nosuid,nodev {dest}")
    return out


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
            pod.mounts += bind_lines(tokens, SERVICE_ACCOUNT_DIR, read_only=True)
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
        self.mounts += bind_lines(source, target, read_only=read_only)

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
