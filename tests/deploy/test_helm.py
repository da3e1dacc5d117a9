"""The Helm chart, rendered by the real Helm engine (helm-python-sdk embeds Helm 4).

Every case renders the chart offline, lints it, validates each manifest against
the Kubernetes OpenAPI schemas shipped by kubernetes-validate (strict: unknown
fields are errors), and checks the parts a cautious operator relies on: one
replica recreated, the hardened security context, probes on /healthz and
/readyz, the config mounted read-only, and a rotator.yaml that rotator accepts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python.chart as helm_chart
import helm_python.errors as helm_errors
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from rotator.config import load_config
from rotator.rotation.rotator import Outcome
from rotator.rotation.spool import spool_dir
from tests.support import leakcheck
from tests.support.helm import (
    CASES,
    CHART,
    NAMESPACE,
    RELEASE,
    chart,
    container,
    one,
    pod_spec,
    render,
)
from tests.support.kubelet import atomic_writer
from tests.support.proc import run_rotator

ROOT = Path(__file__).resolve().parents[2]
#: the chart's kubeVersion floor and a current release
KUBE_VERSIONS = ("1.28.0", "1.35.0")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

__all__ = ["chart"]  # the module fixture


# --- lint and schemas ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_lint_reports_no_errors_or_warnings(case: str) -> None:
    report = helm_chart.lint(CHART, CASES[case], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


@pytest.mark.parametrize("case", CASES)
def test_every_manifest_passes_the_kubernetes_schema(chart: Any, case: str) -> None:
    docs = render(chart, CASES[case])["docs"]
    builtin = [d for d in docs if d["kind"] not in CRD_KINDS]
    assert {"Deployment", "ServiceAccount", "ConfigMap", "Service", "Pod"} <= {
        d["kind"] for d in builtin
    }
    for doc in builtin:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} ({version}): {path}: {exc.message}"
                )


def test_the_schema_check_is_not_vacuous(chart: Any) -> None:
    """A misspelt field in a rendered Deployment is caught by the same validator."""
    deployment = one(render(chart, {})["docs"], "Deployment")
    container(deployment)["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 9464}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"config": {"server": {"listen": "127.0.0.1:9464"}}}, "listen"),
        ({"replicaCount": 2}, "replicaCount"),
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser"),
        ({"secretEnv": {"TOKEN": {"secret": "s"}}}, "key"),
    ],
)
def test_values_schema_refuses_unsafe_or_broken_values(
    chart: Any, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm_errors.HelmError, match=complaint):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


# --- the Deployment ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_one_replica_recreated(chart: Any, case: str) -> None:
    deployment = one(render(chart, CASES[case])["docs"], "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("case", CASES)
def test_pods_are_hardened(chart: Any, case: str) -> None:
    docs = render(chart, CASES[case])["docs"]
    for doc in (one(docs, "Deployment"), one(docs, "Pod", hook=True)):
        pod = pod_spec(doc)["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["runAsUser"] > 0
        box = container(doc)["securityContext"]
        assert box["runAsNonRoot"] is True
        assert box["readOnlyRootFilesystem"] is True
        assert box["allowPrivilegeEscalation"] is False
        assert box["privileged"] is False
        assert box["capabilities"] == {"drop": ["ALL"]}
        assert box["seccompProfile"] == {"type": "RuntimeDefault"}
        resources = container(doc)["resources"]
        assert set(resources) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])
        assert pod_spec(doc)["enableServiceLinks"] is False


@pytest.mark.parametrize("case", CASES)
def test_writable_paths_are_volumes_and_the_config_is_mounted_read_only(
    chart: Any, case: str
) -> None:
    docs = render(chart, CASES[case])["docs"]
    configmap = one(docs, "ConfigMap")
    deployment = one(docs, "Deployment")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}

    config_mount = mounts["/etc/rotator"]
    assert config_mount["readOnly"] is True
    assert volumes[config_mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert container(deployment)["args"] == ["run", "-c", "/etc/rotator/rotator.yaml"]
    assert "rotator.yaml" in configmap["data"]

    # The root file system is read-only: everything the daemon writes (file
    # store, spool, temp files) is a volume, not the image.
    for path in ("/var/lib/rotator", "/tmp"):
        mount = mounts[path]
        assert not mount.get("readOnly", False)
        volume = volumes[mount["name"]]
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume
    data = volumes[mounts["/var/lib/rotator"]["name"]]
    persistent = CASES[case].get("persistence", {}).get("enabled", False)
    assert ("persistentVolumeClaim" in data) is persistent
    if persistent:
        claim = one(docs, "PersistentVolumeClaim")
        assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    # Every file store of the configuration writes inside a writable volume.
    config = yaml.safe_load(configmap["data"]["rotator.yaml"])
    for store in (config.get("stores") or {}).values():
        if store["type"] == "file":
            assert Path(store["directory"]).is_relative_to("/var/lib/rotator")


@pytest.mark.parametrize("case", CASES)
def test_probes_and_metrics_port_follow_server_listen(chart: Any, case: str) -> None:
    docs = render(chart, CASES[case])["docs"]
    deployment = one(docs, "Deployment")
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["rotator.yaml"])
    port = int(config["server"]["listen"].rpartition(":")[2])
    box = container(deployment)
    assert box["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert box["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}

    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("case", CASES)
def test_pod_outlives_the_shutdown_grace(chart: Any, case: str, tmp_path: Path) -> None:
    """The kubelet's SIGKILL must not cut rotations the daemon may still finish."""
    docs = render(chart, CASES[case])["docs"]
    path = tmp_path / "rotator.yaml"
    path.write_text(one(docs, "ConfigMap")["data"]["rotator.yaml"], encoding="utf-8")
    grace = load_config(str(path)).server.shutdown_grace.total_seconds()
    assert pod_spec(one(docs, "Deployment"))["terminationGracePeriodSeconds"] > grace + 10


