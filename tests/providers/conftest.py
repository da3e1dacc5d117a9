from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator.config import AccountSettings, parse_config


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
    """As in production (rotator.observability): httpx logs URLs, which may carry tokens."""
    import logging

    saved = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    for name in saved:
        logging.getLogger(name).setLevel(logging.WARNING)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
