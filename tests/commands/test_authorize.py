"""``rotator authorize``, end to end against the Fax.Plus emulator."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from rotator.commands.authorize import AuthorizeError, parse_pasted_code
from rotator.config import load_config
from rotator.secrets import Secret
from rotator.service.app import open_stores
from rotator.state import AccountState
from rotator.tokens import format_time
from tests.fakes.consent import click
from tests.fakes.faxplus import FaxPlusEmulator
from tests.fakes.vendorhttp import quiet_http_libraries, running
from tests.support import leakcheck
from tests.support.net import free_port
from tests.support.proc import env_for, run_rotator

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _quiet_http_libraries() -> Iterator[None]:
    with quiet_http_libraries():
        yield


def run_with_code(args: list[str], code: str, env: dict[str, str]) -> Any:
    """``run_rotator`` for a command line that carries an authorization code: the log
    records the command with the code masked, so the leak check still sees whether
    rotator itself ever prints it."""
    proc = subprocess.run(
        [sys.executable, "-m", "rotator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(env),
        check=False,
    )
    shown = " ".join(a.replace(code, "<code>") for a in args)
    log = leakcheck.log_file("cli-authorize-code")
    log.write_text(f"$ rotator {shown}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def code_of(location: str) -> str:
    return httpx.URL(location).params["code"]


@pytest.fixture
def vendor() -> Iterator[FaxPlusEmulator]:
    with running(FaxPlusEmulator()) as server:
        yield server


def write_config(
    tmp_path: Path, vendor: FaxPlusEmulator, redirect_uri: str | None, **extra: Any
) -> Path:
    config = {
        "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
        "accounts": {
            "acme-fax": {
                "provider": "faxplus",
                "client_id": vendor.client_id,
                "client_secret": "env:FAXPLUS_SECRET",
                **({"redirect_uri": redirect_uri} if redirect_uri else {}),
                "token_url": vendor.token_url,
                "authorize_url": vendor.authorize_url,
                "api_base": vendor.api_base,
                "sinks": [{"store": "files", "path": "acme-fax.json"}],
                "enhanced_security": False,
                **extra,
            }
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def secret_env(vendor: FaxPlusEmulator) -> dict[str, str]:
    return {"FAXPLUS_SECRET": vendor.clients[vendor.client_id]}


def stored_state(config_path: Path) -> AccountState:
    config = load_config(str(config_path))
    record = open_stores(config)["files"].read("state/acme-fax")
    assert record is not None
    return AccountState.from_record("acme-fax", record.data)


def authorization_url(output: str) -> str:
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("http") and "/login?" in line:
            return line
    raise AssertionError(f"no authorization URL in: {output!r}")


def test_listening_mode_catches_the_redirect(tmp_path: Path, vendor: FaxPlusEmulator) -> None:
    port = free_port()
    vendor.redirect_uris[vendor.client_id] = f"http://127.0.0.1:{port}/callback"
    config = write_config(
        tmp_path, vendor, f"http://127.0.0.1:{port}/callback", enhanced_security=True
    )
    log = leakcheck.log_file("cli-authorize-listen")
    with open(log, "w+b") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rotator",
                "authorize",
                "acme-fax",
                "-c",
                str(config),
                "--timeout",
                "60",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env_for(secret_env(vendor)),
        )
        try:
            deadline = time.monotonic() + 30
            url = None
            while url is None:
                text = log.read_text()
                if "Waiting for the redirect" in text:
                    url = authorization_url(text)
                elif time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"authorize did not start listening: {text}")
                else:
                    time.sleep(0.05)
            # the browser: the consent page redirects to our listener
            with httpx.Client(follow_redirects=True) as browser:
                page = click(browser, url)
            assert page.status_code == 200 and "You can close this" in page.text
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert "acme-fax: authorized at" in output
    assert "verified: GET" in output and "expires" in output
    state = stored_state(config)
    assert state.refresh_token is not None
    assert state.refresh_token.reveal() in vendor.refresh_tokens
    assert state.authorized_at is not None
    assert state.refresh_expires_at == state.authorized_at + timedelta(days=30)
    assert not state.failed and state.provider == "faxplus"
    # exactly the documented exchange
    exchange = next(r for r in vendor.requests if r.path == "/token")
    assert [k for k, _ in exchange.query] == ["grant_type", "client_id", "code", "redirect_uri"]
    assert exchange.body == b"" and exchange.headers["authorization"].startswith("Basic ")
    self_check = vendor.requests[-1]
    assert self_check.path == "/v3/accounts/self"
    assert self_check.headers["x-fax-clientid"] == vendor.client_id


def test_code_mode_checks_the_state_and_clears_failed(
    tmp_path: Path, vendor: FaxPlusEmulator
) -> None:
    redirect = "https://app.example.com/faxplus/callback"
    config = write_config(tmp_path, vendor, redirect)
    env = secret_env(vendor)
    # a dead grant, as the daemon would have left it
    store = open_stores(load_config(str(config)))["files"]
    store.write(
        "state/acme-fax",
        AccountState(
            "acme-fax",
            provider="faxplus",
            failed=True,
            last_error="invalid_grant",
            consecutive_failures=4,
        ).to_record(),
        expected_version=None,
    )

    first = run_rotator(["authorize", "acme-fax", "-c", str(config)], env=env)
    assert first.returncode == 0, first.stderr
    assert "--code" in first.stdout
    url = authorization_url(first.stdout)
    with httpx.Client() as browser:
        location = click(browser, url, follow=False).headers["location"]
    assert location.startswith(redirect + "?code=")

    # a pasted address with another state is refused; nothing stored
    forged = location.split("&state=")[0] + "&state=forged"
    refused = run_with_code(
        ["authorize", "acme-fax", "-c", str(config), "--code", forged], code_of(location), env
    )
    assert refused.returncode == 1 and "state does not match" in refused.stderr
    assert stored_state(config).refresh_token is None

    done = run_with_code(
        ["authorize", "acme-fax", "-c", str(config), "--code", location], code_of(location), env
    )
    assert done.returncode == 0, done.stderr
    assert "refresh token stored in files:state/acme-fax" in done.stdout
    state = stored_state(config)
    assert state.refresh_token is not None and not state.failed
    assert state.consecutive_failures == 0 and state.last_error == ""
    assert state.refresh_expires_at is None  # no enhanced security
    assert "authorize_state" not in state.extra


def _redirect_without_state(vendor: FaxPlusEmulator, redirect_uri: str) -> str:
    """Where the vendor sends a browser that authorized with no ``state`` (a hand-made link)."""
    query = {
        "response_type": "code",
        "client_id": vendor.client_id,
        "redirect_uri": redirect_uri,
        "scope": "all",
    }
    with httpx.Client() as browser:
        url = f"{vendor.authorize_url}?{urlencode(query)}"
        return str(click(browser, url, follow=False).headers["location"])


def test_bare_code_is_accepted_with_a_note(tmp_path: Path, vendor: FaxPlusEmulator) -> None:
    config = write_config(tmp_path, vendor, "https://app.example.com/cb")
    location = _redirect_without_state(vendor, "https://app.example.com/cb")
    code = httpx.URL(location).params["code"]
    done = run_with_code(
        ["authorize", "acme-fax", "-c", str(config), "--code", code, "--no-verify"],
        code,
        secret_env(vendor),
    )
    assert done.returncode == 0, done.stderr
    assert "cannot be checked" in done.stderr and "verified" not in done.stdout
    assert stored_state(config).refresh_token is not None
    # a spent code: the vendor refuses, we exit 1 and say why
    again = run_with_code(
        ["authorize", "acme-fax", "-c", str(config), "--code", code], code, secret_env(vendor)
    )
    assert again.returncode == 1 and "invalid_grant" in again.stderr


def test_authorize_refuses_other_providers_and_missing_redirect(
    tmp_path: Path, vendor: FaxPlusEmulator
) -> None:
    config = write_config(tmp_path, vendor, None)
    proc = run_rotator(["authorize", "acme-fax", "-c", str(config)], env=secret_env(vendor))
    assert proc.returncode == 2
    assert "accounts.acme-fax.redirect_uri: required by `rotator authorize`" in proc.stderr
    proc = run_rotator(["authorize", "nope", "-c", str(config)])
    assert proc.returncode == 2 and "no account 'nope'" in proc.stderr


def test_enhanced_security_authorized_28_days_ago_shows_in_status(
    tmp_path: Path,
) -> None:
    authorized = datetime.now(UTC).replace(microsecond=0) - timedelta(days=28)
    with running(FaxPlusEmulator(enhanced=True)) as vendor:
        config = write_config(tmp_path, vendor, "http://127.0.0.1:1/cb", enhanced_security=True)
        refresh = vendor.grant(authorized_at=authorized.timestamp())
        store = open_stores(load_config(str(config)))["files"]
        store.write(
            "state/acme-fax",
            AccountState(
                "acme-fax",
                provider="faxplus",
                refresh_token=Secret(refresh),
                authorized_at=authorized,
            ).to_record(),
            expected_version=None,
        )
        env = secret_env(vendor)
        rotated = run_rotator(["refresh", "acme-fax", "-c", str(config)], env=env)
        assert rotated.returncode == 0, rotated.stderr
        status = run_rotator(["status", "--json", "-c", str(config)], env=env)
        table = run_rotator(["status", "-c", str(config)], env=env)
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)["accounts"]
    expected = format_time(authorized + timedelta(days=30))
    assert row["refresh_token_expires_at"] == expected  # two days from now, not 30
    assert expected in table.stdout
    assert stored_state(config).authorized_at == authorized


def test_parse_pasted_code() -> None:
    assert parse_pasted_code("abc").code == "abc"
    pasted = parse_pasted_code("https://app/cb?code=c1&state=s1")
    assert (pasted.code, pasted.state) == ("c1", "s1")
    assert parse_pasted_code("?error=access_denied&state=s").error == "access_denied"


def test_authorize_error_is_a_runtime_failure() -> None:
    assert issubclass(AuthorizeError, Exception)


def test_authorize_waits_for_a_rotation_in_flight_before_spending_the_code(
    tmp_path: Path, vendor: FaxPlusEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange runs under the account's lease: a daemon rotating right now would
    otherwise write its older grant over the new one."""
    from rotator.commands.authorize import authorize

    monkeypatch.setenv("FAXPLUS_SECRET", vendor.clients[vendor.client_id])
    config_path = write_config(tmp_path, vendor, "https://app.example.com/cb")
    config = load_config(str(config_path))
    store = open_stores(config)["files"]
    held = AccountState(
        "acme-fax",
        provider="faxplus",
        lease_owner="daemon-host:1234",
        lease_until=datetime.now(UTC) + timedelta(hours=1),
    )
    store.write("state/acme-fax", held.to_record(), expected_version=None)
    with pytest.raises(AuthorizeError, match=r"daemon-host:1234\) is rotating acme-fax"):
        authorize(config, "acme-fax", code="code-never-sent", lease_wait=0.3, verify=False)
    assert vendor.requests == []  # the code was not spent

    # a lease that ends while we wait: then the grant is stored and the lease cleared
    record = store.read("state/acme-fax")
    assert record is not None
    soon = AccountState.from_record("acme-fax", record.data)
    store.write(
        "state/acme-fax",
        AccountState(
            "acme-fax",
            provider="faxplus",
            lease_owner=soon.lease_owner,
            lease_until=datetime.now(UTC) + timedelta(seconds=0.5),
        ).to_record(),
        expected_version=record.version,
    )
    location = _redirect_without_state(vendor, "https://app.example.com/cb")
    out = tmp_path / "out.txt"
    with open(out, "w") as handle:
        assert (
            authorize(
                config, "acme-fax", code=code_of(location), out=handle, lease_wait=10, verify=False
            )
            == 0
        )
    state = stored_state(config_path)
    assert state.refresh_token is not None and state.lease_owner == ""
    assert "refresh token stored" in out.read_text()


