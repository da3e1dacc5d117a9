"""README "Consuming tokens": the External Secrets Operator manifests, schema-validated.

No cluster here: the manifests are validated against ESO's CRD schemas
(tests/docs/external_secrets.py), and checked against what rotator publishes:
the Vault path and field of the recipe's sink, and a ``refreshInterval`` well
inside the time a rotated token still works.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from tests.docs.conftest import README_SINK
from tests.docs.external_secrets import validate
from tests.support import docs

#: rotator's default refresh_share, and a 1-hour token: the old one lives this long after
OVERLAP_SECONDS = (1 - 0.67) * 3600
#: how long the kubelet may take to update a mounted Secret
KUBELET_SYNC_SECONDS = 60


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(docs.block("consumer/external-secrets").text) if doc]


def seconds(duration: str) -> float:
    """A Go duration as ESO reads it (``1h30m``, ``90s``, ``1m``)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(number) * unit[u] for number, u in parts)


def test_manifests_are_valid_for_external_secrets() -> None:
    found = manifests()
    assert [(d["apiVersion"], d["kind"]) for d in found] == [
        ("external-secrets.io/v1", "SecretStore"),
        ("external-secrets.io/v1", "ExternalSecret"),
    ]
    assert validate(found) == [None, None]


def test_the_validator_refuses_what_eso_would() -> None:
    """Without this, a validator that accepts anything would pass the test above."""
    store, external = manifests()
    no_ref = copy.deepcopy(external)
    del no_ref["spec"]["data"][0]["remoteRef"]
    bad_interval = copy.deepcopy(external)
    bad_interval["spec"]["refreshInterval"] = 60
    bad_version = copy.deepcopy(store)
    bad_version["spec"]["provider"]["vault"]["version"] = "v3"
    errors = validate([no_ref, bad_interval, bad_version])
    assert errors[0] is not None and "remoteRef" in errors[0]
    assert errors[1] is not None and "refreshInterval" in errors[1]
    assert errors[2] is not None and "version" in errors[2]


def test_manifests_read_rotators_sink_in_time() -> None:
    store, external = manifests()
    vault = store["spec"]["provider"]["vault"]
    # KV v2 at the mount the Vault store uses by default
    assert (vault["path"], vault["version"]) == ("secret", "v2")
    spec = external["spec"]
    assert spec["secretStoreRef"] == {"kind": "SecretStore", "name": store["metadata"]["name"]}
    assert external["metadata"]["namespace"] == store["metadata"]["namespace"]
    # the README's Vault store has `prefix: rotator`; the recipe's sink is apps/idp/api
    [item] = spec["data"]
    assert item["remoteRef"] == {"key": f"rotator/{README_SINK}", "property": "access_token"}
    # read Vault often enough that the mounted Secret changes long before the old token dies
    interval = seconds(spec["refreshInterval"])
    assert interval + KUBELET_SYNC_SECONDS <= OVERLAP_SECONDS / 4
    # and the README's arithmetic is the test's
    readme = " ".join(docs.page("consuming.md").split())
    left = int((OVERLAP_SECONDS - interval - KUBELET_SYNC_SECONDS) // 60)
    assert f"minutes ({OVERLAP_SECONDS:.0f} s) for a 1-hour token" in readme
    assert f"leaves the old token more than {left} minutes of life" in readme