def test_a_different_listen_port_moves_probes_and_service(chart: Any) -> None:
    docs = render(chart, {"config": {"server": {"listen": "0.0.0.0:9100"}}})["docs"]
    assert container(one(docs, "Deployment"))["ports"][0]["containerPort"] == 9100
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 9100


def test_changing_the_config_restarts_the_pod(chart: Any) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = one(render(chart, values)["docs"], "Deployment")
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum(CASES["vault"]) != checksum(CASES["aws"])
    assert checksum(CASES["vault"]) == checksum(CASES["vault"])


@pytest.mark.parametrize("case", CASES)
def test_service_account_is_the_pods_identity(chart: Any, case: str) -> None:
    values = CASES[case]
    docs = render(chart, values)["docs"]
    account = one(docs, "ServiceAccount")
    for doc in (one(docs, "Deployment"), one(docs, "Pod", hook=True)):
        assert pod_spec(doc)["serviceAccountName"] == account["metadata"]["name"]
        # Vault Kubernetes auth reads the projected token.
        assert pod_spec(doc)["automountServiceAccountToken"] is True
    wanted = values.get("serviceAccount", {}).get("annotations")
    assert account["metadata"].get("annotations") == wanted


def test_existing_service_account_is_used_not_created(chart: Any) -> None:
    values = {"serviceAccount": {"create": False, "name": "vault-auth"}}
    docs = render(chart, values)["docs"]
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    assert pod_spec(one(docs, "Deployment"))["serviceAccountName"] == "vault-auth"


# --- the configuration and its secrets -------------------------------------------


def _secret_refs(node: object, scheme: str) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_secret_refs(v, scheme) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_secret_refs(v, scheme) for v in node))
    if isinstance(node, str) and node.startswith(f"{scheme}:"):
        return {node.partition(":")[2]}
    return set()


