"""The chart's pod, lived by the installed daemon: its constraints on a real process.

tests/deploy/test_helm.py proves the manifest says the right things; this proves
the daemon works under them. The chart is rendered by the real Helm engine (the
ci/ values pointed at a local OAuth2 emulator, a free port and, for Vault, a
local OpenBao), and tests/support/pod.py runs what the rendered pod declares:
the image's virtualenv (built by docker/install.sh) on a read-only root, the
chart's UID/GID/fsGroup, no capabilities, no_new_privs, its volumes where it
mounts them, its environment and arguments, as PID 1 of its own PID namespace.

- file case: a grant seeded by `rotator import` in a pod on the same claim, the
  daemon rotates at start and publishes onto the claim, the probes answer on the
  declared paths and port, `kubectl exec` commands work beside it, nothing but
  the volumes takes a write, the spool is on the claim, SIGTERM ends the pod
  cleanly within terminationGracePeriodSeconds;
- vault case: the pod logs in with its projected ServiceAccount token, under the
  policy and role the README's Helm steps write;
- the `helm test` pod passes under the same constraints.
"""

from __future__ import annotations

import copy
import json
import shlex
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kubernetes import FakeKubernetes, service_account_jwt
from tests.fakes.oauth2 import OAuth2Emulator
from tests.support import leakcheck
from tests.support.helm import CASES, NAMESPACE, chart, container, one, pod_spec, render
from tests.support.net import free_port, wait_until
from tests.support.pod import IMAGE_PREFIX, Image, Pod, PodSpec, image_layer, missing
from tests.support.proc import ROOT
from tests.support.servers import OpenBao, openbao

__all__ = ["chart"]  # the module fixture

REASON = missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"pod constraints: {REASON}")

ACCOUNT = "idp-api"
CLIENT_ID = "rotator-idp"
SECRET = leakcheck.register("idp-client-secret-in-the-pod+/%", "client secret")
#: the Secret ci/*-values.yaml take their env: references from (README, Helm step 2)
SECRETS = {
    "rotator-credentials": {
        "idp-client-secret": SECRET,
        "slack-webhook-url": leakcheck.register("http://127.0.0.1:9/hooks/T0/B0/x0x0", "webhook"),
    }
}

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
    return image_layer()


