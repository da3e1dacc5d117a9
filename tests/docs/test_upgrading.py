"""docs/upgrading.md holds true: the formats it names, the refusal it prints, the chart it
describes, and every command it shows.

- The state fields and the formats table are the code's (a release that changes a
  format, or the version, without a row here fails).
- The downgrade is played for real: a state in a newer format (as a newer release
  would write it) beside an ordinary account; ``rotator status`` prints what the page
  prints, ``rotator refresh`` exits 1, the daemon serves the other account, counts
  the refused one as ``transient_error`` and never rewrites its record.
- The spool check runs as printed (``/var/lib/rotator`` swapped for a directory).
- What the page says of the chart (Recreate, the claim kept, the data volume, the
  failing-rotations rule) is read from the chart rendered by the real Helm engine.

Not run, and why: the systemd blocks install into /opt and restart a unit with
sudo (tests/deploy/test_systemd_box.py runs that install in a real systemd), and
the Helm blocks need a cluster. Their ``rotator`` command lines are parsed by
rotator's own argument parser and their paths checked against the repository,
so a renamed option or chart fails here.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from rotator import __version__
from rotator.cli import build_parser
from rotator.errors import NewerFormat
from rotator.records import RECORD_FORMATS
from rotator.rotation.spool import SPOOL_FORMAT
from rotator.state import STATE_FORMAT, STATE_REQUIRES, AccountState
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import docs, leakcheck
from tests.support.helm import chart, render
from tests.support.net import free_port, wait_until
from tests.support.proc import ROOT, DaemonProcess, run_rotator

__all__ = ["chart"]  # the module fixture

PAGE = ROOT / "docs" / "upgrading.md"
CLIENT_SECRET = leakcheck.register("upgrading-s3cret-" + secrets.token_hex(6), "client secret")


def block(name: str) -> docs.Block:
    return docs.block(f"upgrading/{name}", PAGE)


def test_the_state_fields_are_what_rotator_writes() -> None:
    shown = dict(line.split(": ", 1) for line in block("state-fields").text.splitlines())
    record = AccountState(account="a").to_record()
    assert shown == {"format": record["format"], "requires": record["requires"]}
    assert (shown["format"], shown["requires"]) == (STATE_FORMAT, STATE_REQUIRES)


def test_the_formats_table_has_this_release_with_its_formats() -> None:
    text = PAGE.read_text(encoding="utf-8")
    row = r"^\| (\d+\.\d+\.\d+\S*) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$"
    rows = [(r[0], r[1], r[2]) for r in re.findall(row, text, re.MULTILINE)]
    records = [tuple(r[3:]) for r in re.findall(row, text, re.MULTILINE) if r[0] == __version__]
    assert (__version__, STATE_FORMAT, str(SPOOL_FORMAT)) in rows
    # the side records' columns, in the order of the header, are this release's formats
    header = re.search(r"^\| release \| state format \| spool format \| (.*) \|$", text, re.M)
    assert header is not None
    assert header.group(1).split(" | ") == [f"{k.kind}" for k in RECORD_FORMATS.values()]
    assert records == [tuple(str(k.format) for k in RECORD_FORMATS.values())]
    # the oldest release that reads the current state format is in the table
    oldest = STATE_REQUIRES.removeprefix("rotator>=")
    assert (oldest, STATE_FORMAT) in [(release, state) for release, state, _ in rows]


def test_the_quoted_refusal_of_a_newer_record_is_what_rotator_says() -> None:
    text = " ".join(PAGE.read_text(encoding="utf-8").split())
    [quoted] = re.findall(r"`(the alert record of idp-api [^`]*); \.\.\.`", text)
    record = RECORD_FORMATS["alerts"]
    with pytest.raises(NewerFormat) as refused:
        record.check("idp-api", {"format": str(record.format + 1)})
    assert str(refused.value).startswith(quoted + ";")


def write_config(tmp: Path, idp: OAuth2Emulator, listen: str) -> Path:
    secret = tmp / "client-secret"
    secret.write_text(CLIENT_SECRET)
    secret.chmod(0o600)
    config = tmp / "rotator.yaml"
    accounts = "".join(
        f"""\
  {name}:
    provider: oauth2
    token_url: {idp.token_url}
    client_id: app
    client_secret: file:{secret}
    sinks: [{{store: files, path: {name}.token, format: token}}]
"""
        for name in ("idp-api", "crm-api")
    )
    config.write_text(
        f"""\
server: {{listen: "{listen}", spool_dir: {tmp / "spool"}, shutdown_grace: 5s}}
stores:
  files: {{type: file, directory: {tmp / "store"}}}
