"""The console's status page (rotator/service/console/page.py): who may look, what it shows,
that nothing hostile in it can act in the viewer's browser, and that its button mints a link
only for a viewer's own form, over plain HTTP and in a real Chromium.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.secrets import Secret
from rotator.service.console.page import COOKIE, REAUTHORIZE_PATH, SESSION_TTL, StatusPage
from rotator.state import AccountState, describe
from tests.support import leakcheck
from tests.support.browser import Browser, HandleServer, browser  # noqa: F401 - the fixture
from tests.support.net import LoopbackHTTPServer, wait_until

pytestmark = pytest.mark.timeout(120)

VIEWER_TOKEN = leakcheck.register("viewer-token-3f9a1c7e-page", "console viewer token")
KEY = b"k" * 32
NOW = 1_800_000_000.0
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "table", "tr", "th", "td",
    "span", "div", "form", "input", "button", "p", "a", "code",
}  # fmt: skip


def rows_of(*states: AccountState) -> Any:
    return lambda: (describe(states), [])


def fp_state(**changes: Any) -> AccountState:
    base = AccountState(
        account="fp",
        provider="faxplus",
        refresh_token=Secret("rt-never-shown-on-the-page"),
        refresh_expires_at=datetime(2026, 12, 1, tzinfo=UTC),
        expires_at=datetime(2026, 11, 27, 17, tzinfo=UTC),
    )
    return replace(base, **changes)


class Minted:
    """``mint`` for the page: counts calls and answers a link on ``base``."""

    def __init__(self, base: str = "http://127.0.0.1:1") -> None:
        self.base = base
        self.accounts: list[str] = []

    def __call__(self, account: str) -> str:
        self.accounts.append(account)
        return f"{self.base}/authorize/{account}?n={len(self.accounts)}&sig=signed"


def page(
    *,
    token: str | None = None,
    public_url: str | None = None,
    states: tuple[AccountState, ...] = (),
    mint: Minted | None = None,
    clock: list[float] | None = None,
) -> StatusPage:
    moment = clock if clock is not None else [NOW]
    return StatusPage(
        rows=rows_of(*(states or (fp_state(),))),
        can_authorize=lambda name: name == "fp",
        mint=mint or Minted(),
        key=KEY,
        viewer_token=Secret(token) if token else None,
        public_url=public_url,
        clock=lambda: moment[0],
    )


def call(
    target: StatusPage,
    method: str = "GET",
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    peer: str = "127.0.0.1",
) -> tuple[int, dict[str, str], str]:
    body = urlencode(form or {}).encode()
    answer = target.handle(method, path, "", headers or {}, body, peer=peer)
    assert answer is not None
    status, head, content = answer
    return status, head, content.decode()


def csrf_of(text: str) -> str:
    marker = 'name="csrf" value="'
    start = text.index(marker) + len(marker)
    return text[start : text.index('"', start)]


def signed_in(target: StatusPage) -> str:
    status, head, _ = call(target, "POST", form={"token": VIEWER_TOKEN})
    assert status == 303
    return head["Set-Cookie"].split(";")[0]


# -- who may look -------------------------------------------------------------------------


def test_without_a_viewer_token_loopback_sees_the_page_and_others_are_told_what_to_set() -> None:
    target = page()
    status, head, text = call(target, peer="127.0.0.1")
    assert status == 200 and 'data-account="fp"' in text and "faxplus" in text
    assert "default-src 'none'" in head["Content-Security-Policy"]
    assert head["Cache-Control"] == "no-store" and head["Referrer-Policy"] == "same-origin"
    for peer in ("::1", "127.0.0.9", "::ffff:127.0.0.1"):
        assert call(target, peer=peer)[0] == 200
    for peer in ("::ffff:10.1.2.3", "", "localhost"):
        assert call(target, peer=peer)[0] == 403
    # a reverse proxy on this host connects from loopback for everyone
    for header in ("X-Forwarded-For", "Forwarded"):
        assert call(target, headers={header: "for=203.0.113.9"})[0] == 403
    status, _, text = call(target, peer="10.1.2.3")
    assert status == 403
    assert "server.console.viewer_token" in text and 'data-account="fp"' not in text
    assert call(target, "POST", REAUTHORIZE_PATH, peer="10.1.2.3")[0] == 403


def test_the_paths_of_others_are_left_to_the_dispatch() -> None:
    target = page()
    for path in ("/metrics", "/authorize/fp", "/oauth/callback", "/favicon.ico"):
        assert target.handle("GET", path, "", {}, b"", peer="127.0.0.1") is None


def test_a_viewer_token_is_needed_from_everywhere_as_bearer_or_signed_in_cookie() -> None:
    target = page(token=VIEWER_TOKEN)
    status, _, text = call(target)  # loopback too, once a token is configured
    assert status == 401 and 'type="password"' in text and 'data-account="fp"' not in text
    assert call(target, headers={"Authorization": "Bearer wrong"})[0] == 401
    ok = call(target, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, peer="10.1.2.3")
    assert ok[0] == 200 and 'data-account="fp"' in ok[2]
    status, _, text = call(target, "POST", form={"token": "guess"})
    assert status == 401 and "not the console&#x27;s viewer token" in text
    cookie = signed_in(target)
    assert call(target, headers={"Cookie": cookie}, peer="10.1.2.3")[0] == 200
    assert call(target, headers={"Cookie": f"{cookie}x"})[0] == 401


def test_the_cookie_is_httponly_strict_secure_on_https_and_holds_no_token() -> None:
    for public_url, secure in (("https://rotator.example.com", True), (None, False)):
        target = page(token=VIEWER_TOKEN, public_url=public_url)
        _, head, _ = call(target, "POST", form={"token": VIEWER_TOKEN})
        attributes = [part.strip() for part in head["Set-Cookie"].split(";")]
        assert "HttpOnly" in attributes and "SameSite=Strict" in attributes
        assert ("Secure" in attributes) is secure
        value = attributes[0].partition("=")[2]
        assert VIEWER_TOKEN not in value
        assert hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest() not in value


def test_a_session_ends_with_its_expiry_and_with_a_new_viewer_token() -> None:
    clock = [NOW]
    target = page(token=VIEWER_TOKEN, clock=clock)
    cookie = signed_in(target)
    clock[0] = NOW + SESSION_TTL - 1
    assert call(target, headers={"Cookie": cookie})[0] == 200
    clock[0] = NOW + SESSION_TTL + 1
    assert call(target, headers={"Cookie": cookie})[0] == 401
    clock[0] = NOW
    rotated = page(token=VIEWER_TOKEN + "-new", clock=clock)
    assert call(rotated, headers={"Cookie": cookie})[0] == 401


# -- the button ---------------------------------------------------------------------------


def test_the_button_mints_a_link_for_the_viewer_and_redirects_to_it() -> None:
    mint = Minted()
    target = page(token=VIEWER_TOKEN, mint=mint)
    cookie = signed_in(target)
    _, _, text = call(target, headers={"Cookie": cookie})
    form = {"account": "fp", "csrf": csrf_of(text)}
    status, head, _ = call(target, "POST", REAUTHORIZE_PATH, headers={"Cookie": cookie}, form=form)
    assert status == 303 and head["Location"] == f"{mint.base}/authorize/fp?n=1&sig=signed"
    assert mint.accounts == ["fp"]
    # each press is a fresh link (links are single use)
    call(target, "POST", REAUTHORIZE_PATH, headers={"Cookie": cookie}, form=form)
    assert mint.accounts == ["fp", "fp"]


@pytest.mark.parametrize(
    ("why", "headers", "form"),
    [
        ("no form token", {}, {"account": "fp"}),
        ("a forged form token", {}, {"account": "fp", "csrf": "99999999999.forged"}),
        ("another site's Origin", {"Origin": "https://evil.example"}, None),
        ("Origin null (a sandboxed frame)", {"Origin": "null"}, None),
        ("a cross-site fetch", {"Sec-Fetch-Site": "cross-site"}, None),
        ("a same-site but other origin fetch", {"Sec-Fetch-Site": "same-site"}, None),
    ],
)
def test_a_button_press_not_from_the_viewers_own_form_mints_nothing(
    why: str, headers: dict[str, str], form: dict[str, str] | None
) -> None:
    mint = Minted()
    target = page(mint=mint)
    _, _, text = call(target)
    good = {"account": "fp", "csrf": csrf_of(text)}
    status, _, body = call(target, "POST", REAUTHORIZE_PATH, headers=headers, form=form or good)
    assert status == 403, why
    assert "Location" not in body and mint.accounts == []


def test_a_form_token_is_bound_to_its_viewer_and_expires() -> None:
    clock = [NOW]
    mint = Minted()
    target = page(token=VIEWER_TOKEN, mint=mint, clock=clock)
    bearer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    cookie = {"Cookie": signed_in(target)}
    token_for_bearer = csrf_of(call(target, headers=bearer)[2])
    form = {"account": "fp", "csrf": token_for_bearer}
    assert call(target, "POST", REAUTHORIZE_PATH, headers=cookie, form=form)[0] == 403
    clock[0] = NOW + 5 * 3600
    assert call(target, "POST", REAUTHORIZE_PATH, headers=bearer, form=form)[0] == 403
    assert mint.accounts == []


def test_the_button_is_shown_and_honoured_only_for_accounts_that_can_be_authorized() -> None:
    mint = Minted()
    other = AccountState(account="svc", provider="oauth2", expires_at=datetime.now(UTC))
    target = page(mint=mint, states=(fp_state(), other))
    _, _, text = call(target)
    assert text.count(">Re-authorize</button>") == 1
    for account in ("svc", "nobody"):
        form = {"account": account, "csrf": csrf_of(text)}
        assert call(target, "POST", REAUTHORIZE_PATH, form=form)[0] == 404
    assert call(target, "GET", REAUTHORIZE_PATH)[0] == 405
    assert mint.accounts == []


def test_the_page_shows_the_status_words_expiries_and_the_scrubbed_error() -> None:
    failed = fp_state(failed=True, last_error="invalid_grant: the grant is dead")
    retrying = AccountState(
        account="acme", provider="oauth2", consecutive_failures=2, last_error="HTTP 503"
    )
    text = call(page(states=(failed, retrying)))[2]
    assert ">FAILED<" in text and ">RETRYING(2)<" in text
    assert "invalid_grant: the grant is dead" in text and "2026-12-01" in text
    assert "rt-never-shown-on-the-page" not in text


# -- nothing hostile acts ---------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]


HOSTILE = st.one_of(
    st.sampled_from(
        [
            "<script>alert(1)</script>",
            '"><img src=x onerror=alert(1)>',
            "' onmouseover='alert(1)",
            "</td></tr></table><form action=//evil>",
            "<!--",
            "]]><svg onload=alert(1)>",
            "&lt;script&gt;",
            "\u202e<b>",
            "\x1b[2J",
            "\ud800",
        ]
    ),
    st.text(max_size=20),
)
HOSTILE_TEXT = st.lists(HOSTILE, min_size=1, max_size=4).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=HOSTILE_TEXT, provider=HOSTILE_TEXT, error=HOSTILE_TEXT)
def test_hostile_account_names_providers_and_errors_cannot_inject(
    name: str, provider: str, error: str
) -> None:
    hostile = AccountState(account=name, provider=provider, last_error=error, failed=True)
    target = StatusPage(
        rows=rows_of(hostile, fp_state()),
        can_authorize=lambda _: True,
        mint=Minted(),
        key=KEY,
    )
    status, _, text = call(target)
    assert status == 200
    parser = _Tags()
    parser.feed(text)
    assert set(parser.tags) <= ALLOWED_TAGS and not parser.handlers
    # exactly the page's own structure: a header row and one row, form and button per account
    assert parser.tags.count("tr") == 3 and parser.tags.count("form") == 2
    assert parser.tags.count("input") == 4 and parser.tags.count("script") == 0


# -- over real HTTP and in a real browser ------------------------------------------------------


class _LinkTarget:
    """Where a minted link leads in these tests: a page that says which link was opened."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        opened = self.opened
        from http.server import BaseHTTPRequestHandler

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith("/authorize/"):
                    self.send_error(404)  # the browser's /favicon.ico
                    return
                opened.append(self.path)
                account = urlsplit(self.path).path.rsplit("/", 1)[-1]
                n = parse_qs(urlsplit(self.path).query)["n"][0]
                body = f"<html><body>link {n} opened for {account}</body></html>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = LoopbackHTTPServer(Handler, name="link-target")


