"""``rotator demo``: the daemon on an embedded local sandbox, and the re-authorization loop.

Starts two sandbox servers on free loopback ports: a strict OAuth2 token server
(short-lived access tokens, rotating refresh tokens) and a Fax.Plus-like vendor
with a login page and an Allow button. It writes a configuration with three
accounts whose sinks are files under ``./rotator-demo/``, with the console on the
daemon's listener and a webhook alert channel aimed at a receiver that prints
alerts here, seeds the accounts and runs the daemon in the foreground until Ctrl-C.

``demo-fax`` is the point: an enhanced-security account authorized 30 days ago
less ``wall_in``, so its refresh token dies minutes after the start. Its first
rotation raises the expiry alert, printed with the console link; a newcomer opens
it, presses Allow on the sandbox's page, and watches the alert resolve and the
account's refresh expiry move 30 days ahead, all within the first minute.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rotator.demo.alerts import AlertPrinter
from rotator.demo.sandbox import Sandbox
from rotator.providers.faxplus import ENHANCED_SECURITY_LIFETIME
from rotator.secrets import Secret
from rotator.service.app import build_daemon
from rotator.state import AccountState

__all__ = ["FAX_ACCOUNT", "FAX_CLIENT", "run_demo"]

FAX_ACCOUNT = "demo-fax"
FAX_CLIENT = "APIK-demo"

_CONFIG = """\
# Written by `rotator demo`. A real configuration looks the same, with real
# token URLs and client secrets referenced from env:, file: or cred:.
server:
  workers: 4
  shutdown_grace: 5s
  spool_dir: {spool}            # the demo's own, as a real one names the daemon's
  listen: 127.0.0.1:{port}      # /metrics, /healthz, /readyz and the console
  console:
    public_url: {console}     # the redirect URI is {console}/oauth/callback
    link_ttl: 1h
stores:
  tokens: {{type: file, directory: {tokens}}}
  state:  {{type: file, directory: {state}}}
defaults:
  state: {{store: state}}
  min_lifetime: 1s              # the sandbox's tokens live seconds; vendors' do not
  refresh_share: 0.67
  jitter: 0.1
alerts:
  refresh_token_warn: [7d, 1d]
  channels:
    - {{type: webhook, url: file:{hook}, format: json}}   # printed in the demo's terminal
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
  {fax}:                     # Fax.Plus-like, enhanced security: dies 30 days after authorization
    provider: faxplus
    client_id: {fax_client}
    client_secret: file:{fax_secret}
    enhanced_security: true
    token_url: {vendor}/token
    authorize_url: {vendor}/login
    api_base: {vendor}/v3
    redirect_uri: {console}/oauth/callback
    sinks:
      - {{store: tokens, path: {fax}.json, format: json}}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def run_demo(
    *,
    directory: str = "rotator-demo",
    lifetime: float = 20.0,
    wall_in: timedelta = timedelta(minutes=5),
) -> int:
    base = Path(directory).resolve()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A previous demo's grants died with its sandbox: start clean.
    for old in ("state", "tokens"):
        shutil.rmtree(base / old, ignore_errors=True)
    client_secret = secrets.token_urlsafe(24) + "+/:%"  # exercises RFC 6749 form-encoding
    # Fax.Plus documents plain base64(id:secret) in HTTP Basic: a URL-safe secret
    fax_secret = secrets.token_urlsafe(24)
    _private(base / "client-secret", client_secret + "\n")
    _private(base / "fax-secret", fax_secret + "\n")

    port = _free_port()
    console = f"http://127.0.0.1:{port}"
    sandbox = Sandbox(
        clients={"demo-app": client_secret, "demo-svc": client_secret}, access_ttl=lifetime
    )
    url = sandbox.start()
    vendor = Sandbox(
        clients={FAX_CLIENT: fax_secret},
        access_ttl=lifetime,
        allow_query=True,  # Fax.Plus takes the token request's parameters in the query
        token_path="/token",
        redirects={FAX_CLIENT: {f"{console}/oauth/callback"}},
    )
    vendor.authorizations.app_name = "rotator demo"
    vendor_url = vendor.start()
    printer = AlertPrinter(sys.stderr)
    _private(base / "alert-hook", printer.start() + "\n")
    config_file = base / "rotator.yaml"
    _private(
        config_file,
        _CONFIG.format(
            tokens=base / "tokens",
            state=base / "state",
            spool=base / "spool",
            url=url,
            secret=base / "client-secret",
            port=port,
            console=console,
            hook=base / "alert-hook",
            fax=FAX_ACCOUNT,
            fax_client=FAX_CLIENT,
            fax_secret=base / "fax-secret",
            vendor=vendor_url.removesuffix("/token"),
        ),
    )
    try:
        daemon = build_daemon(str(config_file))
        authorized_at = datetime.now(UTC) - ENHANCED_SECURITY_LIFETIME + wall_in
        for seeded in (
            AccountState(
                account="demo-refresh",
                provider="oauth2",
                refresh_token=Secret(sandbox.issue_grant("demo-app")),
            ),
            AccountState(
                account=FAX_ACCOUNT,
                provider="faxplus",
                refresh_token=Secret(vendor.issue_grant(FAX_CLIENT)),
                authorized_at=authorized_at,
                refresh_expires_at=authorized_at + ENHANCED_SECURITY_LIFETIME,
            ),
        ):
            account = daemon.rotator.accounts[seeded.account]
            account.state_store.write(account.state_path, seeded.to_record(), expected_version=None)
        minutes = int(wall_in.total_seconds() // 60)
        print(
            f"rotator demo: sandbox token server at {url} (access tokens live {lifetime:g}s)\n"
            f"  config:  {config_file}\n"
            f"  tokens:  {base / 'tokens'}/ (demo-refresh.json, demo-refresh.env, "
            f"demo-client.token, {FAX_ACCOUNT}.json)\n"
            f"  console: {console}/  (the status page; loopback only)\n"
            f"  status:  rotator status -c {config_file}\n"
            f"  {FAX_ACCOUNT} was authorized 30 days ago less {minutes} minutes: its refresh "
            "token\n  is about to die. Its alert below carries a link: open it, press Allow, and\n"
            "  watch the alert resolve. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        return daemon.run_forever()
    finally:
        printer.stop()
        vendor.stop()
        sandbox.stop()