def test_listener_ignores_forged_redirects_and_warns_off_loopback(
    tmp_path: Path, vendor: FaxPlusEmulator
) -> None:
    """Strangers' requests to the listener (here bound to every interface, with the
    warning that draws) are refused and do not end the wait: the real redirect,
    which comes after them, completes the authorization."""
    port = free_port()
    vendor.redirect_uris[vendor.client_id] = f"http://127.0.0.1:{port}/callback"
    config = write_config(tmp_path, vendor, f"http://127.0.0.1:{port}/callback")
    log = leakcheck.log_file("cli-authorize-forged")
    with open(log, "w+b") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "rotator", "authorize", "acme-fax", "-c", str(config)),
                *("--listen", f"0.0.0.0:{port}", "--timeout", "60", "--no-verify"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env_for(secret_env(vendor)),
        )
        try:
            deadline = time.monotonic() + 30
            while "Waiting for the redirect" not in log.read_text():
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)
            url = authorization_url(log.read_text())
            listener = f"http://127.0.0.1:{port}"
            with httpx.Client(timeout=10) as stranger:
                for query in (
                    "code=forged&state=guess",
                    "code=forged",
                    "error=access_denied&state=guess",
                    "error=access_denied",
                ) * 10:
                    assert stranger.get(f"{listener}/callback?{query}").status_code == 400
                    assert stranger.get(f"{listener}/other?{query}").status_code == 400
            assert proc.poll() is None  # still waiting
            with httpx.Client(follow_redirects=True) as browser:
                page = click(browser, url)
            assert page.status_code == 200 and "You can close this" in page.text
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert f"warning: --listen 0.0.0.0:{port} is not a loopback address" in output
    assert f"--listen 127.0.0.1:{port}" in output
    assert "acme-fax: authorized at" in output
    exchanges = [r for r in vendor.requests if r.path == "/token"]
    assert len(exchanges) == 1 and "forged" not in str(exchanges[0].query)
    assert stored_state(config).refresh_token is not None


