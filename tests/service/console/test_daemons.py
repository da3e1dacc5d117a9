"""Daemons: two on one state store finish each other's flows; an alert's link saves an account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from rotator.config import load_config
from rotator.secrets import Secret
from rotator.service.app import open_stores
from rotator.state import AccountState
from tests.fakes.consent import click
from tests.service.console.kit import Setup, ports
from tests.support.alertkit import Hook
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


def test_an_enhanced_account_29_days_in_is_saved_from_its_alert_without_a_shell(
    setup: Setup,
) -> None:
    port, _ = ports()
    url = f"http://127.0.0.1:{port}"
    hook = Hook()
    try:
        config_path = setup.config("alerting", port, port, hook=f"http://127.0.0.1:{hook.port}/h")
        authorized = datetime.now(UTC) - timedelta(days=29)
        old = setup.fax.grant(authorized_at=authorized.timestamp())
        store = open_stores(load_config(str(config_path)))["files"]
        seeded = AccountState(
            "fp", provider="faxplus", refresh_token=Secret(old), authorized_at=authorized
        )
        store.write("state/fp", seeded.to_record(), expected_version=None)
        with DaemonProcess(config_path) as daemon:
            alert = wait_until(
                lambda: next((b for _, b in hook.got if b.get("account") == "fp"), None),
                timeout=60,
                what="the expiry alert of fp",
            )
            assert alert["kind"] == "refresh_token_expiry" and alert["status"] == "firing"
            link = alert["reauthorize_url"]
            assert link.startswith(f"{url}/authorize/fp?")
            with httpx.Client() as browser:
                page = click(browser, link)
            assert page.status_code == 200 and "(enhanced security)" in page.text
            wait_until(
                lambda: any(
                    b.get("account") == "fp" and b.get("status") == "resolved" for _, b in hook.got
                ),
                timeout=30,
                what="the resolved notice",
            )
            assert httpx.get(link).status_code == 410
            assert daemon.stop() == 0
    finally:
        hook.close()
    record = store.read("state/fp")
    assert record is not None
    state = AccountState.from_record("fp", record.strings())
    assert state.refresh_token is not None and state.refresh_token.reveal() != old
    assert state.refresh_expires_at is not None
    assert state.refresh_expires_at - datetime.now(UTC) > timedelta(days=29)
