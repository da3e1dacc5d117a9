"""``rotator authorize ACCOUNT --link``: a signed one-time console link, on demand.

For a browser that reaches the daemon (``server.console``) rather than this
host; the key is the daemon's (``signing_key``, or the generated file beside the
spool key, which this host must share).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from rotator.errors import ConfigError
from rotator.tokens import format_time

if TYPE_CHECKING:
    from rotator.config.models import Config

__all__ = ["print_link"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def print_link(config: Config, account: str, *, out: TextIO | None = None) -> int:
    """``--link``: a signed, one-time console link for ``account``."""
    from rotator.rotation.spool import spool_dir
    from rotator.service.console.links import LinkSigner

    console = config.server.console
    if console is None:
        raise ConfigError(
            "--link needs the console: add server.console {public_url: https://...} (and "
            "server.listen) so that browsers reach the daemon; or run without --link",
            path="server.console",
        )
    from rotator.commands.authorize import _provider

    _provider(config, account)  # exit 2 for an account that cannot be authorized
    key_dir = spool_dir(config.server.spool_dir)
    link = LinkSigner.from_settings(console, key_dir).mint(account, _utc_now())
    print(
        f"Open this link in a browser before {format_time(_utc_now() + console.link_ttl)} "
        f"(it works once):\n\n  {link}\n",
        file=out or sys.stdout,
        flush=True,
    )
    return 0
