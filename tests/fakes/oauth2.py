"""The OAuth2 emulator for tests: rotator's strict sandbox, with every token registered.

Every token it issues and every client secret it knows is registered with the
leak check, so a secret that reaches captured output fails the suite.

Knobs for politeness (tests/proofs/test_politeness.py): ``calls`` records when
each token request arrived and which refresh token it spent; ``vendor_limit``
makes the emulator enforce a rate of its own, as a vendor does: a request over
it is answered ``429`` with ``Retry-After`` (and counted in ``over_limit``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

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
        #: (time.monotonic() at arrival, the refresh token sent or "") per token request
        self.calls: list[tuple[float, str]] = []
        self.over_limit = 0
        self._limit: tuple[float, float, str] | None = None
        self._tat = 0.0

    def vendor_limit(self, per_second: float, burst: int, retry_after: str = "1") -> None:
        """Answer 429 + Retry-After to requests over ``per_second`` (``burst`` at once)."""
        with self.lock:
            self._limit = (per_second, burst, retry_after)

    def _handle_token(self, handler: BaseHTTPRequestHandler, raw: bytes, query_string: str) -> None:
        now = time.monotonic()
        params = dict(parse_qsl(raw.decode("utf-8", "replace")))
        params.update(parse_qsl(query_string))
        with self.lock:
            self.calls.append((now, params.get("refresh_token", "")))
            over = False
            if self._limit is not None:  # GCRA, as rotator's own gate (independent code)
                per_second, burst, retry_after = self._limit
                interval = 1 / per_second
                if now < self._tat - (burst - 1) * interval:
                    over = True
                    self.over_limit += 1
                else:
                    self._tat = max(self._tat, now) + interval
        if over:
            self._error(
                handler, 429, "slow_down", "rate limit", headers={"Retry-After": retry_after}
            )
            return
        super()._handle_token(handler, raw, query_string)


@contextmanager
def emulator(**kwargs: Any) -> Iterator[OAuth2Emulator]:
    server = OAuth2Emulator(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
