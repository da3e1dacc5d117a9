"""``rotator check``: the redirect URI of every account that can be authorized."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.proc import run_rotator

CALLBACK = "https://rotator.example.com/oauth/callback"


def write(tmp_path: Path, *, console: bool, fax_redirect: str | None) -> Path:
    server: dict[str, Any] = {}
    if console:
        server = {
            "listen": "127.0.0.1:9464",
            "console": {"public_url": "https://rotator.example.com/"},
        }
    fax: dict[str, Any] = {
        "provider": "faxplus",
        "client_id": "APIK-x",
        "client_secret": "env:NOPE",
        "enhanced_security": True,
        "sinks": [{"store": "files", "path": "fp.json"}],
    }
    if fax_redirect:
        fax["redirect_uri"] = fax_redirect
    common = {"token_url": "https://idp.example/token", "client_id": "c", "client_auth": "none"}
    config = {
        "server": server,
        "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
        "accounts": {
            "fp": fax,
            "idp": {
                "provider": "oauth2",
                "authorize_url": "https://idp.example/authorize",
                "sinks": [{"store": "files", "path": "idp.json"}],
                **common,
            },
            "cc": {
                "provider": "oauth2",
                "grant": "client_credentials",
                "client_auth": "post",
                "client_secret": "env:NOPE",
                "token_url": "https://idp.example/token",
                "client_id": "c",
                "sinks": [{"store": "files", "path": "cc.json"}],
            },
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_with_the_console_every_authorizable_account_uses_its_callback(tmp_path: Path) -> None:
    done = run_rotator(["check", "-c", str(write(tmp_path, console=True, fax_redirect=None))])
    assert done.returncode == 0, done.stderr
    assert f"fp: redirect URI {CALLBACK}" in done.stdout
    assert f"idp: redirect URI {CALLBACK}" in done.stdout
    assert "cc:" not in done.stdout  # client_credentials: nothing to authorize
    same = run_rotator(["check", "-c", str(write(tmp_path, console=True, fax_redirect=CALLBACK))])
    assert same.returncode == 0, same.stderr


def test_an_account_redirect_uri_that_disagrees_with_the_console_is_refused(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, console=True, fax_redirect="http://127.0.0.1:8765/callback")
    refused = run_rotator(["check", "-c", str(path)])
    assert refused.returncode == 2
    assert "accounts.fp.redirect_uri" in refused.stderr and CALLBACK in refused.stderr
    assert "configuration OK" not in refused.stdout  # a refusal is not also an OK


def test_without_the_console_the_accounts_own_uri_is_printed(tmp_path: Path) -> None:
    path = write(tmp_path, console=False, fax_redirect="http://127.0.0.1:8765/callback")
    done = run_rotator(["check", "-c", str(path)])
    assert done.returncode == 0, done.stderr
    assert "fp: redirect URI http://127.0.0.1:8765/callback" in done.stdout
    assert "idp: no redirect URI" in done.stdout
