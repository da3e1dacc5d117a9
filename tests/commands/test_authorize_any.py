"""``rotator authorize`` for any Authorizable provider (OAuth2 with PKCE), and ``--link``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator.commands.authorize import authorize
from rotator.config import load_config
from rotator.service.app import open_stores
from rotator.state import AccountState
from tests.fakes.consent import click
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.proc import run_rotator

SECRET = leakcheck.register("idp-secret-of-the-authorize-tests", "client secret")
KEY = leakcheck.register("signing-key-of-the-authorize-tests-42", "signing key")


@pytest.fixture
def idp() -> Iterator[OAuth2Emulator]:
    with emulator(clients={"app": SECRET}, require_pkce=True) as server:
        yield server


def write(tmp_path: Path, idp: OAuth2Emulator, *, console: bool = False, **acct: Any) -> Path:
    server: dict[str, Any] = {"spool_dir": str(tmp_path / "spool")}
    if console:
        server["listen"] = "127.0.0.1:9464"
        server["console"] = {"public_url": "https://rotator.example.com", "signing_key": "env:K"}
    config = {
        "server": server,
        "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
        "accounts": {
            "idp": {
                "provider": "oauth2",
                "token_url": idp.token_url,
                "client_id": "app",
                "client_secret": "env:IDP_SECRET",
                "sinks": [{"store": "files", "path": "idp.json"}],
                **acct,
            }
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stored(path: Path) -> AccountState:
    record = open_stores(load_config(str(path)))["files"].read("state/idp")
    assert record is not None
    return AccountState.from_record("idp", record.strings())


def test_generic_oauth2_with_pkce_printed_url_then_pasted_address(
    tmp_path: Path, idp: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDP_SECRET", SECRET)
    path = write(
        tmp_path,
        idp,
        authorize_url=idp.authorize_url,
        redirect_uri="https://app.example.com/cb",
        authorize_params={"access_type": "offline"},
    )
    config = load_config(str(path))
    first = io.StringIO()
    assert authorize(config, "idp", out=first) == 0
    url = next(w for w in first.getvalue().split() if w.startswith(idp.authorize_url))
    assert "code_challenge=" in url and "code_challenge_method=S256" in url
    assert "access_type=offline" in url and "verifier" not in url
    with httpx.Client() as browser:
        back = str(click(browser, url, follow=False).headers["location"])
    assert back.startswith("https://app.example.com/cb?code=")
    done = io.StringIO()
    assert authorize(config, "idp", code=back, out=done) == 0
    leakcheck.log_file("authorize-any").write_text(first.getvalue() + done.getvalue())
    assert "idp: authorized at" in done.getvalue() and "sinks published" in done.getvalue()
    state = stored(path)
    assert state.refresh_token is not None and state.authorized_at is not None
    assert not {"authorize_state", "authorize_verifier"} & set(state.extra)
    sink = json.loads((tmp_path / "store" / "idp.json").read_text())
    assert state.access_token is not None and sink["access_token"] == state.access_token.reveal()


def test_a_wrong_pkce_verifier_is_refused_and_nothing_stored(
    tmp_path: Path, idp: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDP_SECRET", SECRET)
    path = write(
        tmp_path, idp, authorize_url=idp.authorize_url, redirect_uri="https://app.example.com/cb"
    )
    config = load_config(str(path))
    assert authorize(config, "idp", out=io.StringIO()) == 0
    # a second start replaces the first's state and verifier: the first URL's code fails
    out = io.StringIO()
    url = ""
    for _ in range(2):
        out = io.StringIO()
        assert authorize(config, "idp", out=out) == 0
        url = url or next(w for w in out.getvalue().split() if w.startswith(idp.authorize_url))
    with httpx.Client() as browser:
        back = str(click(browser, url, follow=False).headers["location"])
    code = httpx.URL(back).params["code"]
    from rotator.errors import InvalidGrant

    with pytest.raises(InvalidGrant, match="PKCE"):
        authorize(config, "idp", code=code, out=io.StringIO())
    assert stored(path).refresh_token is None


@pytest.mark.parametrize(
    ("acct", "told"),
    [
        ({"grant": "client_credentials"}, "no authorization"),
        ({}, "authorize_url is not set"),
    ],
)
def test_accounts_that_cannot_be_authorized_exit_2_saying_why(
    tmp_path: Path, idp: OAuth2Emulator, acct: dict[str, str], told: str
) -> None:
    path = write(tmp_path, idp, **acct)
    proc = run_rotator(["authorize", "idp", "-c", str(path)], env={"IDP_SECRET": SECRET})
    assert proc.returncode == 2 and told in proc.stderr


def test_link_needs_the_console_and_prints_a_signed_link(
    tmp_path: Path, idp: OAuth2Emulator
) -> None:
    path = write(tmp_path, idp, authorize_url=idp.authorize_url)
    proc = run_rotator(["authorize", "idp", "--link", "-c", str(path)], env={"IDP_SECRET": SECRET})
    assert proc.returncode == 2 and "add server.console" in proc.stderr
    path = write(tmp_path, idp, console=True, authorize_url=idp.authorize_url)
    env = {"IDP_SECRET": SECRET, "K": KEY}
    proc = run_rotator(["authorize", "idp", "--link", "-c", str(path)], env=env)
    assert proc.returncode == 0, proc.stderr
    assert "https://rotator.example.com/authorize/idp?exp=" in proc.stdout


def test_a_link_from_the_command_line_opens_on_the_daemon_with_the_generated_key(
    tmp_path: Path, idp: OAuth2Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from rotator.commands.link import print_link
    from rotator.service.app import build_console, build_rotator

    monkeypatch.setenv("IDP_SECRET", SECRET)
    path = write(tmp_path, idp, console=True, authorize_url=idp.authorize_url)
    raw = yaml.safe_load(path.read_text())
    del raw["server"]["console"]["signing_key"]
    path.write_text(yaml.safe_dump(raw))
    config = load_config(str(path))
    assert config.server.console is not None and config.server.console.signing_key is None
    out = io.StringIO()
    assert print_link(config, "idp", out=out) == 0
    link = next(w for w in out.getvalue().split() if w.startswith("https://"))
    rotator = build_rotator(config)
    try:
        console = build_console(config, rotator)
        assert console is not None
        query = link.split("?", 1)[1]
        assert console.signer.verify("idp", query, datetime.now(UTC)).account == "idp"
    finally:
        rotator.http.close()
    assert oct((tmp_path / "spool" / "console.key").stat().st_mode & 0o777) == "0o600"
