"""Shared HTTP clients: one pooled ``httpx.Client`` per TLS setting, reused by all rotations."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpClients"]

_log = structlog.get_logger("rotator.http")


class HttpClients:
    """Hands out pooled clients keyed by (verify, ca_bundle); thread-safe."""

    def __init__(self, *, max_connections: int = 32, user_agent: str = "rotator") -> None:
        self._clients: dict[tuple[bool, str], httpx.Client] = {}
        self._lock = threading.Lock()
        self._max_connections = max_connections
        self._user_agent = user_agent

    def get(self, *, verify: bool = True, ca_bundle: Path | None = None) -> httpx.Client:
        key = (verify, str(ca_bundle or ""))
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                import ssl

                import httpx

                tls: bool | ssl.SSLContext = verify
                if verify and ca_bundle is not None:
                    tls = ssl.create_default_context(cafile=str(ca_bundle))
                client = httpx.Client(
                    verify=tls,
                    follow_redirects=False,
                    trust_env=True,
                    headers={"User-Agent": self._user_agent},
                    limits=httpx.Limits(
                        max_connections=self._max_connections,
                        max_keepalive_connections=self._max_connections,
                        keepalive_expiry=30,
                    ),
                )
                self._clients[key] = client
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