def rotator_check(*args: str, env: dict[str, str] | None = None) -> str:
    """`rotator check ...` as an operator (or `helm test`) runs it; returns stdout."""
    result = run_rotator(["check", *args], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("case", CASES)
def test_rendered_config_passes_rotator_check(chart: Any, case: str, tmp_path: Path) -> None:
    configmap = one(render(chart, CASES[case])["docs"], "ConfigMap")
    path = tmp_path / f"{case}.yaml"
    path.write_text(configmap["data"]["rotator.yaml"], encoding="utf-8")
    assert "configuration OK" in rotator_check("-c", str(path))
    config = load_config(str(path))
    assert config.server.listen == "0.0.0.0:9464"
    kinds = {store.type for store in config.stores.values()}
    assert kinds == ({case} if case != "default" else set())


@pytest.mark.parametrize("case", CASES)
def test_every_env_reference_comes_from_a_secret(chart: Any, case: str) -> None:
    values = CASES[case]
    docs = render(chart, values)["docs"]
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["rotator.yaml"])
    wanted = _secret_refs(config, "env")
    assert not _secret_refs(config, "cred"), "cred: needs systemd; use env: in Kubernetes"
    for doc in (one(docs, "Deployment"), one(docs, "Pod", hook=True)):
        box = container(doc)
        from_keys = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in box.get("env", [])
            if "valueFrom" in e
        }
        for name, ref in values.get("secretEnv", {}).items():
            assert from_keys[name] == {"name": ref["secret"], "key": ref["key"]}
        env_from = [e["secretRef"]["name"] for e in box.get("envFrom", [])]
        assert env_from == values.get("envFromSecrets", [])
        # Plain env must not carry what a reference expects from a Secret.
        plain = {e["name"] for e in box.get("env", []) if "value" in e}
        assert not wanted & plain
        if not env_from:
            assert wanted <= set(from_keys), f"unset: {sorted(wanted - set(from_keys))}"


def test_the_spool_lands_on_the_data_volume(chart: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(chart, CASES["vault"])["docs"]
    for doc in (one(docs, "Deployment"), one(docs, "Pod", hook=True)):
        box = container(doc)
        env = {e["name"]: e["value"] for e in box["env"] if "value" in e}
        monkeypatch.setenv("STATE_DIRECTORY", env["STATE_DIRECTORY"])
        writable = [m["mountPath"] for m in box["volumeMounts"] if not m.get("readOnly")]
        spool = spool_dir(None)
        assert any(spool.is_relative_to(path) for path in writable), spool


def test_file_case_passes_the_online_check_helm_test_runs(chart: Any, tmp_path: Path) -> None:
    """`rotator check --online` with the Secret's value in the environment, as in the pod.

    The data volume's path is moved to a temporary directory; the rest is as rendered.
    """
    docs = render(chart, CASES["file"])["docs"]
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["rotator.yaml"])
    config["stores"]["files"]["directory"] = str(tmp_path / "data")
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    args = container(one(docs, "Pod", hook=True))["args"]
    assert args == ["check", "--online", "-c", "/etc/rotator/rotator.yaml"]
    secret = leakcheck.register("idp-client-secret-for-the-helm-check", "client secret")
    out = rotator_check("--online", "-c", str(path), env={"IDP_CLIENT_SECRET": secret})
    assert "secret references: 1 of 1 resolve" in out
    assert "store files: ready" in out.lower()
    # Without the Secret the same check fails and names the reference.
    result = run_rotator(["check", "--online", "-c", str(path)], env={})
    assert result.returncode == 1
    assert "accounts.idp-api.client_secret" in result.stdout


def test_network_policy_lets_out_dns_and_the_configured_ports_only(chart: Any) -> None:
    assert not [d for d in render(chart, {})["docs"] if d["kind"] == "NetworkPolicy"]
    docs = render(chart, CASES["vault"])["docs"]
    policy = one(docs, "NetworkPolicy")
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == CASES["vault"]["networkPolicy"]["metricsFrom"]
    out = [(p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]]
    assert sorted(out) == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (8200, "TCP")]
    # The Vault store's port is among them.
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["rotator.yaml"])
    assert config["stores"]["vault"]["url"].endswith(":8200")


