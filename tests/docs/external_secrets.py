"""External Secrets Operator manifests, validated against ESO's own CRD schemas.

kubernetes-validate ships the core kinds only. The npm package
``@kubernetes-models/external-secrets`` (MIT, generated from ESO's CRDs) ships
each CRD version's OpenAPI schema compiled into a validator; :func:`validate`
installs it once with npm into the suite's cache (the npm registry is one of
the registries CI reaches; ``node`` is on the machine) and runs each manifest
through the validator of its ``apiVersion`` and ``kind``. It checks types,
enums, patterns and required fields; like the API server without strict field
validation, it does not refuse a field the CRD does not define.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.install import CACHE

__all__ = ["PACKAGE", "validate"]

PACKAGE = "@kubernetes-models/external-secrets@2.0.0"

_VALIDATE = """
import { readFileSync } from "node:fs";
const results = [];
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  try {
    const [group, version] = String(doc.apiVersion).split("/");
    const model = await import(
      `@kubernetes-models/external-secrets/${group}/${version}/${doc.kind}`);
    new model[doc.kind](doc).validate();
    results.push(null);
  } catch (error) {
    results.push(String(error.message).slice(0, 2000));
  }
}
console.log(JSON.stringify(results));
"""


def _installed() -> Path:
    """The package under the suite's cache, installed by npm once."""
    target = CACHE / ("npm-" + PACKAGE.lstrip("@").replace("/", "-").replace("@", "-"))
    if (target / ".complete").exists():
        return target
    npm = shutil.which("npm")
    assert npm, "npm is missing: the external-secrets schemas come from the npm registry"
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(partial),
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
            PACKAGE,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm install {PACKAGE} failed:\n{result.stderr[-3000:]}"
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def validate(docs: Sequence[dict[str, Any]]) -> list[str | None]:
    """Per manifest: None if ESO's schema accepts it, else the validator's message."""
    node = shutil.which("node")
    assert node, "node is missing: the external-secrets validators are JavaScript"
    result = subprocess.run(
        [node, "--input-type=module", "-e", _VALIDATE],
        input=json.dumps(list(docs)),
        cwd=_installed(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer: list[str | None] = json.loads(result.stdout)
    return answer
