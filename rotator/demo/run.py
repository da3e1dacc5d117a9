"""``rotator demo``: the daemon on an embedded local sandbox.

Starts the sandbox token server on a free loopback port (short-lived access
tokens, rotating refresh tokens), writes a configuration with two accounts whose
sinks are files under ``./rotator-demo/``, seeds the refresh-token account, and
runs the daemon in the foreground until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from rotator.demo.sandbox import Sandbox
from rotator.secrets import Secret
from rotator.service.app import build_daemon
from rotator.state import AccountState

__all__ = ["run_demo"]

_CONFIG = """\
# Written by `rotator demo`. A real configuration looks the same, with real
# token URLs and client secrets referenced from env:, file: or cred:.
server:
  workers: 4
  shutdown_grace: 5s
stores:
  tokens: {{type: file, directory: {tokens}}}
  state:  {{type: file, directory: {state}}}
defaults:
  state: {{store: state}}
  min_lifetime: 1s              # the sandbox's tokens live seconds; vendors' do not
  refresh_share: 0.67
  jitter: 0.1
accounts:
  demo-refresh:                 # rotating refresh tokens, like a strict OAuth2 vendor
    provider: oauth2
    token_url: {url}
    grant: refresh_token
    client_id: demo-app
    client_secret: file:{secret}
    client_auth: basic
    sinks:
      - {{store: tokens, path: demo-refresh.json, format: json}}
      - {{store: tokens, path: demo-refresh.env, format: env}}
  demo-client:                  # a service account: client_credentials, no refresh token
    provider: oauth2
    token_url: {url}
    grant: client_credentials
    client_id: demo-svc
    client_secret: file:{secret}
    client_auth: post
    sinks:
      - {{store: tokens, path: demo-client.token, format: token}}
"""


def run_demo(*, directory: str = "rotator-demo", lifetime: float = 20.0) -> int:
    base = Path(directory).resolve()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A previous demo's grants died with its sandbox: start clean.
    for old in ("state", "tokens"):
        shutil.rmtree(base / old, ignore_errors=True)
    client_secret = secrets.token_urlsafe(24) + "+/:%"  # exercises RFC 6749 form-encoding
    secret_file = base / "client-secret"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(client_secret + "\n")

    sandbox = Sandbox(
        clients={"demo-app": client_secret, "demo-svc": client_secret}, access_ttl=lifetime
    )
    url = sandbox.start()
    config_file = base / "rotator.yaml"
    config_file.write_text(
        _CONFIG.format(tokens=base / "tokens", state=base / "state", url=url, secret=secret_file),
        encoding="utf-8",
    )
    config_file.chmod(0o600)
    daemon = build_daemon(str(config_file))
    account = daemon.rotator.accounts["demo-refresh"]
    seeded = AccountState(
        account="demo-refresh",
        provider="oauth2",
        refresh_token=Secret(sandbox.issue_grant("demo-app")),
    )
    account.state_store.write(account.state_path, seeded.to_record(), expected_version=None)
    print(
        f"rotator demo: sandbox token server at {url} (access tokens live {lifetime:g}s)\n"
        f"  config:  {config_file}\n"
        f"  tokens:  {base / 'tokens'}/ (demo-refresh.json, demo-refresh.env, demo-client.token)\n"
        f"  watch:   watch -n1 cat {base / 'tokens' / 'demo-refresh.json'}\n"
        f"  status:  rotator status -c {config_file}\n"
        "  Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    try:
        return daemon.run_forever()
    finally:
        sandbox.stop()