@pytest.fixture
def emulator() -> Iterator[OAuth2Emulator]:
    server = OAuth2Emulator(clients={CLIENT_ID: SECRET})
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Rendered:
    """A case of the chart rendered for this host: the emulator's URL, a free port."""

    def __init__(
        self,
        chart: Any,
        case: str,
        emulator: OAuth2Emulator,
        values: dict[str, Any] | None = None,
        **config: Any,
    ) -> None:
        config = merged(
            {
                "server": {"listen": f"0.0.0.0:{free_port()}"},
                "accounts": {ACCOUNT: {"token_url": emulator.url}},
            },
            config,
        )
        self.values = merged(CASES[case], {**(values or {}), "config": config})
        self.docs = render(chart, self.values)["docs"]
        self.deployment = one(self.docs, "Deployment")
        self.check_pod = one(self.docs, "Pod", hook=True)
        self.configmap = one(self.docs, "ConfigMap")
        self.claims = [
            d["metadata"]["name"] for d in self.docs if d["kind"] == "PersistentVolumeClaim"
        ]
        self.service_account = pod_spec(self.deployment)["serviceAccountName"]

    def spec(
        self,
        doc: dict[str, Any],
        tmp: Path,
        *,
        secrets: dict[str, dict[str, str]],
        token: str = "",
    ) -> PodSpec:
        """``doc``'s pod; a claim is a host directory ``tmp/<claim>``."""
        claims = {name: tmp / name for name in self.claims}
        for path in claims.values():
            path.mkdir(mode=0o700, exist_ok=True)
        token = token or service_account_jwt(NAMESPACE, self.service_account, "uid-rotator")
        return PodSpec.from_pod_spec(
            pod_spec(doc),
            image=Image.from_dockerfile(),
            workspace=tmp / f"volumes-{doc['metadata']['name']}",
            configmaps={self.configmap["metadata"]["name"]: self.configmap["data"]},
            secrets=secrets,
            claims=claims,
            service_account_token=token,
        )

    def probe_url(self, probe: str) -> str:
        box = container(self.deployment)
        get = box[probe]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in box["ports"]}
        port = ports.get(get["port"], get["port"])
        return f"http://127.0.0.1:{port}{get['path']}"

    @property
    def context(self) -> dict[str, Any]:
        return dict(pod_spec(self.deployment)["securityContext"])

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


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (Mi, Gi) in MiB."""
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def capabilities(status: dict[str, str]) -> dict[str, int]:
    return {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def seed(spec: PodSpec, layer: Path, emulator: OAuth2Emulator) -> None:
    """A grant imported before the daemon starts, by a pod of the same spec and volumes (a
    Job, or `kubectl run -i`). The README's other way, `kubectl exec -i deploy/rotator --
    rotator import`, is taken up by a running daemon at its next look, a minute on."""
    grant = emulator.issue_grant(CLIENT_ID)
    argv = ["rotator", "import", ACCOUNT]
    pod = Pod(replace(spec, argv=argv), layer, name="pod-import", stdin=grant + "\n")
    assert pod.wait(timeout=60) == 0, pod.output()


def start(spec: PodSpec, layer: Path, rendered: Rendered) -> Pod:
    """The Deployment's pod, seen to run as the chart says and to pass its probes."""
    assert spec.read_only_root and spec.no_new_privs and spec.drop_all
    assert spec.argv == ["rotator", "run", "-c", "/etc/rotator/rotator.yaml"]
    assert spec.env["PATH"].startswith(f"{IMAGE_PREFIX}/bin:"), "the image layer's place"
    pod = Pod(spec, layer)
    try:
        pod.wait_started()
        status = pod.status()
        context = rendered.context
        assert status["Uid"].split() == [str(context["runAsUser"])] * 4
        assert status["Gid"].split() == [str(context["runAsGroup"])] * 4
        assert status["Groups"].split() == [str(context["fsGroup"])]
        assert capabilities(status) == dict.fromkeys(capabilities(status), 0)
        assert status["NoNewPrivs"] == "1"
        assert status["NSpid"].split()[-1] == "1", "the entrypoint is the pod's PID 1"
        # the probes the chart declares answer within the startup probe's allowance
        for probe in ("startupProbe", "livenessProbe"):
            answers_ok(rendered.probe_url(probe), timeout=rendered.startup_budget)
    except BaseException:
        pod.close()
        raise
    return pod


def stop(pod: Pod, rendered: Rendered) -> str:
    """SIGTERM, as the kubelet sends it: a clean exit within the grace period; the log."""
    code, took = pod.stop(timeout=rendered.grace)
    output = pod.output()
    assert code == 0, output
    assert took < rendered.grace
    assert "Traceback" not in output
    assert "Read-only file system" not in output
    # nothing under these constraints is worth more than an info line
    levels = {json.loads(line)["level"] for line in output.splitlines() if line.startswith("{")}
    assert levels <= {"debug", "info"}, output
    return output


#: the chart's identity, and an arbitrary one with no passwd entry in the image (as
#: OpenShift's restricted policy assigns from the namespace's range; HOME is then /)
IDENTITIES = {
    "chart-uid": {},
    "arbitrary-uid": {"runAsUser": 1000680000, "runAsGroup": 1000680000, "fsGroup": 1000680000},
}


@pytest.mark.parametrize("identity", IDENTITIES)
def test_the_daemon_lives_under_the_pods_constraints(
    chart: Any, layer: Path, emulator: OAuth2Emulator, tmp_path: Path, identity: str
) -> None:
    """ci/file-values.yaml: the file store and the spool on the claim."""
    values = {"podSecurityContext": IDENTITIES[identity]}
    rendered = Rendered(chart, "file", emulator, values=values)
    [claim] = rendered.claims
    pvc = tmp_path / claim
    spec = rendered.spec(rendered.deployment, tmp_path, secrets=SECRETS)
    seed(spec, layer, emulator)
    pod = start(spec, layer, rendered)
    try:
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
        assert pod.try_writes(list(WRITE_PROBES)) == {
            path: "written" if writable else "EROFS" for path, writable in WRITE_PROBES.items()
        }

        # nothing landed in the pod's other writable places: /tmp, /dev/shm
        inside = Path(f"/proc/{pod.pid}/root")
        assert files_under(inside / "tmp") == []
        assert files_under(inside / "dev" / "shm") == []

        # its peak resident memory fits the chart's limit with room (the kubelet kills above it)
        peak_kib = int(pod.status()["VmHWM"].split()[0])
        limit = mebibytes(container(rendered.deployment)["resources"]["limits"]["memory"])
        assert peak_kib / 1024 < limit / 2, f"peak RSS {peak_kib} KiB, limit {limit} MiB"
        stop(pod, rendered)
    finally:
        pod.close()

    # the spool on the claim ($STATE_DIRECTORY/spool), the state and the tokens beside it,
    # every file written by the pod's user
    written = files_under(pvc)
    assert "spool/spool.key" in written, written
    assert f"tokens/{ACCOUNT}.json" in written
    for name in written:
        assert (pvc / name).lstat().st_uid == rendered.context["runAsUser"], name
    assert (pvc / "spool").stat().st_mode & 0o777 == 0o700

    # Recreate: the next pod on the claim finds the grant and the spool's key, and has
    # nothing to rotate yet
    key = (pvc / "spool" / "spool.key").read_bytes()
    [issued] = emulator.grants.values()
    rotations = issued.refreshes
    pod = start(spec, layer, rendered)
    try:
        answers_ok(rendered.probe_url("readinessProbe"), timeout=30)
        shown = pod.exec(["rotator", "status", "--json"])
        assert shown.returncode == 0, shown.stdout + shown.stderr
        [account] = json.loads(shown.stdout)["accounts"]
        assert account["account"] == ACCOUNT and account["has_refresh_token"]
        assert not account["failed"] and account["last_success_at"]
        stop(pod, rendered)
    finally:
        pod.close()
    assert (issued.refreshes, issued.revoked) == (rotations, False)
    assert (pvc / "spool" / "spool.key").read_bytes() == key


def test_helm_test_pod_passes_under_the_same_constraints(
    chart: Any, layer: Path, emulator: OAuth2Emulator, tmp_path: Path
) -> None:
    """`helm test`: `rotator check --online` in the hook pod, with its scratch emptyDir."""
    rendered = Rendered(chart, "file", emulator)
    spec = rendered.spec(rendered.check_pod, tmp_path, secrets=SECRETS)
    pod = Pod(spec, layer, name="pod-helm-test")
    code = pod.wait(timeout=120)
    output = pod.output()
    assert code == 0, output
    assert "secret references: 1 of 1 resolve" in output
    assert "store files: ready" in output.lower()
    [claim] = rendered.claims
    assert files_under(tmp_path / claim) == [], "the check pod leaves the daemon's claim alone"


def readme_vault_setup() -> tuple[str, dict[str, str]]:
    """The policy and the Kubernetes auth role of README's Helm step 3, as written there."""
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    policy = text.split("vault policy write rotator - <<'HCL'\n", 1)[1].split("HCL\n", 1)[0]
    line = text.split("vault write auth/kubernetes/role/rotator", 1)[1]
    line = line.replace("\\\n", " ").split("\n", 1)[0]
    role = dict(item.split("=", 1) for item in shlex.split(line))
    return textwrap.dedent(policy), role


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[OpenBao, FakeKubernetes]]:
    """OpenBao with Kubernetes auth set up as the README says; the cluster's TokenReview
    API is the emulator, which vouches for the tokens it issues."""
    with FakeKubernetes() as k8s, openbao() as bao:
        bao.enable_auth("kubernetes")
        config = {
            "kubernetes_host": k8s.url,
            "kubernetes_ca_cert": k8s.ca_pem,
            "token_reviewer_jwt": k8s.reviewer_jwt,
            "disable_local_ca_jwt": True,
        }
        bao.call("POST", "auth/kubernetes/config", config)
        policy, role = readme_vault_setup()
        bao.write_policy("rotator", policy)
        bao.call("POST", "auth/kubernetes/role/rotator", role)
        yield bao, k8s


def test_the_pods_service_account_logs_in_to_vault(
    chart: Any,
    layer: Path,
    emulator: OAuth2Emulator,
    cluster: tuple[OpenBao, FakeKubernetes],
    tmp_path: Path,
) -> None:
    """ci/vault-values.yaml: state and token in Vault, reached with the projected
    ServiceAccount token; the spool on the data emptyDir."""
    bao, k8s = cluster
    rendered = Rendered(chart, "vault", emulator, stores={"vault": {"url": bao.url}})
    assert rendered.claims == []
    token = k8s.issue(NAMESPACE, rendered.service_account)
    spec = rendered.spec(rendered.deployment, tmp_path, secrets=SECRETS, token=token)
    seed(spec, layer, emulator)
    pod = start(spec, layer, rendered)
    try:
        store = rendered.values["config"]["stores"]["vault"]
        [sink] = rendered.values["config"]["accounts"][ACCOUNT]["sinks"]
        path = f"{store['mount']}/data/{store['prefix']}{sink['path']}"

        def published() -> bool:
            try:
                data = bao.call("GET", path)["data"]["data"]
            except RuntimeError:  # 404 until the first rotation
                return False
            return emulator.access_valid(str(data["access_token"]))

        wait_until(published, timeout=60, what=f"a rotated access token at {path}")
        answers_ok(rendered.probe_url("readinessProbe"), timeout=30)
        # OpenBao asked the cluster about the token the pod has mounted, and nothing else
        assert {r["spec"]["token"] for r in k8s.reviews} == {token}
        data = Path(f"/proc/{pod.pid}/root/var/lib/rotator")
        assert "spool/spool.key" in files_under(data)
        stop(pod, rendered)
    finally:
        pod.close()
