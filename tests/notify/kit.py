"""The real receivers of the notify tests: a loopback HTTP server that verifies every
POST with the ``standardwebhooks`` package, and a child process that dumps its argv,
environment and stdin.

Everything a receiver is given is also written under the suite's
:data:`~tests.support.leakcheck.LOG_DIR` (tests/support/alertkit.py ``capture``), so
the session-end leak check reads webhook bodies and headers, argv, environments and
stdin as it reads log lines.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from rotator.config.models import AccountSettings, ExecNotify, Sink, WebhookNotify
from rotator.notify import Event
from rotator.secrets import Secret
from tests.support import leakcheck
from tests.support.alertkit import capture
from tests.support.net import LoopbackHTTPServer

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
#: the receiver's Standard Webhooks secret (a credential: leak-checked)
HOOK_SECRET = leakcheck.register(
    "whsec_" + base64.b64encode(b"notify-tests-key-0123456789abcdef").decode(),
    "webhook signing secret",
)
TOKEN = leakcheck.register("at-notify-tests-9f8e7d6c5b4a", "access token")


def settings(*notify: ExecNotify | WebhookNotify) -> AccountSettings:
    return AccountSettings(
        provider="oauth2",
        sinks=[Sink(store="files", path="acme.json"), Sink(store="vault", path="apps/acme")],
        notify=list(notify),
    )


def event(kind: str = "rotated", *, token: str | None = TOKEN, **kw: Any) -> Event:
    base: dict[str, Any] = {
        "type": kind,
        "account": "acme",
        "id": "msg_0123456789abcdef0123456789abcdef",
        "at": T0,
        "expires_at": T0 + timedelta(hours=1),
        "sinks": ("files:acme.json", "vault:apps/acme"),
        "token": Secret(token) if token else None,
    }
    base.update(kw)
    return Event(**base)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: dict[str, Any]
    verified: bool


@dataclass
class Receiver:
    """A webhook receiver on loopback; ``statuses`` are answered in turn, then 204."""

    secret: str = field(default=HOOK_SECRET, repr=False)  # a test failure prints the repr
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    #: sent as ``Retry-After`` with every answer of 400 or more
    retry_after: str | None = None
    got: list[Delivery] = field(default_factory=list, repr=False)
    arrived: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                capture("notify-webhook", json.dumps(headers) + "\n" + raw.decode())
                try:
                    Webhook(receiver.secret).verify(raw, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                receiver.got.append(Delivery(headers, json.loads(raw), verified))
                receiver.arrived.set()
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                if receiver.retry_after is not None and status >= 400:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.http = LoopbackHTTPServer(Handler, name="notify-receiver", poll=0.05)
        self.url = self.http.url + "/hooks/rotator"
        self.http.start()

    def close(self) -> None:
        self.http.stop()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [d.body for d in self.got if kind is None or d.body["data"]["event"] == kind]


#: a child that appends one JSON line: its argv, environment and stdin
_DUMP = (
    "import json, os, sys; "
    "line = json.dumps({'argv': sys.argv, 'env': dict(os.environ), "
    "'stdin': sys.stdin.read()}); "
    "open(os.environ.get('DUMP_TO') or sys.argv[1], 'a').write(line + chr(10))"
)


class Child:
    """argv of a real program that records every run in ``runs.jsonl``."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.file = directory / "runs.jsonl"
        self.argv = [sys.executable, "-c", _DUMP, str(self.file), *extra]

    def runs(self, *, stdin_has_token: bool = False) -> list[dict[str, Any]]:
        """Every run; ``stdin_has_token`` for ``token: stdin``, whose stdin is then left
        out of the leak check (it holds the token on purpose), argv and env are not."""
        if not self.file.exists():
            return []
        runs = [json.loads(line) for line in self.file.read_text().splitlines() if line]
        shown = [{**run, "stdin": ""} if stdin_has_token else run for run in runs]
        capture("notify-exec-runs", "\n".join(json.dumps(run) for run in shown))
        return runs


def exec_entry(argv: Sequence[str], **kw: Any) -> ExecNotify:
    return ExecNotify(type="exec", argv=list(argv), **kw)


def webhook_entry(env_url: str, env_secret: str, **kw: Any) -> WebhookNotify:
    from rotator.secrets import parse_ref

    return WebhookNotify(
        type="webhook", url=parse_ref(f"env:{env_url}"), secret=parse_ref(f"env:{env_secret}"), **kw
    )