# --- monitoring ---------------------------------------------------------------------


def test_monitoring_objects_are_off_by_default(chart: Any) -> None:
    kinds = {d["kind"] for d in render(chart, {})["docs"]}
    assert not kinds & CRD_KINDS


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "({[":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_service_monitor_scrapes_the_metrics_port(chart: Any) -> None:
    docs = render(chart, CASES["vault"])["docs"]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"


def test_prometheus_rules_alert_on_expiry_and_failing_rotations(chart: Any) -> None:
    docs = render(chart, CASES["vault"])["docs"]
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    [group] = rule["spec"]["groups"]
    rules = {r["alert"]: r for r in group["rules"]}
    assert set(rules) == {
        "RotatorRefreshTokenExpiresSoon",
        "RotatorRefreshTokenExpiresVerySoon",
        "RotatorRotationsFailing",
        "RotatorDown",
    }
    selector = f'namespace="{NAMESPACE}",job="rotator"'
    expiry = f"rotator_refresh_token_expiry_timestamp_seconds{{{selector}}} - time()"
    assert rules["RotatorRefreshTokenExpiresSoon"]["expr"] == f"{expiry} < 7 * 86400"
    assert rules["RotatorRefreshTokenExpiresSoon"]["labels"]["severity"] == "warning"
    assert rules["RotatorRefreshTokenExpiresVerySoon"]["expr"] == f"{expiry} < 1 * 86400"
    assert rules["RotatorRefreshTokenExpiresVerySoon"]["labels"]["severity"] == "critical"
    # The result labels are the rotation outcomes the daemon counts.
    failed = {Outcome.TRANSIENT, Outcome.PERMANENT, Outcome.FAILED}
    healthy = {Outcome.SUCCESS, Outcome.ADOPTED, Outcome.NOT_DUE}
    failing = rules["RotatorRotationsFailing"]["expr"]
    pattern = r"rotator_rotations_total\{" + re.escape(selector) + r',result=~"([a-z_|]+)"\}\[30m\]'
    counted = [set(group.split("|")) for group in re.findall(pattern, failing)]
    assert counted == [failed, healthy]
    assert "unless" in failing
    for alert in rules.values():
        assert _balanced(alert["expr"]), alert["expr"]
        assert re.fullmatch(r"\d+[smh]", alert["for"])
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert "{{ $labels" in alert["annotations"]["summary"] or alert["alert"] == "RotatorDown"


# --- NOTES ---------------------------------------------------------------------------


def test_notes_tell_the_operator_how_to_check(chart: Any) -> None:
    notes = render(chart, CASES["vault"])["NOTES"]
    for command in (
        f"kubectl -n {NAMESPACE} rollout status deploy/rotator",
        f"helm test {RELEASE} -n {NAMESPACE}",
        f"kubectl -n {NAMESPACE} exec deploy/rotator -- rotator status",
        f"kubectl -n {NAMESPACE} logs deploy/rotator",
        "/metrics",
    ):
        assert command in notes
    assert "WARNING" not in notes
    assert "config.accounts is empty" not in notes


def test_notes_warn_when_state_would_be_lost_with_the_pod(chart: Any) -> None:
    values = {**CASES["file"], "persistence": {"enabled": False}}
    assert "WARNING: the state" in render(chart, values)["NOTES"]
    assert "WARNING" not in render(chart, CASES["file"])["NOTES"]
    assert "config.accounts is empty" in render(chart, {})["NOTES"]


# --- accounts from several ConfigMaps --------------------------------------------

ACCOUNT_MAPS = ["rotator-accounts-team-a", "rotator-accounts-team-b"]


