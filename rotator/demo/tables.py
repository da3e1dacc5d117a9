"""The sandbox's records and its HTTP server class (rotator/demo/sandbox.py).

A grant and its spent refresh tokens, an injected failure, and a threading
server that does not print a traceback for a client that went away.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

__all__ = ["Grant", "Injected", "SandboxServer"]


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-reply (a killed daemon, a timed-out call) is
        # routine here; anything else still prints its traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class Grant:
    grant_id: str
    client_id: str
    current_refresh: str
    spent: set[str] = field(default_factory=set)
    revoked: bool = False
    refreshes: int = 0
    previous: str = ""
    previous_spent_at: float = 0.0


@dataclass
class Injected:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