defaults: {{retry_initial: 1s, retry_max: 2s}}
accounts:
{accounts}"""
    )
    return config


def test_a_downgrade_refuses_the_newer_account_prints_the_page_and_serves_the_others(
    tmp_path: Path,
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    with emulator(clients={"app": CLIENT_SECRET}) as idp:
        config = write_config(tmp_path, idp, listen)
        for name in ("idp-api", "crm-api"):
            seeded = run_rotator(
                ["import", "-c", str(config), name], stdin=idp.issue_grant("app") + "\n"
            )
            assert seeded.returncode == 0, seeded.stderr
        # what a newer release might write: its own fields, the refresh token renamed
        state = tmp_path / "store" / "state" / "idp-api"
        newer = {"format": "2", "requires": "rotator>=0.2.0", "account": "idp-api", "grant": "x"}
        state.write_text(json_text(newer))
        before = state.read_bytes()

        with DaemonProcess(config) as daemon:
            wait_until(
                (tmp_path / "store" / "crm-api.token").exists,
                timeout=30,
                what="the other account served",
            )
            daemon.wait_log("written by a newer rotator", count=2)  # retried, said again
            metrics = httpx.get(f"http://{listen}/metrics").text
            assert 'rotator_rotations_total{account="idp-api",result="transient_error"}' in metrics
            assert daemon.stop() == 0

        status = run_rotator(["status", "-c", str(config)])
        assert status.returncode == 1
        sample = block("refusal").text.splitlines()
        assert sample[0] == "$ rotator status"
        printed = [line for line in status.stdout.splitlines() if "idp-api" not in line]
        wanted = [line for line in sample[1:] if not line.startswith("error:")]
        docs.matches_output("\n".join(wanted), "\n".join(printed))
        refusal = "\n".join(line for line in sample if line.startswith("error:"))
        docs.matches_output(refusal, status.stderr)

        refreshed = run_rotator(["refresh", "-c", str(config), "idp-api"])
        assert refreshed.returncode == 1
        assert "upgrade rotator to at least 0.2.0" in refreshed.stderr

        assert state.read_bytes() == before
        assert not (tmp_path / "store" / "idp-api.token").exists()
        assert idp.token_calls == 1  # the other account's; none for the refused one


def json_text(data: dict[str, str]) -> str:
    return json.dumps(data, indent=2) + "\n"


@pytest.mark.parametrize("grants", [[], ["0123abcd.grant"]])
def test_the_spool_check_runs_as_printed(tmp_path: Path, grants: list[str]) -> None:
    spool = tmp_path / "var-lib-rotator" / "spool"
    spool.mkdir(parents=True)
    (spool / "spool.key").write_text("not a grant")
    for name in grants:
        (spool / name).write_bytes(b"RSP1")
    text = docs.substitute(block("spool-empty").text, {"/var/lib/rotator": str(spool.parent)})
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == (str(spool / grants[0]) if grants else "spool is empty")


@pytest.mark.parametrize(
    "name", ["systemd-install", "systemd-switch", "helm-upgrade", "helm-rollback"]
)
def test_the_commands_not_run_here_still_name_real_options_and_paths(name: str) -> None:
    lines = block(name).text.replace("\\\n", " ").splitlines()
    seen = set()
    for line in lines:
        for command in re.split(r"&&|\|\|", line):
            words = shlex.split(command, comments=True)
            # `sudo -u rotator /opt/rotator/bin/rotator ...`, `kubectl exec ... -- rotator ...`
            at = next(
                (
                    i
                    for i, w in enumerate(words)
                    if (w == "rotator" and (i == 0 or words[i - 1] == "--"))
                    or w.endswith("/bin/rotator")
                ),
                None,
            )
            if at is not None:
                build_parser().parse_args(words[at + 1 :])  # SystemExit(2) on a wrong option
                seen.add("rotator")
            if words[:1] == ["helm"]:
                assert words[1] in ("upgrade", "rollback", "history", "test"), words
                assert all((ROOT / w / "Chart.yaml").is_file() for w in words if w.startswith("./"))
                seen.add("helm")
    assert seen, f"{name}: no rotator or helm command found"


def test_what_the_page_says_of_the_chart(chart: Any) -> None:
    values = {"persistence": {"enabled": True}, "prometheusRule": {"enabled": True}}
    docs_ = render(chart, values)["docs"]
    [deployment] = [d for d in docs_ if d["kind"] == "Deployment"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    [claim] = [d for d in docs_ if d["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pod = deployment["spec"]["template"]["spec"]
    [main] = [c for c in pod["containers"] if c["name"] == "rotator"]
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = volumes[mounts["/var/lib/rotator"]]
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in main.get("env", [])}
    assert env["STATE_DIRECTORY"] == "/var/lib/rotator"  # the spool: /var/lib/rotator/spool
    [rule] = [d for d in docs_ if d["kind"] == "PrometheusRule"]
    failing = next(
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "RotatorRotationsFailing"
    )
    assert "transient_error" in failing["expr"] and "[30m]" in failing["expr"]
    without = render(chart, {})["docs"]
    [deployment] = [d for d in without if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert any("emptyDir" in v for v in pod["volumes"] if v["name"] == "data")