def _team_accounts(team: str, count: int) -> str:
    accounts = {
        f"{team}-{index}": {
            "provider": "oauth2",
            "token_url": "https://idp.example/oauth/token",
            "client_id": f"{team}-{index}",
            "client_secret": "env:IDP_CLIENT_SECRET",
            "sinks": [{"store": "files", "path": f"tokens/{team}-{index}.json"}],
        }
        for index in range(count)
    }
    return yaml.safe_dump({"accounts": accounts})


def test_account_configmaps_are_mounted_and_included(chart: Any, tmp_path: Path) -> None:
    values = {**CASES["file"], "extraAccountConfigMaps": ACCOUNT_MAPS}
    report = helm_chart.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    rendered = render(chart, values)
    docs = rendered["docs"]
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
    for doc in (one(docs, "Deployment"), one(docs, "Pod", hook=True)):
        volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
        mounts = {m["mountPath"]: m for m in container(doc)["volumeMounts"]}
        for name in ACCOUNT_MAPS:
            mount = mounts[f"/etc/rotator/accounts.d/{name}"]
            assert mount["readOnly"] is True
            assert volumes[mount["name"]]["configMap"] == {"name": name}
    assert "config.accounts is empty" not in rendered["NOTES"]
    text = one(docs, "ConfigMap")["data"]["rotator.yaml"]
    assert yaml.safe_load(text)["include"] == ["accounts.d/*/*.yaml"]

    # /etc/rotator as the kubelet lays it out: each ConfigMap an atomic writer's
    # directory (..data links), the account ones at their nested mount points
    etc = atomic_writer(tmp_path / "etc-rotator", {"rotator.yaml": text})
    atomic_writer(etc / "accounts.d" / ACCOUNT_MAPS[0], {"accounts.yaml": _team_accounts("a", 3)})
    atomic_writer(
        etc / "accounts.d" / ACCOUNT_MAPS[1],
        {"web.yaml": _team_accounts("b", 2), "api.yaml": _team_accounts("c", 1)},
    )
    out = rotator_check("-c", str(etc / "rotator.yaml"))
    assert "configuration OK: 7 accounts (from 4 files)" in out
    config = load_config(str(etc / "rotator.yaml"))
    assert config.included == (
        f"accounts.d/{ACCOUNT_MAPS[0]}/accounts.yaml",
        f"accounts.d/{ACCOUNT_MAPS[1]}/api.yaml",
        f"accounts.d/{ACCOUNT_MAPS[1]}/web.yaml",
    )
    # the main file's defaults apply to the ConfigMaps' accounts
    states = [a.state.store if a.state else None for a in config.accounts.values()]
    assert states == ["files"] * 7


def test_without_account_configmaps_nothing_is_included(chart: Any) -> None:
    docs = render(chart, CASES["file"])["docs"]
    assert "include" not in yaml.safe_load(one(docs, "ConfigMap")["data"]["rotator.yaml"])
    names = {v["name"] for v in pod_spec(one(docs, "Deployment"))["volumes"]}
    assert not {n for n in names if n.startswith("accounts-")}


def test_a_user_include_is_kept_beside_the_configmaps(chart: Any) -> None:
    values = {
        **CASES["file"],
        "config": {**CASES["file"]["config"], "include": ["/extra/*.yaml"]},
        "extraAccountConfigMaps": ACCOUNT_MAPS[:1],
    }
    config = yaml.safe_load(one(render(chart, values)["docs"], "ConfigMap")["data"]["rotator.yaml"])
    assert config["include"] == ["/extra/*.yaml", "accounts.d/*/*.yaml"]


@pytest.mark.parametrize("names", [["Team_A"], ["a", "a"], [""], "team-a"])
def test_values_schema_refuses_bad_account_configmaps(chart: Any, names: Any) -> None:
    with pytest.raises(helm_errors.HelmError, match="extraAccountConfigMaps"):
        chart.render(values={"extraAccountConfigMaps": names}, name=RELEASE, namespace=NAMESPACE)
