from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.faxplus import FaxPlusEmulator
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.fakes.vendorhttp import running
from tests.service.console.kit import IDP_CLIENT, IDP_SECRET, Replica, Setup, ports, replica


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    with (
        running(FaxPlusEmulator(enhanced=True, rotate_refresh=True)) as fax,
        emulator(clients={IDP_CLIENT: IDP_SECRET}, require_pkce=True, rotate_refresh=True) as idp,
    ):
        yield Setup(tmp_path, fax, idp, monkeypatch)


@pytest.fixture
def one(setup: Setup) -> Iterator[Replica]:
    port, _ = ports()
    with replica(setup.config("one", port, port)) as rep:
        yield rep


__all__ = ["OAuth2Emulator"]
