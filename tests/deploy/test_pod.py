"""The chart's pod, lived by the installed daemon: its constraints on a real process.

tests/deploy/test_helm.py proves the manifest says the right things; this proves
the daemon works under them. The chart is rendered by the real Helm engine
(``ci/file-values.yaml``: a file store on a PersistentVolumeClaim, pointed at a
local OAuth2 emulator and a free port), and tests/support/pod.py runs what the
rendered Deployment declares: the image's virtualenv (built by docker/install.sh)
on a read-only root, the chart's UID/GID/fsGroup, no capabilities, no_new_privs,
its volumes where it mounts them, its environment and arguments, as PID 1 of its
own PID namespace. The test seeds a grant the way the README says
(``kubectl exec -i deploy/rotator -- rotator import``), sees a rotation land on
the claim, the probes answer on the declared paths and port, and SIGTERM end the
pod within terminationGracePeriodSeconds.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_helm import CASES, NAMESPACE, container, one, pod_spec, render
from tests.fakes.kubernetes import service_account_jwt
from tests.fakes.oauth2 import OAuth2Emulator
from tests.support import leakcheck
from tests.support.net import free_port, wait_until
from tests.support.pod import IMAGE_PREFIX, Image, Pod, PodSpec, image_layer, missing, pod_python

REASON = missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"pod constraints: {REASON}")

ACCOUNT = "idp-api"
CLIENT_ID = "rotator-idp"
SECRET = leakcheck.register("idp-client-secret-in-the-pod+/%", "client secret")
SECRET_REF = ("rotator-credentials", "idp-client-secret")

#: what the pod's user tries to create, and whether the chart makes it writable
WRITE_PROBES = {
    "/": False,
    "/etc": False,
    "/opt/rotator/bin": False,
    "/etc/rotator": False,
    "/var/run/secrets/kubernetes.io/serviceaccount": False,
    "/tmp": True,
    "/var/lib/rotator": True,
}
PROBE_SCRIPT = """
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


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Values merged map by map, as Helm merges -f files and --set."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def layer() -> Path:
    python = pod_python()
    assert python is not None
    return image_layer(python)


@pytest.fixture
def emulator() -> Iterator[OAuth2Emulator]:
    server = OAuth2Emulator(clients={CLIENT_ID: SECRET})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    import helm_python.chart as helm_chart

    loaded = helm_chart.Chart.load(Path(__file__).resolve().parents[2] / "helm" / "rotator")
    try:
        yield loaded
    finally:
        loaded.close()


