"""Two daemons, one state store: a link minted for one is finished by the other."""

from __future__ import annotations

import httpx

from rotator.config import load_config
from rotator.service.app import open_stores
from rotator.state import AccountState
from tests.fakes.consent import click
from tests.service.console.kit import Setup, ports
from tests.support.net import wait_until
from tests.support.proc import DaemonProcess, run_rotator


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_daemons_share_the_flow_through_the_state_store(setup: Setup) -> None:
    port_a, port_b = ports()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    # both tell browsers and vendors to come to B (the load balancer's choice)
    config_a = setup.config("a", port_a, port_b)
    config_b = setup.config("b", port_b, port_b)
    with DaemonProcess(config_a) as a, DaemonProcess(config_b) as b:
        wait_until(lambda: healthy(url_a) and healthy(url_b), timeout=60, what="both daemons")
        minted = run_rotator(["authorize", "idp", "--link", "-c", str(config_a)])
        assert minted.returncode == 0, minted.stderr
        link = next(w for w in minted.stdout.split() if w.startswith(f"{url_b}/authorize/idp?"))
        with httpx.Client() as browser:
            to_vendor = browser.get(link.replace(url_b, url_a))  # opened on A
            assert to_vendor.status_code == 302
            done = click(browser, to_vendor.headers["location"])  # finished on B
        assert done.status_code == 200, done.text
        assert str(done.url).startswith(f"{url_b}/oauth/callback?")
        assert "idp re-authorized" in done.text
        assert httpx.get(link.replace(url_b, url_a)).status_code == 410  # spent for A too
        assert a.stop() == 0 and b.stop() == 0
    assert '"event": "reauthorized"' in b.output()
    config = load_config(str(config_a))
    record = open_stores(config)["files"].read("state/idp")
    assert record is not None
    state = AccountState.from_record("idp", record.strings())
    assert state.refresh_token is not None and not state.failed
