"""The daemon wires the console: its routes on server.listen, its links in the alerts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from rotator.service.app import build_service
from tests.fakes.consent import click
from tests.service.console.kit import Setup, ports
from tests.support.net import wait_until


def test_the_daemon_serves_the_console_and_links_its_alerts(setup: Setup) -> None:
    port, _ = ports()
    service = build_service(str(setup.config("daemon", port, port)))
    monitor = service.monitor
    assert monitor.server is not None
    link_for = monitor.dispatcher.link_for
    assert link_for is not None
    monitor.server.start()
    try:
        link = link_for("idp")
        assert link is not None and link.startswith(f"http://127.0.0.1:{port}/authorize/idp?")
        assert link_for("cc") is None
        with httpx.Client() as browser:
            done = click(browser, link)
            assert done.status_code == 200, done.text
            # the probes and /metrics are still the server's own
            assert browser.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        state, _ = service.daemon.read_state(service.daemon.accounts["idp"])
        assert state.refresh_token is not None
    finally:
        monitor.server.stop()
        service.daemon.rotator.http.close()


def test_a_grant_from_a_console_link_tells_the_consumers(setup: Setup, tmp_path: Path) -> None:
    port, _ = ports()
    events = tmp_path / "events"
    program = "import os, sys; open(sys.argv[1], 'a').write(os.environ['ROTATOR_EVENT'] + chr(10))"
    notify = json.dumps(
        [
            {
                "type": "exec",
                "argv": [sys.executable, "-c", program, str(events)],
                "events": ["reauthorized", "rotated"],
            }
        ]
    )
    service = build_service(str(setup.config("notify", port, port, notify=notify)))
    monitor = service.monitor
    assert monitor.server is not None and monitor.dispatcher.link_for is not None
    monitor.server.start()
    try:
        link = monitor.dispatcher.link_for("idp")
        assert link is not None
        with httpx.Client() as browser:
            assert click(browser, link).status_code == 200
        wait_until(
            lambda: events.exists() and len(events.read_text().split()) == 2,
            timeout=20,
            what="the reauthorized and rotated events",
        )
    finally:
        monitor.server.stop()
        service.daemon.rotator.http.close()
    assert set(events.read_text().split()) == {"reauthorized", "rotated"}
