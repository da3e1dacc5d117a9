"""Alert tests never sleep: every retry pause goes through rotator.waits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rotator import waits


@pytest.fixture(autouse=True)
def _no_waiting() -> Iterator[None]:
    waits.set_testing(True)
    yield
    waits.set_testing(False)
