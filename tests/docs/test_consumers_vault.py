"""README "Consuming tokens": the OpenBao/Vault recipes, run as printed against a real rotator.

- ``consumer/hvac``: the Python class reads the Vault sink with a token under
  the README's read-only consumer policy, keeps the token, and reads it again
  only when the API answers 401 (the emulated API revokes the old token).
- ``consumer/vault-agent``: ``bao agent`` with the README's configuration
  (addresses and paths swapped for the test's, the 30 s re-read interval for
  2 s) renders the token a running ``rotator run`` published and runs its
  ``exec`` again after a rotation.

Tokens are compared by label (T1, T2: the order the vendor issued them), so a
failing assertion never prints one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import hvac
import pytest

from tests.docs.conftest import README_SINK, Published, consumer_policy, published
from tests.fakes.api import ProtectedAPI
from tests.fakes.vendorhttp import running
from tests.support import docs, leakcheck
from tests.support.net import wait_until
from tests.support.proc import DaemonProcess
from tests.support.servers import MotoServer, OpenBao, bao_binary


def consumer_token(bao: OpenBao) -> str:
    policy = consumer_policy(bao, docs.block("consumer/policy").text)
    return bao.create_token([policy])


def test_hvac_recipe_reads_once_and_again_on_401(
    pub: Published, bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(ProtectedAPI(accepts=pub.server.access_valid)) as api:
        source = docs.substitute(
            docs.block("consumer/hvac").text,
            {"https://api.example.com": api.base_url, README_SINK: pub.sink},
        )
        monkeypatch.setenv("VAULT_ADDR", bao.url)
        monkeypatch.setenv("VAULT_TOKEN", consumer_token(bao))
        namespace: dict[str, object] = {"__name__": "readme_hvac"}
        exec(compile(source, "docs/consuming.md:consumer/hvac", "exec"), namespace)  # noqa: S102

        first = pub.rotate()
        client = namespace["IdpApi"]()  # type: ignore[operator]
        assert client.get("/v1/me").json() == {"path": "/v1/me", "ok": True}

        second = pub.rotate()
        api.revoke(first)  # the vendor revokes the previous token when it issues the next
        assert client.get("/v1/me").status_code == 200
        assert client.get("/v1/other").status_code == 200

        calls = [(pub.label(token), status) for token, status in api.calls]
        assert calls == [("T1", 200), ("T1", 401), ("T2", 200), ("T2", 200)]
        assert pub.label(second) == "T2"

        # the consumer's token reads the sinks only, never the state (refresh tokens)
        with pytest.raises(hvac.exceptions.Forbidden):
            client.vault.secrets.kv.v2.read_secret_version(
                mount_point="secret",
                path=f"rotator/state/{pub.account}",
                raise_on_deleted_version=True,
            )


STAND_IN_SYSTEMCTL = """\
#!/bin/sh
# stands in for systemctl: records its arguments and the token it would reload with
printf '%s %s\\n' "$*" "$(cat '{token}')" >> '{log}'
"""


RENDER_INTERVAL = "2s"


@pytest.mark.slow
def test_vault_agent_recipe_renders_and_execs_after_each_rotation(
    tmp_path: Path, bao: OpenBao, moto: MotoServer
) -> None:
    # tokens live 12 s: the daemon rotates every ~6 s; the agent re-reads every 2 s
    # (RENDER_INTERVAL), so it sees each token and renders the unchanged one again
    with published(tmp_path, bao, moto, access_ttl=12.0) as pub:
        run_agent_against_daemon(pub, bao, tmp_path)


def run_agent_against_daemon(pub: Published, bao: OpenBao, tmp: Path) -> None:
    policy = consumer_policy(bao, docs.block("consumer/policy").text)
    role_id, secret_id = bao.approle("myapp-" + pub.account, [policy])
    etc = tmp / "etc-myapp"
    etc.mkdir()
    (etc / "role-id").write_text(role_id)
    (etc / "secret-id").write_text(secret_id)
    rendered = tmp / "run-myapp" / "token"
    exec_log = tmp / "exec.log"
    systemctl = tmp / "bin" / "systemctl"
    systemctl.parent.mkdir()
    systemctl.write_text(STAND_IN_SYSTEMCTL.format(token=rendered, log=exec_log))
    systemctl.chmod(0o755)
    config = tmp / "agent.hcl"
    config.write_text(
        docs.substitute(
            docs.block("consumer/vault-agent").text,
            {
                "https://openbao.example.com:8200": bao.url,
                "/etc/myapp/role-id": str(etc / "role-id"),
                "/etc/myapp/secret-id": str(etc / "secret-id"),
                "/run/myapp/token": str(rendered),
                "/usr/bin/systemctl": str(systemctl),
                README_SINK: pub.sink,
                # the documented 30 s is the wait a consumer tunes; the test waits for
                # a re-read after a rotation, so a shorter one proves the same sooner
                'static_secret_render_interval = "30s"': (
                    f'static_secret_render_interval = "{RENDER_INTERVAL}"'
                ),
            },
        )
    )

    def execs() -> list[tuple[str, str]]:
        if not exec_log.exists():
            return []
        lines = exec_log.read_text().splitlines()
        return [(line.rpartition(" ")[0], pub.label(line.rpartition(" ")[2])) for line in lines]

    with DaemonProcess(pub.config, env=pub.env) as daemon:
        first = wait_until(
            lambda: pub.issued and pub.vault_token(missing=""),
            timeout=30,
            what="the first token in Vault",
        )
        agent_log = leakcheck.log_file("bao-agent")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        with open(agent_log, "wb") as log:
            agent = subprocess.Popen(
                [bao_binary(), "agent", f"-config={config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, "HOME": str(tmp)},
            )
            try:
                wait_until(execs, timeout=30, what="the agent's first render and exec")
                # the agent renders what Vault holds: T1, or a later one on a slow machine
                # (a stalled test may see a second exec already: the first is checked)
                argv, label = execs()[0]
                assert argv == "try-reload-or-restart myapp.service"
                assert label != "unknown"
                assert int(label[1:]) >= int(pub.label(first)[1:])
                assert oct(rendered.stat().st_mode & 0o777) == "0o600"
                # the daemon rotates on its own; within one render interval the agent
                # renders a newer token and runs the exec again (re-renders of the
                # unchanged token in between run nothing: checked below)
                wait_until(
                    lambda: len({label for _, label in execs()}) >= 2,
                    timeout=90,
                    what="the agent's exec after a rotation",
                )
            finally:
                agent.terminate()
                agent.wait(timeout=10)
        assert daemon.stop() == 0
    labels = [label for _, label in execs()]
    assert "unknown" not in labels
    assert labels == sorted(labels, key=lambda label: int(label[1:]))  # only ever newer
    assert len(labels) == len(set(labels))  # an exec per change, none for an unchanged render
    # what the consumer reloaded with is what the agent rendered
    assert pub.label(rendered.read_text()) == labels[-1]
    assert pub.server.access_valid(rendered.read_text())
