"""Every refusal of the console, over plain HTTP: a 4xx page, a log line, the state untouched."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fakes.consent import click
from tests.service.console.kit import Replica, Setup, seed
from tests.service.console.test_flow import assert_secure


def started(one: Replica, account: str = "fp") -> tuple[str, str]:
    """Open a fresh link: (the link, the vendor's authorization URL it redirected to)."""
    link = one.console.link_for(account)
    assert link is not None
    answer = one.get(link)
    assert answer.status_code == 302
    return link, answer.headers["location"]


def state_of(vendor_url: str) -> str:
    return parse_qs(urlsplit(vendor_url).query)["state"][0]


def back_from_vendor(vendor_url: str, decision: str = "allow") -> str:
    """Where the vendor sends the browser after the login page (not followed)."""
    with httpx.Client() as browser:
        return str(click(browser, vendor_url, decision, follow=False).headers["location"])


def expired_link(one: Replica) -> str:
    return one.console.signer.mint("fp", datetime.now(UTC) - timedelta(days=2))


def tampered(one: Replica) -> str:
    link = one.console.link_for("fp")
    assert link is not None
    last = link[-1]
    return link[:-1] + ("A" if last != "A" else "B")


def for_another_account(one: Replica) -> str:
    link = one.console.link_for("idp")
    assert link is not None
    return link.replace("/authorize/idp?", "/authorize/fp?")


def reused_link(one: Replica) -> str:
    link, vendor_url = started(one)
    assert one.get(back_from_vendor(vendor_url)).status_code == 200
    return link


def unknown_state(one: Replica) -> str:
    return f"{one.url}/oauth/callback?code=whatever&state=Zm9vYmFyYmF6.fp"


def reused_state(one: Replica) -> str:
    _, vendor_url = started(one)
    back = back_from_vendor(vendor_url)
    assert one.get(back).status_code == 200
    return back


def expired_state(one: Replica) -> str:
    _, vendor_url = started(one)
    back = back_from_vendor(vendor_url)
    later = datetime.now(UTC) + timedelta(minutes=16)
    one.console.clock = lambda: later
    return back


def without_code(one: Replica) -> str:
    _, vendor_url = started(one)
    return f"{one.url}/oauth/callback?state={state_of(vendor_url)}"


def access_denied(one: Replica) -> str:
    _, vendor_url = started(one)
    return back_from_vendor(vendor_url, "deny")


def refused_code(one: Replica) -> str:
    _, vendor_url = started(one)
    return f"{one.url}/oauth/callback?code=code-made-up&state={state_of(vendor_url)}"


def without_state(one: Replica) -> str:
    return f"{one.url}/oauth/callback?code=whatever"


CASES: dict[str, tuple[Callable[[Replica], str], int, str]] = {
    "expired link": (expired_link, 410, "has expired"),
    "tampered signature": (tampered, 403, "signature does not match"),
    "link for another account": (for_another_account, 403, "another account"),
    "malformed link": (lambda one: f"{one.url}/authorize/fp?exp=1", 400, "not a re-authorization"),
    "unknown account": (lambda one: f"{one.url}/authorize/ghost?x=1", 404, "no such account"),
    "reused link": (reused_link, 410, "used already"),
    "unknown state": (unknown_state, 400, "unknown"),
    "reused state": (reused_state, 400, "finished already"),
    "expired state": (expired_state, 400, "took too long"),
    "no state": (without_state, 400, "no state"),
    "no code": (without_code, 400, "no code"),
    "access denied": (access_denied, 403, "did not grant access (access_denied)"),
    "code the vendor refuses": (refused_code, 400, "refused the code (invalid_grant)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refusal(case: str, setup: Setup, one: Replica, caplog: pytest.LogCaptureFixture) -> None:
    make, status, told = CASES[case]
    authorized = datetime.now(UTC) - timedelta(days=29)
    old = setup.fax.grant(authorized_at=authorized.timestamp())
    seed(one, "fp", old, authorized=authorized, failed=True, last_error_code="invalid_grant")
    url = make(one)
    before = one.record("fp")
    caplog.clear()
    answer = one.get(url)
    assert answer.status_code == status, answer.text
    assert told in answer.text
    assert_secure(answer)
    assert answer.headers["content-type"].startswith("text/html")
    assert "console: refused" in caplog.text and f'"status": {status}' in caplog.text
    if case not in ("reused link", "reused state"):
        assert one.record("fp") == before  # the account's state is untouched
    state = one.state("fp")
    if case in ("reused link", "reused state"):
        assert not state.failed  # the first use went through
    else:
        assert state.failed and state.refresh_token is not None
        assert state.refresh_token.reveal() == old
    # nothing secret in the page or the log line
    for secret in (old, setup.fax.clients[setup.fax.client_id]):
        assert secret not in answer.text and secret not in caplog.text
    assert "code-made-up" not in caplog.text


def test_console_paths_refuse_other_methods(one: Replica) -> None:
    with httpx.Client() as client:
        answer = client.post(f"{one.url}/oauth/callback", data={"code": "x", "state": "y.fp"})
    assert answer.status_code == 405
    assert_secure(answer)


def test_other_paths_are_not_the_consoles(one: Replica) -> None:
    with httpx.Client() as client:
        assert client.get(f"{one.url}/nothing").status_code == 404
        assert client.get(f"{one.url}/authorize").status_code == 404


def test_a_state_store_outage_is_a_503_and_spends_nothing(
    one: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rotator.errors import StoreUnavailable

    def down(account: str) -> object:
        raise StoreUnavailable("the file store is down (in this test)")

    link = one.console.link_for("idp")
    assert link is not None
    with monkeypatch.context() as patch:
        patch.setattr(one.console.book, "_load", down)
        answer = one.get(link)
    assert answer.status_code == 503
    assert_secure(answer)
    assert one.get(link).status_code == 302  # the link still works once the store is back


def test_callbacks_beyond_two_at_once_wait_their_turn_and_lose_nothing(one: Replica) -> None:
    from rotator.service.console.routes import EXCHANGES_AT_ONCE

    _, vendor_url = started(one, "idp")
    back = back_from_vendor(vendor_url)
    taken = [one.console._exchanging.acquire(blocking=False) for _ in range(EXCHANGES_AT_ONCE)]
    assert all(taken)  # two slow vendors hold both slots: /healthz keeps its threads
    try:
        busy = one.get(back)
    finally:
        for _ in taken:
            one.console._exchanging.release()
    assert busy.status_code == 503 and "reload this page" in busy.text
    assert one.get(back).status_code == 200  # the same callback, once a slot is free
