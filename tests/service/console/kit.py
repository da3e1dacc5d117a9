"""A console on a real listener, over the vendor emulators, for the console's tests.

:class:`Replica` is what the daemon wires (app.build_rotator, app.build_console,
the health server with the console's dispatch hook) without the scheduler: the
tests drive links and callbacks over HTTP and read the state store back. Two
replicas built on one store directory with one signing key are two daemons
sharing their state store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from rotator.config import Config, load_config
from rotator.rotation.rotator import Rotator
from rotator.secrets import Secret
from rotator.service.app import build_console, build_rotator
from rotator.service.console.routes import Console
from rotator.service.health import HealthServer
from rotator.service.metrics import Metrics, exposition_handler
from rotator.state import AccountState
from tests.fakes.faxplus import FaxPlusEmulator
from tests.fakes.oauth2 import OAuth2Emulator
from tests.support import leakcheck
from tests.support.net import free_port

__all__ = ["IDP_CLIENT", "IDP_SECRET", "SIGNING_KEY", "Replica", "Setup", "replica", "seed"]

IDP_CLIENT = "app"
IDP_SECRET = leakcheck.register("idp-Secret-for-console-tests", "client secret")
SIGNING_KEY = leakcheck.register("console-signing-key-of-the-tests-0123456789", "signing key")


@dataclass
class Setup:
    """Where the replicas' shared state lives, and the vendors."""

    tmp: Path
    fax: FaxPlusEmulator
    idp: OAuth2Emulator
    monkeypatch: pytest.MonkeyPatch

    def config(
        self, name: str, port: int, public_port: int, hook: str | None = None, notify: str = ""
    ) -> Path:
        """``notify``: YAML of the idp account's ``notify:`` list (flow style), if any."""
        self.monkeypatch.setenv("ROTATOR_TEST_CONSOLE_KEY", SIGNING_KEY)
        self.monkeypatch.setenv("FAXPLUS_SECRET", self.fax.clients[self.fax.client_id])
        self.monkeypatch.setenv("IDP_SECRET", IDP_SECRET)
        if hook is not None:
            self.monkeypatch.setenv("ROTATOR_TEST_HOOK", hook)
        channels = (
            "  channels: [{type: webhook, url: env:ROTATOR_TEST_HOOK, format: json}]\n"
            if hook
            else ""
        )
        path = self.tmp / f"{name}.yaml"
        path.write_text(
            f"""
server:
  listen: 127.0.0.1:{port}
  spool_dir: {self.tmp / ("spool-" + name)}
  console:
    public_url: http://127.0.0.1:{public_port}
    signing_key: env:ROTATOR_TEST_CONSOLE_KEY
stores:
  files: {{type: file, directory: {self.tmp / "store"}}}
alerts:
{channels or "  repeat: 24h"}
accounts:
  fp:
    provider: faxplus
    client_id: {self.fax.client_id}
    client_secret: env:FAXPLUS_SECRET
    enhanced_security: true
    token_url: {self.fax.token_url}
    authorize_url: {self.fax.authorize_url}
    api_base: {self.fax.api_base}
    sinks: [{{store: files, path: fp.json}}]
  idp:
    provider: oauth2
    token_url: {self.idp.token_url}
    authorize_url: {self.idp.authorize_url}
    client_id: {IDP_CLIENT}
    client_secret: env:IDP_SECRET
    scope: api
    sinks: [{{store: files, path: idp.json}}]
{"    notify: " + notify if notify else ""}
  cc:
    provider: oauth2
    grant: client_credentials
    token_url: {self.idp.token_url}
    client_id: {IDP_CLIENT}
    client_secret: env:IDP_SECRET
    sinks: [{{store: files, path: cc.json}}]
""",
            encoding="utf-8",
        )
        return path


@dataclass
class Replica:
    config: Config
    rotator: Rotator
    console: Console
    server: HealthServer

    @property
    def url(self) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}"

    def state(self, account: str) -> AccountState:
        return self.rotator.accounts[account].read_state()[0]

    def record(self, account: str) -> dict[str, object]:
        """The account's state record as stored (to prove a refusal changed nothing)."""
        found = self.rotator.accounts[account]
        record = found.state_store.read(found.state_path)
        return dict(record.data) if record is not None else {}

    def sink(self, name: str) -> dict[str, object]:
        data = json.loads((Path(self.config.stores["files"].directory) / name).read_text())
        assert isinstance(data, dict)
        return data

    def get(self, url: str) -> httpx.Response:
        with httpx.Client() as browser:
            answer = browser.get(url)
        leakcheck.log_file("console-page").write_text(
            f"{answer.status_code} {answer.headers.get('location', '')}\n{answer.text}"
        )
        return answer


@contextmanager
def replica(path: Path) -> Iterator[Replica]:
    config = load_config(str(path))
    rotator = build_rotator(config)
    console = build_console(config, rotator)
    assert console is not None
    assert config.server.listen is not None
    server = HealthServer(config.server.listen, exposition_handler(Metrics(), {}, console.handle))
    server.start()
    try:
        yield Replica(config, rotator, console, server)
    finally:
        server.stop()
        rotator.http.close()


def seed(
    replica: Replica,
    account: str,
    refresh: str,
    *,
    authorized: datetime | None = None,
    **kw: object,
) -> AccountState:
    """Write a grant into the account's state, as `rotator import` or a past authorize did."""
    found = replica.rotator.accounts[account]
    state = AccountState(
        account=account,
        provider=found.settings.provider,
        refresh_token=Secret(refresh),
        authorized_at=authorized,
        refresh_expires_at=authorized + timedelta(days=30) if authorized else None,
        **kw,  # type: ignore[arg-type]
    )
    record = found.state_store.read(found.state_path)
    found.state_store.write(
        found.state_path, state.to_record(), expected_version=record.version if record else None
    )
    return state


def ports() -> tuple[int, int]:
    return free_port(), free_port()
