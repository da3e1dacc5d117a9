"""The re-authorization loop end to end, in a real browser (issue 17's "done when").

A daemon runs as a process with the console on its listener. An enhanced-security
Fax.Plus account 29 days into its grant (the Fax.Plus emulator) and a generic OAuth2
account whose grant died (the OAuth2 emulator's authorization server, PKCE S256
required) each raise
an alert at a local webhook receiver; the test opens the alert's ``reauthorize_url``
in headless Chromium, presses Allow on the vendor's page, and checks what the daemon
kept: the new refresh token in the state store, the 30-day expiry from now, the
resolved alert, and that the same link opened again is refused. Then ``rotator demo``,
clicked through as a newcomer would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rotator.config import load_config
from rotator.rotation.accounts import build_accounts
from rotator.secrets import Secret
from rotator.service.app import open_stores
from rotator.state import AccountState
from tests.fakes.faxplus import FaxPlusEmulator
from tests.fakes.oauth2 import OAuth2Emulator
from tests.support import leakcheck
from tests.support.alertkit import Hook
from tests.support.browser import Browser, DemoProcess, browser  # noqa: F401 - the fixture
from tests.support.net import free_port, wait_until
from tests.support.proc import DaemonProcess, run_rotator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

IDP_SECRET = leakcheck.register("console-proof-idp-secret-91c", "client secret")
DAY = timedelta(days=1)


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    try:
        yield receiver
    finally:
        receiver.close()


def _config(tmp: Path, port: int, fax: FaxPlusEmulator, idp: OAuth2Emulator) -> Path:
    fax_client, fax_secret = next(iter(fax.clients.items()))
    (tmp / "fax-secret").write_text(fax_secret)
    (tmp / "idp-secret").write_text(IDP_SECRET)
    console = f"http://127.0.0.1:{port}"
    config = tmp / "rotator.yaml"
    config.write_text(
        f"""\
server:
  listen: 127.0.0.1:{port}
  console: {{public_url: "{console}", link_ttl: 1h}}
stores:
  files: {{type: file, directory: {tmp / "store"}}}
defaults:
  state: {{store: files}}
  min_lifetime: 1s
alerts:
  channels: [{{type: webhook, url: env:PROOF_HOOK_URL, format: json}}]
accounts:
  fp:
    provider: faxplus
    client_id: {fax_client}
    client_secret: file:{tmp / "fax-secret"}
    enhanced_security: true
    token_url: {fax.token_url}
    authorize_url: {fax.authorize_url}
    api_base: {fax.api_base}
    redirect_uri: {console}/oauth/callback
    sinks: [{{store: files, path: fp.json}}]
  idp:
    provider: oauth2
    token_url: {idp.url}
    grant: refresh_token
    client_id: idp-app
    client_secret: file:{tmp / "idp-secret"}
    client_auth: basic
    authorize_url: {idp.authorize_url}
    redirect_uri: {console}/oauth/callback
    sinks: [{{store: files, path: idp.json}}]
