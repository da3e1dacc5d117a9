"""Shared pieces of the alert tests: fixed times, states, a controllable clock,
a recording channel, and the real receivers: a loopback HTTP server for webhooks,
an aiosmtpd mailbox, and a child process that dumps its stdin and environment.

Everything a real receiver is given is also written under the suite's
:data:`~tests.support.leakcheck.LOG_DIR`, so the session-end leak check covers
alert payloads, e-mail bodies and a command's stdin and environment as it covers
log lines.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from rotator.alerts.channels import AlertChannelError
from rotator.alerts.dispatch import Dispatcher, StoreAlertMemory
from rotator.alerts.rules import Alert, Kind, Severity
from rotator.backends.base import SecretStore
from rotator.config.models import AccountSettings, AlertsSettings, Sink
from rotator.secrets import Secret
from rotator.state import AccountState
from tests.support import leakcheck
from tests.support.net import LoopbackHTTPServer

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
ALERTS = AlertsSettings()  # warn at 7d, 3d, 1d; repeat 24h; 3 failures


def dispatcher(store: SecretStore, clock: Clock, *channels: Any) -> Dispatcher:
    """A dispatcher remembering in ``store`` (as the daemon does), with default alerts."""
    return Dispatcher(
        alerts=ALERTS,
        channels=list(channels),
        memory=StoreAlertMemory(lambda account: store),
        clock=clock,
    )


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


def capture(name: str, text: str) -> None:
    """Hand what a receiver was given to the suite-wide leak check."""
    leakcheck.log_file(name).write_text(text, encoding="utf-8")


class Hook:
    """A loopback HTTP server taking webhook POSTs (path and body)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        #: sent as ``Retry-After`` with an answer of 400 or more (Slack's 429 carries one)
        self.retry_after: str | None = None
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[str] = []
        self.event = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                # the path is left out: in these tests it is the registered credential
                capture("alert-webhook-body", body.decode())
                hook.raw.append(body.decode())
                hook.got.append((self.path, json.loads(body)))
                hook.event.set()
                self.send_response(hook.status)
                if hook.retry_after is not None and hook.status >= 400:
                    self.send_header("Retry-After", hook.retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._http = LoopbackHTTPServer(Handler)
        self.port = self._http.port
        self._http.start()

    def close(self) -> None:
        self._http.stop()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def mail_text(content: bytes) -> str:
    """An e-mail as a reader sees it: its headers, then its decoded body."""
    import email
    import email.policy

    message = email.message_from_bytes(content, policy=email.policy.default)
    headers = "".join(f"{key}: {value}\n" for key, value in message.items())
    body = message.get_content() if message.get_content_maintype() == "text" else ""
    return f"{headers}\n{body}"


class Mailbox:
    """An aiosmtpd handler keeping every envelope (its content is leak-checked)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.event = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # decoded: quoted-printable folds long lines with "=", which would split a
        # secret in the raw message and hide it from a search
        capture("alert-email", mail_text(envelope.content))
        self.messages.append(envelope)
        self.event.set()
        return "250 OK"


#: a child that writes what it was given: stdin to argv[1], its environment to argv[2]
_DUMP = (
    "import json, os, pathlib, sys; "
    "pathlib.Path(sys.argv[1]).write_bytes(sys.stdin.buffer.read()); "
    "pathlib.Path(sys.argv[2]).write_text(json.dumps(dict(os.environ)))"
)


class Child:
    """The argv of a real child process that dumps its stdin and environment."""

    def __init__(self, directory: Path) -> None:
        self.stdin_file = directory / "child-stdin.json"
        self.env_file = directory / "child-env.json"
        self.argv = [sys.executable, "-c", _DUMP, str(self.stdin_file), str(self.env_file)]

    def stdin(self) -> dict[str, Any]:
        text = self.stdin_file.read_text()
        capture("alert-command-stdin", text)
        return dict(json.loads(text))

    def env(self, *, leak_checked: bool = True) -> dict[str, str]:
        """The child's environment; ``leak_checked=False`` for a test that hands a
        registered secret over on purpose (``pass_env``)."""
        text = self.env_file.read_text()
        if leak_checked:
            capture("alert-command-env", text)
        return dict(json.loads(text))
