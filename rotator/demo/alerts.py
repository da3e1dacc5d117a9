"""The demo's alert receiver: rotator's webhook alerts, printed in the terminal.

A newcomer running ``rotator demo`` has no Slack or pager; the demo points a
``webhook`` channel at this loopback receiver so that the alerts a real
deployment would send show up where the newcomer is looking, with the
console's re-authorization link to click. What it prints went through
:func:`rotator.commands.terminal.printable`: alert text quotes vendors.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from rotator.commands.terminal import printable

__all__ = ["AlertPrinter", "describe_alert"]


def describe_alert(payload: dict[str, Any]) -> list[str]:
    """The terminal lines for one webhook alert (JSON format)."""
    status = str(payload.get("status", "firing"))
    summary = printable(str(payload.get("summary", "")))
    if status == "resolved":
        return [f"rotator demo: RESOLVED {summary}"]
    lines = [f"rotator demo: ALERT ({printable(str(payload.get('severity', '')))}) {summary}"]
    link = payload.get("reauthorize_url")
    if link:
        lines.append(f"  re-authorize in your browser (no shell needed): {printable(str(link))}")
    return lines


class AlertPrinter:
    """A loopback webhook receiver; every alert it gets is printed to ``out``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.received: list[dict[str, Any]] = []
        printer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    payload = None
                ok = isinstance(payload, dict)
                self.send_response(204 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if ok:
                    printer.received.append(payload)
                    print("\n".join(describe_alert(payload)), file=printer.out, flush=True)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="demo-alerts", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
