"""Shared pieces of the alert tests: fixed times, states, a controllable clock,
a recording channel, and a local HTTP server receiving webhooks."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rotator.alerts.channels import AlertChannelError
from rotator.alerts.rules import Alert, Kind, Severity
from rotator.config.models import AccountSettings, AlertsSettings, Sink
from rotator.secrets import Secret
from rotator.state import AccountState

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
ALERTS = AlertsSettings()  # warn at 7d, 3d, 1d; repeat 24h; 3 failures


def settings(provider: str = "oauth2", **kw: Any) -> AccountSettings:
    return AccountSettings(provider=provider, sinks=[Sink(store="files", path="x.json")], **kw)


def state(**kw: Any) -> AccountState:
    base: dict[str, Any] = {
        "account": "acme-fax",
        "provider": "faxplus",
        "access_token": Secret("at-not-secret-in-tests"),
        "issued_at": T0,
        "expires_at": T0 + timedelta(hours=1),
        "refresh_token": Secret("rt-not-secret-in-tests"),
        "next_refresh_at": T0 + timedelta(minutes=40),
    }
    base.update(kw)
    return AccountState(**base)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class Recorder:
    """A channel that keeps what it was given (real channels: test_alert_channels.py)."""

    def __init__(self, name: str = "recorder", fail: int = 0) -> None:
        self.name = name
        self.fail = fail
        self.got: list[Alert] = []

    def send(self, alert: Alert) -> None:
        if self.fail:
            self.fail -= 1
            raise AlertChannelError("refused on purpose")
        self.got.append(alert)


def firing(**kw: Any) -> Alert:
    base: dict[str, Any] = {
        "account": "acme-fax",
        "provider": "faxplus",
        "kind": Kind.REFRESH_TOKEN_EXPIRY,
        "status": "firing",
        "severity": Severity.WARNING,
        "summary": "refresh token of acme-fax expires in 3 days (2026-12-01 10:00 UTC); "
        "re-authorize with: rotator authorize acme-fax",
        "action": "rotator authorize acme-fax",
        "at": T0,
        "expires_at": datetime(2026, 12, 1, 10, tzinfo=UTC),
        "since": T0,
    }
    base.update(kw)
    return Alert(**base)


class Hook:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.event = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.got.append((self.path, json.loads(body)))
                hook.event.set()
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
