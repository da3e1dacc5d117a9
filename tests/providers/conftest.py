from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator.config import AccountSettings, parse_config
from tests.fakes.vendorhttp import quiet_http_libraries


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False) as c:
        yield c


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Any]:
    """Validate one account through the real configuration loader."""

    def build(**body: Any) -> AccountSettings:
        raw = {
            "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
            "accounts": {"acct": {**body, "sinks": [{"store": "files", "path": "acct.json"}]}},
        }
        return parse_config(yaml.safe_dump(raw)).accounts["acct"]

    return build


@pytest.fixture(autouse=True)
def _quiet_http_libraries() -> Iterator[None]:
    with quiet_http_libraries():
        yield


@pytest.fixture
def rotator_for(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A real Rotator over a file store for one account ``acct`` (sink ``acct.json``)."""
    from rotator.http import HttpClients
    from rotator.rotation.accounts import build_accounts
    from rotator.rotation.rotator import Rotator
    from rotator.service.app import open_stores

    made: list[Any] = []

    def build(**body: Any) -> tuple[Any, Any]:
        raw = {
            "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
            "accounts": {"acct": {**body, "sinks": [{"store": "files", "path": "acct.json"}]}},
        }
        config = parse_config(yaml.safe_dump(raw))
        stores = open_stores(config)
        rotator = Rotator(accounts=build_accounts(config, stores), http=HttpClients())
        made.append(rotator)
        return rotator, stores["files"]

    yield build
    for rotator in made:
        rotator.http.close()
