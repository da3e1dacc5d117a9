"""The whole re-authorization flow over HTTP: link -> vendor login -> Allow -> callback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx

from rotator.alerts.channels.webhook import WebhookAlertChannel
from rotator.alerts.dispatch import Dispatcher, StoreAlertMemory
from rotator.config.models import AlertsSettings, WebhookChannel
from tests.fakes.consent import click
from tests.service.console.kit import Replica, Setup, ports, replica, seed
from tests.support import leakcheck
from tests.support.alertkit import Hook

SECURITY = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secure(answer: httpx.Response) -> None:
    for name, value in SECURITY.items():
        assert answer.headers[name] == value
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp


def finish(link: str) -> httpx.Response:
    with httpx.Client() as browser:
        page = click(browser, link)
    leakcheck.log_file("console-done").write_text(page.text)
    return page


def test_enhanced_faxplus_account_29_days_in_is_reauthorized_from_its_link(
    setup: Setup, one: Replica
) -> None:
    old = setup.fax.grant(authorized_at=(datetime.now(UTC) - timedelta(days=29)).timestamp())
    seed(one, "fp", old, authorized=datetime.now(UTC) - timedelta(days=29))
    link = one.console.link_for("fp")
    assert link is not None and link.startswith(f"{one.url}/authorize/fp?exp=")

    first = one.get(link)
    assert first.status_code == 302
    assert_secure(first)
    vendor_url = first.headers["location"]
    assert vendor_url.startswith(setup.fax.authorize_url + "?")
    query = parse_qs(urlsplit(vendor_url).query)
    assert query["redirect_uri"] == [f"{one.url}/oauth/callback"]
    assert "sig" not in vendor_url and "nonce" not in vendor_url

    page = finish(link)
    assert page.status_code == 200, page.text
    assert_secure(page)
    until = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    assert f"fp re-authorized; the refresh token is valid until {until}" in page.text
    assert "(enhanced security)" in page.text

    state = one.state("fp")
    assert state.refresh_token is not None and state.refresh_token.reveal() != old
    assert state.authorized_at is not None
    assert abs(state.authorized_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert state.refresh_expires_at == state.authorized_at + timedelta(days=30)
    assert not state.failed and state.lease_owner == ""
    # the sinks were published in the same step
    assert state.access_token is not None
    assert one.sink("fp.json")["access_token"] == state.access_token.reveal()
    # and the account keeps rotating on the new grant
    assert one.rotator.rotate("fp", force=True).ok
    # the link was spent: opening it again is refused, the state untouched
    before = one.record("fp")
    again = one.get(link)
    assert again.status_code == 410 and "used already" in again.text
    assert one.record("fp") == before


def test_generic_oauth2_account_with_pkce_is_authorized_from_a_link(
    setup: Setup, one: Replica
) -> None:
    link = one.console.link_for("idp")
    assert link is not None
    page = finish(link)
    assert page.status_code == 200, page.text
    assert "idp re-authorized; the refresh token does not expire" in page.text
    [asked] = setup.idp.authorize_requests
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["scope"] == "api" and "code_verifier" not in asked
    state = one.state("idp")
    assert state.refresh_token is not None and not state.failed
    assert one.rotator.rotate("idp", force=True).ok  # the grant is alive at the vendor


def test_an_account_that_cannot_be_authorized_gets_no_link(one: Replica) -> None:
    assert one.console.link_for("cc") is None  # client_credentials
    assert one.console.link_for("nobody") is None


def test_a_flow_started_on_one_replica_finishes_on_the_other(setup: Setup) -> None:
    port_a, port_b = ports()
    # both replicas tell the vendor to come back to B (the load balancer's choice)
    with (
        replica(setup.config("a", port_a, port_b)) as a,
        replica(setup.config("b", port_b, port_b)) as b,
    ):
        link = a.console.link_for("idp")
        assert link is not None
        opened_on_a = link.replace(b.url, a.url)
        with httpx.Client() as browser:
            to_vendor = browser.get(opened_on_a)
            assert to_vendor.status_code == 302
            done = click(browser, to_vendor.headers["location"])
        assert done.status_code == 200, done.text
        assert str(done.url).startswith(f"{b.url}/oauth/callback?")
        assert a.state("idp").refresh_token == b.state("idp").refresh_token is not None
        # the link is spent for every replica
        assert a.get(opened_on_a).status_code == 410
        assert b.get(link).status_code == 410
        # and the callback's state is single use everywhere
        replay = a.get(str(done.url).replace(b.url, a.url))
        assert replay.status_code == 400 and "unknown" in replay.text


def test_two_clicks_on_one_link_cannot_both_win(setup: Setup, one: Replica) -> None:
    link = one.console.link_for("idp")
    assert link is not None
    with httpx.Client() as first, httpx.Client() as second:
        # both open the link and allow at the vendor; their callbacks arrive one by one
        backs = []
        for browser in (first, second):
            to_vendor = browser.get(link)
            assert to_vendor.status_code == 302
            backs.append(click(browser, to_vendor.headers["location"], follow=False))
        winner = first.get(backs[0].headers["location"])
        loser = second.get(backs[1].headers["location"])
    assert winner.status_code == 200
    assert loser.status_code == 409 and "used already" in loser.text
    # the loser's code was never spent at the vendor
    assert len(setup.idp.codes) == 1


def test_alert_webhook_carries_a_fresh_link_that_works(setup: Setup, one: Replica) -> None:
    old = setup.fax.grant(authorized_at=(datetime.now(UTC) - timedelta(days=29)).timestamp())
    state = seed(one, "fp", old, authorized=datetime.now(UTC) - timedelta(days=29))
    hook = Hook()
    try:
        setup.monkeypatch.setenv("ROTATOR_TEST_HOOK", f"http://127.0.0.1:{hook.port}/h")
        channel = WebhookAlertChannel(
            WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK", format="json")
        )
        clock = [datetime.now(UTC)]
        dispatcher = Dispatcher(
            alerts=AlertsSettings(repeat=timedelta(hours=1)),
            channels=[channel],
            memory=StoreAlertMemory(lambda name: one.rotator.accounts[name].state_store),
            clock=lambda: clock[0],
            link_for=one.console.link_for,
        )
        settings = one.rotator.accounts["fp"].settings
        [alert] = dispatcher.check(state, settings)
        assert alert.reauthorize_url is not None and not alert.repeat
        clock[0] += timedelta(hours=2)
        [repeat] = dispatcher.check(state, settings)
        assert repeat.repeat
        [(_, first), (_, second)] = hook.got
    finally:
        hook.close()
    assert first["kind"] == "refresh_token_expiry" and first["action"] == "rotator authorize fp"
    link = first["reauthorize_url"]
    assert link.startswith(f"{one.url}/authorize/fp?") and second["reauthorize_url"] != link
    assert finish(link).status_code == 200
    assert one.state("fp").refresh_token != state.refresh_token