class Rendered:
    """The file case rendered for this host: the emulator's URL and a free port."""

    def __init__(self, chart: Any, emulator: OAuth2Emulator) -> None:
        values = merged(
            CASES["file"],
            {
                "config": {
                    "server": {"listen": f"0.0.0.0:{free_port()}"},
                    "accounts": {ACCOUNT: {"token_url": emulator.url}},
                }
            },
        )
        self.docs = render(chart, values)["docs"]
        self.deployment = one(self.docs, "Deployment")
        self.check_pod = one(self.docs, "Pod", hook=True)
        self.configmap = one(self.docs, "ConfigMap")
        self.claim = one(self.docs, "PersistentVolumeClaim")
        assert CASES["file"]["secretEnv"]["IDP_CLIENT_SECRET"] == {
            "secret": SECRET_REF[0],
            "key": SECRET_REF[1],
        }

    def spec(self, doc: dict[str, Any], tmp: Path, pvc: Path) -> PodSpec:
        return PodSpec.from_pod_spec(
            pod_spec(doc),
            image=Image.from_dockerfile(),
            workspace=tmp,
            configmaps={self.configmap["metadata"]["name"]: self.configmap["data"]},
            secrets={SECRET_REF[0]: {SECRET_REF[1]: SECRET}},
            claims={self.claim["metadata"]["name"]: pvc},
            service_account_token=service_account_jwt(NAMESPACE, "rotator", "uid-rotator"),
        )

    def probe_url(self, probe: str) -> str:
        box = container(self.deployment)
        get = box[probe]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in box["ports"]}
        port = ports.get(get["port"], get["port"])
        return f"http://127.0.0.1:{port}{get['path']}"

    @property
    def startup_budget(self) -> float:
        startup = container(self.deployment)["startupProbe"]
        return float(startup["periodSeconds"] * startup["failureThreshold"])

    @property
    def grace(self) -> float:
        return float(pod_spec(self.deployment)["terminationGracePeriodSeconds"])


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def answers_ok(url: str, *, timeout: float) -> None:
    wait_until(lambda: http_status(url) == 200, timeout=timeout, what=f"200 from {url}")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (Mi, Gi) in MiB."""
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def capabilities(status: dict[str, str]) -> dict[str, int]:
    return {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_the_daemon_lives_under_the_pods_constraints(
    chart: Any, layer: Path, emulator: OAuth2Emulator, tmp_path: Path
) -> None:
    rendered = Rendered(chart, emulator)
    pvc = tmp_path / "pvc"
    pvc.mkdir(mode=0o700)
    spec = rendered.spec(rendered.deployment, tmp_path / "volumes", pvc)
    context = pod_spec(rendered.deployment)["securityContext"]
    assert spec.read_only_root and spec.no_new_privs and spec.drop_all
    assert spec.argv == ["rotator", "run", "-c", "/etc/rotator/rotator.yaml"]
    assert spec.env["PATH"].startswith(f"{IMAGE_PREFIX}/bin:"), "the image layer's place"

    # seeded before the daemon starts, by a pod of the same spec on the same claim (a Job,
    # or `kubectl run -i`); the README's other way, `kubectl exec -i deploy/rotator --
    # rotator import`, is taken up by a running daemon only at its next look, a minute on
    grant = emulator.issue_grant(CLIENT_ID)
    seed = Pod(
        replace(spec, argv=["rotator", "import", ACCOUNT]),
        layer,
        name="pod-import",
        stdin=grant + "\n",
    )
    assert seed.wait(timeout=60) == 0, seed.output()

    pod = Pod(spec, layer)
    try:
        # the user, groups and privileges the runtime gives PID 1
        pod.wait_started()
        status = proc_status(pod.pid)
        uid, gid = context["runAsUser"], context["runAsGroup"]
        assert status["Uid"].split() == [str(uid)] * 4
        assert status["Gid"].split() == [str(gid)] * 4
        assert status["Groups"].split() == [str(context["fsGroup"])]
        assert capabilities(status) == dict.fromkeys(capabilities(status), 0)
        assert status["NoNewPrivs"] == "1"
        assert status["NSpid"].split()[-1] == "1", "the entrypoint is the pod's PID 1"

        # the probes the chart declares answer within the startup probe's allowance
        for probe in ("startupProbe", "livenessProbe"):
            answers_ok(rendered.probe_url(probe), timeout=rendered.startup_budget)

        # it rotates against the emulator at start and publishes onto the claim
        token_file = pvc / "tokens" / f"{ACCOUNT}.token"

        def published(rotations: int) -> bool:
            [issued] = emulator.grants.values()
            return (
                issued.refreshes >= rotations
                and not issued.revoked
                and token_file.exists()
                and emulator.access_valid(token_file.read_text().strip())
            )

        wait_until(lambda: published(1), timeout=60, what="a rotated access token on the claim")
        # and beside it, `kubectl exec deploy/rotator -- rotator refresh` (the lease by CAS
        # on the claim) rotates again
        again = pod.exec(["rotator", "refresh", ACCOUNT])
        assert again.returncode == 0, again.stdout + again.stderr
        assert published(2)
        answers_ok(rendered.probe_url("readinessProbe"), timeout=30)
        shown = pod.exec(["rotator", "status"])
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert ACCOUNT in shown.stdout

        # the root and the read-only mounts refuse the pod's user; its volumes take writes
        probe = pod.exec(["/opt/rotator/bin/python", "-c", PROBE_SCRIPT, *WRITE_PROBES])
        assert probe.returncode == 0, probe.stderr
        answers = json.loads(probe.stdout)
        assert answers == {
            path: "written" if writable else "EROFS" for path, writable in WRITE_PROBES.items()
        }

        # nothing landed in the pod's other writable places: /tmp, /dev/shm
        inside = Path(f"/proc/{pod.pid}/root")
        assert files_under(inside / "tmp") == []
        assert files_under(inside / "dev" / "shm") == []

        # its peak resident memory fits the chart's limit with room (the kubelet kills above it)
        peak_kib = int(proc_status(pod.pid)["VmHWM"].split()[0])
        limit = mebibytes(container(rendered.deployment)["resources"]["limits"]["memory"])
        assert peak_kib / 1024 < limit / 2, f"peak RSS {peak_kib} KiB, limit {limit} MiB"

        code, took = pod.stop(timeout=rendered.grace)
    finally:
        pod.close()
    output = pod.output()
    assert code == 0, output
    assert took < rendered.grace
    assert "Traceback" not in output
    assert "Read-only file system" not in output

    # the spool on the claim ($STATE_DIRECTORY/spool), the state and the tokens beside it,
    # every file written by the pod's user
    written = files_under(pvc)
    assert "spool/spool.key" in written, written
    assert f"tokens/{ACCOUNT}.json" in written
    for name in written:
        assert (pvc / name).lstat().st_uid == uid, name
    assert (pvc / "spool").stat().st_mode & 0o777 == 0o700


def test_helm_test_pod_passes_under_the_same_constraints(
    chart: Any, layer: Path, emulator: OAuth2Emulator, tmp_path: Path
) -> None:
    """`helm test`: `rotator check --online` in the hook pod, with its scratch emptyDir."""
    rendered = Rendered(chart, emulator)
    pvc = tmp_path / "pvc"
    pvc.mkdir(mode=0o700)
    spec = rendered.spec(rendered.check_pod, tmp_path / "volumes", pvc)
    pod = Pod(spec, layer, name="pod-helm-test")
    code = pod.wait(timeout=120)
    output = pod.output()
    assert code == 0, output
    assert "secret references: 1 of 1 resolve" in output
    assert "store files: ready" in output.lower()
    assert files_under(pvc) == [], "the check pod does not mount the daemon's claim"