"""
    )
    return config


def _write_states(config: Path, *states: AccountState) -> None:
    loaded = load_config(str(config))
    stores = open_stores(loaded)
    try:
        accounts = build_accounts(loaded, stores)
        for state in states:
            account = accounts[state.account]
            account.state_store.write(account.state_path, state.to_record(), expected_version=None)
    finally:
        for store in stores.values():
            store.close()


def _state(config: Path, name: str) -> AccountState:
    loaded = load_config(str(config))
    stores = open_stores(loaded)
    try:
        account = build_accounts(loaded, stores)[name]
        record = account.state_store.read(account.state_path)
        assert record is not None
        return AccountState.from_record(name, record.data)
    finally:
        for store in stores.values():
            store.close()


def _alert(hook: Hook, account: str, status: str = "firing") -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for _, payload in hook.got:
            if payload.get("account") == account and payload.get("status") == status:
                return payload
        return None

    payload: dict[str, Any] = wait_until(found, timeout=60, what=f"a {status} alert for {account}")
    return payload


def _reauthorize_in_chromium(chromium: Browser, link: str) -> str:
    """Open the alert's link, press Allow on the vendor's page; the page the daemon answers."""
    text = chromium.open(link)
    assert "Allow" in text, text
    return chromium.click("#allow")


def _refused_again(chromium: Browser, link: str) -> None:
    assert "Refused" in chromium.open(link)
    again = httpx.get(link, timeout=10, follow_redirects=False)
    leakcheck.log_file("console-refusal").write_text(f"{again.status_code}\n{again.text}")
    assert 400 <= again.status_code < 500, again.status_code
    assert "location" not in again.headers


def test_an_alert_link_reauthorizes_faxplus_and_pkce_oauth2_in_chromium(
    tmp_path: Path,
    browser: Browser,  # noqa: F811 - the fixture
    hook: Hook,
) -> None:
    fax = FaxPlusEmulator(enhanced=True)
    idp = OAuth2Emulator(clients={"idp-app": IDP_SECRET}, require_pkce=True)
    fax.start()
    idp.start()
    port = free_port()
    callback = f"http://127.0.0.1:{port}/oauth/callback"
    fax.redirect_uris[fax.client_id] = callback
    idp.redirect_uris["idp-app"] = callback
    config = _config(tmp_path, port, fax, idp)
    authorized_at = datetime.now(UTC) - 29 * DAY
    old_fax = fax.grant(authorized_at=authorized_at.timestamp())
    dead = leakcheck.register("refresh-this-grant-was-revoked-at-the-vendor", "refresh token")
    _write_states(
        config,
        AccountState(
            account="fp",
            provider="faxplus",
            refresh_token=Secret(old_fax),
            authorized_at=authorized_at,
            refresh_expires_at=authorized_at + 30 * DAY,
        ),
        AccountState(account="idp", provider="oauth2", refresh_token=Secret(dead)),
    )
    daemon = DaemonProcess(config, env={"PROOF_HOOK_URL": f"http://127.0.0.1:{hook.port}/hook"})
    try:
        # -- Fax.Plus, enhanced security, 29 days in: the expiry alert carries the link
        firing = _alert(hook, "fp")
        assert firing["kind"] == "refresh_token_expiry"
        link = firing["reauthorize_url"]
        assert link.startswith(f"http://127.0.0.1:{port}/authorize/fp?")
        text = _reauthorize_in_chromium(browser, link)
        assert "fp re-authorized" in text and "(enhanced security)" in text, text
        state = _state(config, "fp")
        assert state.refresh_token is not None and state.refresh_token.reveal() != old_fax
        assert state.authorized_at is not None and state.refresh_expires_at is not None
        ahead = state.refresh_expires_at - datetime.now(UTC)
        assert 30 * DAY - timedelta(minutes=5) < ahead <= 30 * DAY, ahead
        assert not state.failed
        assert state.refresh_expires_at.strftime("%Y-%m-%d") in text
        _alert(hook, "fp", "resolved")
        _refused_again(browser, link)
        # the status page's button leads to the vendor again, and the signed link it
        # minted does not travel there in a Referer
        shown = browser.open(f"http://127.0.0.1:{port}/")
        assert "fp" in shown and "FAILED" not in shown.split("idp")[0]
        assert "Allow" in browser.click("tr[data-account=fp] button")
        # (the GETs: the browser arriving from rotator; a POST is the vendor's own form)
        arrivals = [r for r in fax.requests if r.path == "/login" and r.method == "GET"]
        assert len(arrivals) == 2 and not any("referer" in r.headers for r in arrivals)
        # ... and it keeps rotating with the new grant
        refreshed = run_rotator(["refresh", "fp", "-c", str(config)])
        assert refreshed.returncode == 0, refreshed.stderr[-2000:]

        # -- generic OAuth2, PKCE: the grant is dead; its alert's link brings it back
        dead_alert = _alert(hook, "idp")
        link = dead_alert["reauthorize_url"]
        text = _reauthorize_in_chromium(browser, link)
        assert "idp re-authorized" in text, text
        state = _state(config, "idp")
        assert state.refresh_token is not None and state.refresh_token.reveal() != dead
        assert idp.grant_for(state.refresh_token.reveal()) is not None and not state.failed
        # the emulator required the challenge, and spent the code only for its verifier
        (asked,) = idp.authorize_requests
        assert asked["code_challenge_method"] == "S256" and asked["code_challenge"]
        _alert(hook, "idp", "resolved")
        _refused_again(browser, link)
    finally:
        assert daemon.stop() == 0
        fax.stop()
        idp.stop()


def test_the_demo_loop_a_newcomer_clicks_through(
    tmp_path: Path,
    browser: Browser,  # noqa: F811 - the fixture
) -> None:
    started = time.monotonic()
    demo = DemoProcess(tmp_path / "demo")
    try:
        console = demo.wait_output(r"console: (http://127\.0\.0\.1:\d+)/", timeout=30).group(1)
        link = demo.wait_output(r"re-authorize in your browser[^:]*: (http://\S+)").group(1)
        page = browser.open(console + "/")
        assert "demo-fax" in page and "faxplus" in page
        text = _reauthorize_in_chromium(browser, link)
        assert "demo-fax re-authorized" in text and "(enhanced security)" in text, text
        demo.wait_output(r"rotator demo: RESOLVED [^\n]*demo-fax")
        assert time.monotonic() - started < 60, "the loop must close within the first minute"
        in_30_days = (datetime.now(UTC) + 30 * DAY).strftime("%Y-%m-%d")

        def recovered() -> bool:  # the page reads the rows at most every ROWS_TTL
            shown = browser.open(console + "/")
            row = next(line for line in shown.splitlines() if line.startswith("demo-fax"))
            return " OK " in f" {row} " and in_30_days in row

        wait_until(recovered, timeout=15, what="demo-fax OK, 30 days ahead, on the page")
        _refused_again(browser, link)
        # the page's button mints a fresh link that leads to the vendor's page again
        browser.open(console + "/")
        assert "Allow" in browser.click("tr[data-account=demo-fax] button")
    finally:
        demo.register_secrets()
        assert demo.stop() == 0
