"""``rotator refresh`` (rotator/commands/refresh.py): the wait for another worker's lease.

The wait goes through a Waiter: a stopped waiter ends it at once, and the wait
never outlasts ``--wait``.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from rotator.commands.refresh import refresh
from rotator.config import Config, load_config
from rotator.service.app import open_stores
from rotator.state import AccountState
from rotator.waits import Waiter
from tests.support import leakcheck

pytestmark = pytest.mark.timeout(60)

SECRET = leakcheck.register("refresh-cmd-client-secret-31e", "client secret")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """One account whose lease another host holds for the next hour."""
    monkeypatch.setenv("REFRESH_CMD_SECRET", SECRET)
    raw = {
        "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
        "accounts": {
            "idp-api": {
                "provider": "oauth2",
                "grant": "client_credentials",
                "token_url": "http://127.0.0.1:9/token",
                "client_id": "svc",
                "client_secret": "env:REFRESH_CMD_SECRET",
                "sinks": [{"store": "files", "path": "idp.json"}],
            }
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(raw))
    loaded = load_config(str(path))
    held = AccountState(
        "idp-api",
        provider="oauth2",
        lease_owner="elsewhere/pid:[1]/4242:abcd",
        lease_until=datetime.now(UTC) + timedelta(hours=1),
    )
    open_stores(loaded)["files"].write("state/idp-api", held.to_record(), expected_version=None)
    return loaded


def test_a_held_lease_is_waited_for_up_to_wait_then_refused(config: Config) -> None:
    err = io.StringIO()
    started = time.monotonic()
    assert refresh(config, "idp-api", wait=0.3, err=err, out=io.StringIO()) == 1
    took = time.monotonic() - started
    assert 0.3 <= took < 10
    assert "another worker holds the lease; try again later" in err.getvalue()
    assert "--wait SECONDS" in err.getvalue()


def test_a_stopped_waiter_ends_the_wait_at_once(config: Config) -> None:
    waiter = Waiter()
    waiter.stop()
    err = io.StringIO()
    started = time.monotonic()
    assert refresh(config, "idp-api", wait=60, waiter=waiter, err=err, out=io.StringIO()) == 1
    assert time.monotonic() - started < 10  # not the 60 s it was allowed
    assert "holds the lease" in err.getvalue()
