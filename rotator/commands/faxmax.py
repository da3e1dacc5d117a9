"""``rotator faxmax-login-url``: a FaxMAX passwordless web login URL (a 3-second credential)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rotator.config.models import Config

__all__ = ["login_url"]


def login_url(
    config: Config,
    account: str,
    *,
    user: str,
    remote_ip: str,
    page: str = "inboxes",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the URL on stdout (for a pipe) and the warning on stderr; the exit code."""
    from rotator.providers.faxmax.provider import faxmax_login_url

    url = faxmax_login_url(config, account, user=user, remote_ip=remote_ip, page=page)
    print(url, file=out or sys.stdout, flush=True)
    print("valid for 3 seconds: open it now", file=err or sys.stderr)
    return 0
