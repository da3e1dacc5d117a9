"""A protected API for consumer tests: answers a valid Bearer token, 401 for any other.

Consumers of rotator's sinks call an API with the token they read; the consumer
recipes in the README must survive a vendor that revokes the previous access
token as soon as it issues the next (RFC 6750: ``401`` with ``WWW-Authenticate:
Bearer error="invalid_token"``). ``accepts`` decides which tokens are valid
(typically the token emulator's own check); :meth:`ProtectedAPI.revoke` ends one.
Every call is recorded as (token, status) for the test to read, never printed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tests.fakes.vendorhttp import Reply, Request, VendorServer

__all__ = ["ProtectedAPI"]


class ProtectedAPI(VendorServer):
    name = "api"

    def __init__(self, accepts: Callable[[str], bool]) -> None:
        super().__init__()
        self.accepts = accepts
        self.revoked: set[str] = set()
        self.calls: list[tuple[str, int]] = []
        self._calls_lock = threading.Lock()

    def revoke(self, token: str) -> None:
        with self._calls_lock:
            self.revoked.add(token)

    def route(self, request: Request) -> Reply:
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        with self._calls_lock:
            valid = bool(token) and token not in self.revoked and self.accepts(token)
            status = 200 if valid else 401
            self.calls.append((token, status))
        if valid:
            return Reply(200, {"path": request.path, "ok": True})
        return Reply(
            401,
            {"error": "invalid_token"},
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
