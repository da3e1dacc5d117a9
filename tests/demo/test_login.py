"""The sandbox's login page and authorization-code grant (rotator/demo/login.py): a consent
page with Allow and Deny, and codes that are single use, short-lived and bound to their client,
redirect URI and PKCE challenge, as a strict vendor's are.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from rotator.demo.sandbox import Sandbox
from tests.support import leakcheck

pytestmark = pytest.mark.timeout(60)

SECRET = leakcheck.register("login-test-client-secret-5b1", "client secret")
CALLBACK = "http://127.0.0.1:9464/oauth/callback"
VERIFIER = "v" * 50


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@pytest.fixture
def vendor() -> Iterator[Sandbox]:
    # the product's sandbox itself (tests/fakes/oauth2.py has an authorization server of
    # its own), with every value it makes registered with the leak check
    sandbox = Sandbox(
        clients={"app": SECRET, "other": SECRET},
        redirects={"app": {CALLBACK}},
        on_issue=leakcheck.register,
    )
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def consent(vendor: Sandbox, **extra: str) -> tuple[httpx.Client, str]:
    """Open the login page; the client and the form's request id."""
    client = httpx.Client(base_url=vendor.base_url, timeout=10)
    query = {"response_type": "code", "client_id": "app", "redirect_uri": CALLBACK, "state": "s1"}
    page = client.get("/login", params={**query, **extra})
    assert page.status_code == 200 and ">Allow</button>" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    match = re.search(r'name="request" value="([^"]+)"', page.text)
    assert match is not None
    return client, match.group(1)


def allow(vendor: Sandbox, **extra: str) -> tuple[httpx.Client, str]:
    client, request = consent(vendor, **extra)
    answer = client.post("/login", data={"request": request, "decision": "allow"})
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    query = parse_qs(location.query)
    assert query["state"] == ["s1"]
    return client, leakcheck.register(query["code"][0], "authorization code")


def exchange(client: httpx.Client, code: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, **extra}
    return client.post("/oauth/token", data=form, auth=("app", SECRET))


def test_allow_issues_a_code_that_buys_a_rotating_grant_once(vendor: Sandbox) -> None:
    client, code = allow(vendor)
    first = exchange(client, code)
    assert first.status_code == 200, first.text
    refresh = first.json()["refresh_token"]
    assert vendor.grant_for(refresh) is not None and vendor.authorizations.allowed == 1
    again = exchange(client, code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert "already used" in again.json()["error_description"]


def test_deny_answers_access_denied_to_the_redirect_uri(vendor: Sandbox) -> None:
    client, request = consent(vendor)
    answer = client.post("/login", data={"request": request, "decision": "deny"})
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query == {"error": ["access_denied"], "state": ["s1"]}
    # a decided request cannot be decided again
    assert client.post("/login", data={"request": request, "decision": "allow"}).status_code == 400


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ({"client_id": "nobody", "redirect_uri": CALLBACK}, "unknown client"),
        ({"client_id": "other", "redirect_uri": CALLBACK}, "no redirect registered"),
        ({"client_id": "app", "redirect_uri": "https://evil.example/cb"}, "foreign redirect"),
    ],
)
def test_an_unregistered_client_or_redirect_is_refused_without_a_redirect(
    vendor: Sandbox, query: dict[str, str], why: str
) -> None:
    answer = httpx.get(f"{vendor.base_url}/login?{urlencode({'response_type': 'code', **query})}")
    assert answer.status_code == 400, why
    assert "location" not in answer.headers and "Allow" not in answer.text


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        ({"code_verifier": VERIFIER, "redirect_uri": "http://127.0.0.1:1/cb"}, "redirect_uri"),
        ({"code_verifier": "w" * 50}, "code_verifier does not match"),
        ({}, "code_verifier does not match"),  # no verifier at all
    ],
)
def test_a_code_is_bound_to_its_redirect_uri_and_pkce_challenge_and_dies_on_misuse(
    vendor: Sandbox, extra: dict[str, str], refusal: str
) -> None:
    client, code = allow(vendor, code_challenge=challenge(VERIFIER), code_challenge_method="S256")
    answer = exchange(client, code, **extra)
    assert answer.status_code == 400 and refusal in answer.json()["error_description"]
    # the refused try spent it: the right verifier cannot use it afterwards
    assert exchange(client, code, code_verifier=VERIFIER).status_code == 400


def test_pkce_with_the_right_verifier_succeeds_and_plain_is_refused(vendor: Sandbox) -> None:
    client, code = allow(vendor, code_challenge=challenge(VERIFIER), code_challenge_method="S256")
    assert exchange(client, code, code_verifier=VERIFIER).status_code == 200
    page = client.get(
        "/login",
        params={
            "response_type": "code",
            "client_id": "app",
            "redirect_uri": CALLBACK,
            "code_challenge": VERIFIER,
            "code_challenge_method": "plain",
        },
    )
    assert page.status_code == 302
    assert parse_qs(urlsplit(page.headers["location"]).query)["error"] == ["invalid_request"]


def test_a_code_for_one_client_is_refused_to_another(vendor: Sandbox) -> None:
    client, code = allow(vendor)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    answer = client.post("/oauth/token", data=form, auth=("other", SECRET))
    assert answer.status_code == 400 and "another client" in answer.json()["error_description"]


def test_a_code_expires(vendor: Sandbox) -> None:
    vendor.authorizations.code_ttl = -1.0
    client, code = allow(vendor)
    answer = exchange(client, code)
    assert answer.status_code == 400 and "expired" in answer.json()["error_description"]
