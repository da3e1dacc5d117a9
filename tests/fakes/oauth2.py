"""The OAuth2 emulator for tests: rotator's strict sandbox, with every token registered.

Every token it issues and every client secret it knows is registered with the
leak check, so a secret that reaches captured output fails the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rotator.demo.sandbox import Grant, Sandbox
from tests.support import leakcheck

__all__ = ["Grant", "OAuth2Emulator", "emulator"]


class OAuth2Emulator(Sandbox):
    def __init__(self, **kwargs: Any) -> None:
        # above rotator.tokens.MIN_LIFETIME unless a test asks for less (and sets
        # min_lifetime in its configuration)
        kwargs.setdefault("access_ttl", 300.0)
        super().__init__(on_issue=leakcheck.register, **kwargs)
        for secret in (*self.clients.values(), *self.users.values()):
            leakcheck.register(secret, "client secret")


@contextmanager
def emulator(**kwargs: Any) -> Iterator[OAuth2Emulator]:
    server = OAuth2Emulator(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