@pytest.fixture
def link_target() -> Iterator[_LinkTarget]:
    target = _LinkTarget()
    with target.server:
        yield target


def test_over_http_the_cookie_and_the_form_work_as_a_client_would_use_them(
    link_target: _LinkTarget,
) -> None:
    mint = Minted(link_target.server.url)
    with HandleServer(page(token=VIEWER_TOKEN, mint=mint).handle) as server:
        client = httpx.Client(base_url=server.url, timeout=10)
        with client:
            assert client.get("/").status_code == 401
            signed = client.post("/", data={"token": VIEWER_TOKEN})
            assert signed.status_code == 303 and COOKIE in client.cookies
            shown = client.get("/")
            assert shown.status_code == 200 and 'data-account="fp"' in shown.text
            pressed = client.post(
                REAUTHORIZE_PATH, data={"account": "fp", "csrf": csrf_of(shown.text)}
            )
            assert pressed.status_code == 303
            assert pressed.headers["location"].startswith(link_target.server.url + "/authorize/fp")


def test_in_chromium_the_token_form_signs_in_and_the_button_follows_a_fresh_link(
    browser: Browser,  # noqa: F811 - the fixture
    link_target: _LinkTarget,
) -> None:
    mint = Minted(link_target.server.url)
    target = page(token=VIEWER_TOKEN, mint=mint, public_url=None)
    with HandleServer(target.handle) as server:
        text = browser.open(server.url + "/")
        assert "Enter the console's viewer token" in text and "fp" not in text.split()
        browser.fill("input[name=token]", VIEWER_TOKEN)
        text = browser.click("button[type=submit]")
        assert "rotator status" in text and "faxplus" in text and "Re-authorize" in text
        (cookie,) = browser.cookies()
        assert cookie["name"] == COOKIE and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert VIEWER_TOKEN not in cookie["value"]
        text = browser.click("tr[data-account=fp] button")
        assert "link 1 opened for fp" in text
        assert mint.accounts == ["fp"] and len(link_target.opened) == 1
        browser.open(server.url + "/")
        assert "link 2 opened for fp" in browser.click("tr[data-account=fp] button")


