"""The Helm chart rendered by the real Helm engine (helm-python-sdk embeds Helm 4).

The chart tests (tests/deploy/), the pod that lives what it renders and the
pages that quote it (tests/docs/test_runbook.py, test_upgrading.py) each
loaded and rendered the chart with a copy of the same few lines, and differed
in release name: one helper renders it for one release in one namespace, so a
page that quotes ``kubectl -n tokens exec deploy/rot`` and the chart tests read
the same manifests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python.chart as helm_chart
import pytest
import yaml

__all__ = [
    "CASES",
    "CHART",
    "NAMESPACE",
    "RELEASE",
    "chart",
    "container",
    "manifests",
    "one",
    "pod_spec",
    "render",
]

CHART = Path(__file__).resolve().parents[2] / "helm" / "rotator"
RELEASE = "rot"
NAMESPACE = "tokens"

#: the default values and each store's CI values of the chart
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    **{
        kind: yaml.safe_load((CHART / "ci" / f"{kind}-values.yaml").read_text(encoding="utf-8"))
        for kind in ("file", "vault", "aws")
    },
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    """The chart, loaded once a module (import this fixture into the module)."""
    loaded = helm_chart.Chart.load(CHART)
    try:
        yield loaded
    finally:
        loaded.close()


def render(chart: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Render; return {"NOTES": text, "docs": [manifest, ...]}."""
    out = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    docs: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return {"NOTES": notes, "docs": docs}


def manifests(chart: Any, values: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The rendered manifests of one ``kind``."""
    return [doc for doc in render(chart, values)["docs"] if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, *, hook: bool = False) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and ("helm.sh/hook" in (d["metadata"].get("annotations") or {})) == hook
    ]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = (
        doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
    )
    return spec


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(doc)["containers"]
    assert len(containers) == 1
    return containers[0]
