"""The Helm chart with ``replicas > 1``: partitioned replicas, rolled one at a time.

Rendered by the real Helm engine and validated against the Kubernetes schemas
as in test_helm.py: more than one replica brings a PodDisruptionBudget, a
``RollingUpdate`` that adds a pod before it removes one, and needs the
coordination URL; a file store or a ReadWriteOnce data volume is refused with
the reason and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python.chart as helm_chart
import helm_python.errors as helm_errors
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from rotator.config import load_config
from tests.deploy.test_helm import CRD_KINDS, KUBE_VERSIONS
from tests.support.helm import CHART, NAMESPACE, RELEASE, chart, one, render

__all__ = ["chart"]  # the module fixture

REPLICAS: dict[str, Any] = yaml.safe_load(
    (CHART / "ci" / "replicas-values.yaml").read_text(encoding="utf-8")
)


def test_lint_reports_no_errors_or_warnings() -> None:
    report = helm_chart.lint(CHART, REPLICAS, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_three_replicas_roll_one_at_a_time_under_a_disruption_budget(chart: Any) -> None:
    docs = render(chart, REPLICAS)["docs"]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"] == (deployment["spec"]["selector"]["matchLabels"])
    )
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            for version in KUBE_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


def test_the_coordination_url_reaches_the_config_and_comes_from_a_secret(
    chart: Any, tmp_path: Path
) -> None:
    docs = render(chart, REPLICAS)["docs"]
    rendered = yaml.safe_load(one(docs, "ConfigMap")["data"]["rotator.yaml"])
    coordination = rendered["server"]["coordination"]
    assert coordination["url"] == "env:ROTATOR_COORDINATION_URL"
    env = {
        e["name"]: e
        for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["ROTATOR_COORDINATION_URL"]["valueFrom"]["secretKeyRef"]["key"] == (
        "coordination-url"
    )
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(rendered))
    config = load_config(str(path))
    assert config.server.coordination is not None
    assert config.server.coordination.membership_timeout.total_seconds() == 30


def test_one_replica_has_no_disruption_budget(chart: Any) -> None:
    docs = render(chart, {**REPLICAS, "replicas": 1})["docs"]
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (
            {"config": {**REPLICAS["config"], "server": {"listen": "0.0.0.0:9464"}}},
            r"replicas: 3 needs config\.server\.coordination\.url .*redis://",
        ),
        (
            {
                "config": {
                    **REPLICAS["config"],
                    "stores": {"files": {"type": "file", "directory": "/var/lib/rotator"}},
                    "defaults": {"state": {"store": "files"}},
                }
            },
            r"config\.stores\.files \(type: file\).*vault or aws",
        ),
        (
            {"persistence": {"enabled": True, "accessModes": ["ReadWriteOnce"]}},
            r"ReadWriteOnce data volume.*persistence\.enabled: false",
        ),
        ({"replicas": 0}, "replicas"),
    ],
)
def test_replicas_without_what_they_need_are_refused(
    chart: Any, change: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm_errors.HelmError, match=complaint):
        chart.render(values={**REPLICAS, **change}, name=RELEASE, namespace=NAMESPACE)