def _outside_address() -> str:
    """An IPv4 address of this machine that is not loopback, or ""."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the route
        except OSError:
            return ""
        address = str(probe.getsockname()[0])
    return "" if address.startswith("127.") else address


def test_the_listener_hands_the_page_the_real_peer_so_loopback_only_holds() -> None:
    from rotator.service.health import HealthServer
    from rotator.service.metrics import Metrics, exposition_handler

    outside = _outside_address()
    if not outside:
        pytest.skip("no non-loopback IPv4 address on this machine to connect from")
    handler = exposition_handler(Metrics(), {}, pages=page().handle)
    server = HealthServer("0.0.0.0:0", handler)  # both sides: loopback and outside
    server.start()
    try:
        port = server.address[1]
        local = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert local.status_code == 200 and 'data-account="fp"' in local.text
        remote = httpx.get(f"http://{outside}:{port}/", timeout=10)
        assert remote.status_code == 403 and "viewer_token" in remote.text
        forged = httpx.get(
            f"http://{outside}:{port}/",
            headers={"X-Forwarded-For": "127.0.0.1", "Host": "127.0.0.1"},
            timeout=10,
        )
        assert forged.status_code == 403
    finally:
        server.stop()


def test_in_chromium_hostile_text_on_the_page_stays_text(
    browser: Browser,  # noqa: F811 - the fixture
) -> None:
    attacks = [
        "<script>document.title='pwned'</script>",
        "<img src=x onerror=\"document.title='pwned'\">",
        '"><svg onload="document.title=\'pwned\'">',
    ]
    states = tuple(
        AccountState(account=f"acct{i}{attack}", provider="oauth2", last_error=attack, failed=True)
        for i, attack in enumerate(attacks)
    )
    with HandleServer(page(states=states).handle) as server:
        text = browser.open(server.url + "/")
        assert browser.driver.title == "rotator status"
        for attack in attacks:
            assert attack in text  # shown as the characters it is made of
        assert browser.driver.execute_script("return document.scripts.length") == 0
        assert browser.driver.execute_script("return document.images.length") == 0


def test_the_daemon_serves_the_page_with_its_viewer_token_and_real_links(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from rotator.service.app import build_service
    from tests.service.console.kit import ports

    port, _ = ports()
    path = setup.config("page", port, port)
    config = yaml.safe_load(path.read_text())
    config["server"]["console"]["viewer_token"] = "env:PAGE_TEST_VIEWER_TOKEN"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("PAGE_TEST_VIEWER_TOKEN", VIEWER_TOKEN)
    service = build_service(str(path))
    server = service.monitor.server
    assert server is not None
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/").status_code == 401  # loopback too: a token is configured
            bearer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
            shown = client.get("/", headers=bearer)
            assert shown.status_code == 200 and 'data-account="idp"' in shown.text
            leakcheck.log_file("console-page").write_text(shown.text)
            pressed = client.post(
                REAUTHORIZE_PATH,
                headers=bearer,
                data={"account": "idp", "csrf": csrf_of(shown.text)},
            )
            assert pressed.status_code == 303
            link = pressed.headers["location"]
            assert link.startswith(f"{base}/authorize/idp?")
            assert client.get(link).status_code == 302  # on to the vendor's page
            # /metrics and the probes are still the listener's own, without a token
            assert client.get("/metrics").status_code == 200
    finally:
        server.stop()
        service.daemon.rotator.http.close()


def test_the_rows_are_read_once_per_ttl_and_a_slow_read_does_not_hold_other_viewers() -> None:
    import threading

    from rotator.service.console import page as page_module

    calls: list[float] = []
    release = threading.Event()

    def rows() -> Any:
        calls.append(time.monotonic())
        if len(calls) == 2:
            release.wait(10)  # the second read hangs, as a store at its timeout does
        return describe([fp_state()]), []

    target = StatusPage(rows=rows, can_authorize=lambda _: True, mint=Minted(), key=KEY)
    assert call(target)[0] == 200 and call(target)[0] == 200
    assert len(calls) == 1  # within ROWS_TTL: one read for both
    target._cached_at -= page_module.ROWS_TTL  # the TTL is over (the page's own field)
    slow = threading.Thread(target=call, args=(target,))
    slow.start()
    try:
        wait_until(lambda: len(calls) == 2, timeout=5, what="the slow read to start")
        started = time.monotonic()
        status, _, text = call(target)  # answered from the previous rows at once
        assert status == 200 and 'data-account="fp"' in text
        assert time.monotonic() - started < 1 and len(calls) == 2
    finally:
        release.set()
        slow.join(10)


def test_a_failing_read_is_shown_on_the_page_not_a_500() -> None:
    def rows() -> Any:
        raise RuntimeError("the store is down")

    target = StatusPage(rows=rows, can_authorize=lambda _: True, mint=Minted(), key=KEY)
    status, _, text = call(target)
    assert status == 200 and "the states could not be read: RuntimeError" in text