def test_code_from_stdin_keeps_it_off_the_command_line(
    tmp_path: Path, vendor: FaxPlusEmulator
) -> None:
    redirect = "https://app.example.com/faxplus/callback"
    config = write_config(tmp_path, vendor, redirect)
    env = secret_env(vendor)
    first = run_rotator(["authorize", "acme-fax", "-c", str(config)], env=env)
    assert first.returncode == 0, first.stderr
    with httpx.Client() as browser:
        location = click(browser, authorization_url(first.stdout), follow=False).headers["location"]
    # run_rotator logs its argv for the leak check: the code is not in it, only in stdin
    done = run_rotator(
        ["authorize", "acme-fax", "-c", str(config), "--code", "-", "--no-verify"],
        env=env,
        stdin=f"\n{location}\n",
    )
    assert done.returncode == 0, done.stderr
    assert "refresh token stored in files:state/acme-fax" in done.stdout
    assert code_of(location) not in done.stdout + done.stderr
    assert stored_state(config).refresh_token is not None


def test_a_stopped_waiter_ends_the_wait_for_a_lease_at_once(
    tmp_path: Path, vendor: FaxPlusEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rotator.commands.authorize import authorize
    from rotator.waits import Waiter

    monkeypatch.setenv("FAXPLUS_SECRET", vendor.clients[vendor.client_id])
    config = load_config(str(write_config(tmp_path, vendor, "https://app.example.com/cb")))
    held = AccountState(
        "acme-fax",
        provider="faxplus",
        lease_owner="daemon-host:1234",
        lease_until=datetime.now(UTC) + timedelta(hours=1),
    )
    open_stores(config)["files"].write("state/acme-fax", held.to_record(), expected_version=None)
    waiter = Waiter()
    waiter.stop()
    started = time.monotonic()
    with pytest.raises(AuthorizeError, match="is rotating acme-fax right now"):
        authorize(config, "acme-fax", code="never-sent", lease_wait=60, waiter=waiter)
    assert time.monotonic() - started < 10
    assert vendor.requests == []


# -- Fax.Plus does not send the state back (issue 16) ------------------------------------


def test_a_redirect_without_state_says_how_to_finish_with_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The listener cannot take a redirect that carries no state (a stranger could send
    one), but it says so, in the browser and once in the terminal, with the command that
    finishes the authorization; that command then works."""
    from rotator.commands.authorize import authorize

    port = free_port()
    redirect = f"http://127.0.0.1:{port}/callback"
    with running(FaxPlusEmulator(echo_state=False)) as vendor:
        monkeypatch.setenv("FAXPLUS_SECRET", vendor.clients[vendor.client_id])
        config = load_config(str(write_config(tmp_path, vendor, redirect)))
        out = tmp_path / "out.txt"
        outcome: list[BaseException | int] = []

        def run() -> None:
            with open(out, "w") as handle:
                try:
                    outcome.append(authorize(config, "acme-fax", timeout=3, out=handle))
                except BaseException as exc:  # the assertion below names it
                    outcome.append(exc)

        waiting = threading.Thread(target=run)
        waiting.start()
        deadline = time.monotonic() + 30
        while "Waiting for the redirect" not in (out.read_text() if out.exists() else ""):
            assert time.monotonic() < deadline, "authorize did not start listening"
            time.sleep(0.05)
        with httpx.Client(follow_redirects=True) as browser:
            pages = [click(browser, authorization_url(out.read_text())) for _ in range(2)]
        waiting.join(timeout=30)
        landed = str(pages[0].url)
        assert "state=" not in landed and "code=" in landed
        for page in pages:
            assert page.status_code == 400
            assert "carries no <code>state</code>" in page.text
            assert "rotator authorize acme-fax --code" in page.text
        (failure,) = outcome
        assert isinstance(failure, AuthorizeError)
        assert "2 came without a state" in str(failure)
        assert "rotator authorize acme-fax --code '<the address>'" in str(failure)
        err = capsys.readouterr().err
        assert err.count("without a state (Fax.Plus did not send back") == 1  # once
        assert "rotator authorize acme-fax --code '<the address>'" in err
        assert code_of(landed) not in err + str(failure)  # the code is not repeated

        # what the message says works: paste the address the browser shows
        with vendor.lock:  # refused by the listener, so never spent
            assert code_of(landed) in vendor.codes
        with open(tmp_path / "out2.txt", "w") as handle:
            assert authorize(config, "acme-fax", code=landed, out=handle) == 0
        assert "no state came with the code" in capsys.readouterr().err
        state = stored_state(tmp_path / "rotator.yaml")
        assert state.refresh_token is not None and state.authorized_at is not None


def test_a_refresh_token_expiry_sent_with_the_code_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without enhanced security the grant still gets the expiry Fax.Plus sends."""
    from rotator.commands.authorize import authorize

    with running(FaxPlusEmulator(refresh_expires_in=10 * 86400)) as vendor:
        monkeypatch.setenv("FAXPLUS_SECRET", vendor.clients[vendor.client_id])
        config = load_config(str(write_config(tmp_path, vendor, "https://app.example.com/cb")))
        location = _redirect_without_state(vendor, "https://app.example.com/cb")
        out = tmp_path / "out.txt"
        with open(out, "w") as handle:
            assert authorize(config, "acme-fax", code=location, out=handle) == 0
    state = stored_state(tmp_path / "rotator.yaml")
    assert state.authorized_at is not None and state.refresh_expires_at is not None
    assert state.refresh_expires_at == state.authorized_at + timedelta(days=10)
    assert state.extra["refresh_expiry_sent"] == format_time(state.refresh_expires_at)
    assert f"Fax.Plus says so: it expires {format_time(state.refresh_expires_at)}" in (
        out.read_text()
    )


@pytest.mark.parametrize(("client_id", "warned"), [("APIK-abc", False), ("my-fax-app", True)])
def test_check_warns_when_the_client_id_is_not_an_apik_id(
    tmp_path: Path, client_id: str, warned: bool
) -> None:
    with running(FaxPlusEmulator(clients={client_id: "S3cretClientValue42"})) as vendor:
        config = write_config(tmp_path, vendor, "https://app.example.com/cb")
    proc = run_rotator(["check", "-c", str(config)])
    assert proc.returncode == 0, proc.stderr  # a warning, not an error
    warning = f"warning: accounts.acme-fax.client_id: '{client_id}' does not start with APIK-"
    assert (warning in proc.stderr) is warned
