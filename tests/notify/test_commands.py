"""The one-off commands tell consumers before they exit: ``rotator import`` says
``reauthorized``, ``rotator refresh`` says ``rotated`` (and ``recovered`` for a stopped
account), against the OAuth2 emulator and the verifying receiver."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from rotator.commands.refresh import refresh
from rotator.commands.seed import seed
from rotator.config import Config, load_config
from rotator.service.app import open_stores
from rotator.state import AccountState
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.notify.kit import Receiver
from tests.support import leakcheck

pytestmark = pytest.mark.timeout(60)

SECRET = leakcheck.register("notify-cmd-client-secret-8a7", "client secret")


@pytest.fixture
def server() -> Iterator[OAuth2Emulator]:
    with emulator(clients={"app": SECRET}) as srv:
        yield srv


@pytest.fixture
def config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: OAuth2Emulator, receiver: Receiver
) -> Config:
    monkeypatch.setenv("NOTIFY_CMD_SECRET", SECRET)
    raw = {
        "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
        "accounts": {
            "acme": {
                "provider": "oauth2",
                "token_url": server.url,
                "client_id": "app",
                "client_secret": "env:NOTIFY_CMD_SECRET",
                "sinks": [{"store": "files", "path": "acme.json"}],
                "notify": [{"type": "webhook", "url": "env:HOOK_URL", "secret": "env:HOOK_SECRET"}],
            }
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(str(path))


def quiet() -> dict[str, io.StringIO]:
    return {"out": io.StringIO(), "err": io.StringIO()}


def test_import_then_refresh_tell_reauthorized_then_rotated(
    config: Config, server: OAuth2Emulator, receiver: Receiver
) -> None:
    assert seed(config, "acme", server.issue_grant("app"), **quiet()) == 0
    assert [d.body["data"]["event"] for d in receiver.got] == ["reauthorized"]
    assert refresh(config, "acme", **quiet()) == 0
    assert refresh(config, "acme", **quiet()) == 0
    kinds = [d.body["data"]["event"] for d in receiver.got]
    assert kinds == ["reauthorized", "rotated", "rotated"]
    assert len({d.headers["webhook-id"] for d in receiver.got}) == 3
    assert all(d.verified for d in receiver.got)


def test_a_manual_refresh_of_a_stopped_account_tells_recovered(
    config: Config, server: OAuth2Emulator, receiver: Receiver
) -> None:
    assert seed(config, "acme", server.issue_grant("app"), **quiet()) == 0
    store = open_stores(config)["files"]
    record = store.read("state/acme")
    assert record is not None
    stopped = replace(
        AccountState.from_record("acme", record.data), failed=True, last_error_code="x"
    )
    store.write("state/acme", stopped.to_record(), expected_version=record.version)
    assert refresh(config, "acme", **quiet()) == 0
    kinds = [d.body["data"]["event"] for d in receiver.got]
    assert kinds == ["reauthorized", "rotated", "recovered"]


def test_a_receiver_that_is_down_does_not_fail_the_command(
    config: Config, server: OAuth2Emulator, receiver: Receiver
) -> None:
    receiver.statuses = [500] * 10
    assert seed(config, "acme", server.issue_grant("app"), **quiet()) == 0
    assert refresh(config, "acme", **quiet()) == 0
    assert len(receiver.got) == 10  # five attempts each, then the command went on


def test_authorize_tells_reauthorized(tmp_path: Path, receiver: Receiver) -> None:
    """``rotator authorize`` (a process, against the Fax.Plus emulator) before it exits."""
    import httpx

    from tests.commands.test_authorize import (
        _redirect_without_state,
        run_with_code,
        secret_env,
        write_config,
    )
    from tests.fakes.faxplus import FaxPlusEmulator
    from tests.fakes.vendorhttp import running
    from tests.notify.kit import HOOK_SECRET

    hook = {"type": "webhook", "url": "env:HOOK_URL", "secret": "env:HOOK_SECRET"}
    with running(FaxPlusEmulator()) as vendor:
        path = write_config(tmp_path, vendor, "https://app.example.com/cb", notify=[hook])
        code = httpx.URL(_redirect_without_state(vendor, "https://app.example.com/cb")).params[
            "code"
        ]
        env = {**secret_env(vendor), "HOOK_URL": receiver.url, "HOOK_SECRET": HOOK_SECRET}
        done = run_with_code(
            ["authorize", "acme-fax", "-c", str(path), "--code", code, "--no-verify"], code, env
        )
    assert done.returncode == 0, done.stderr
    [delivery] = receiver.got
    assert delivery.verified and delivery.body["data"]["event"] == "reauthorized"
    assert delivery.body["data"]["account"] == "acme-fax"
