"""The daemon wires the console: its routes on server.listen, its links in the alerts."""

from __future__ import annotations

import httpx

from rotator.service.app import build_service
from tests.fakes.consent import click
from tests.service.console.kit import Setup, ports


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
