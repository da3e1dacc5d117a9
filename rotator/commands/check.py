"""``rotator check [--online]``: validate the configuration, and with --online what it names.

For every account that can be authorized it prints the redirect URI to register
at the vendor; with the console on that is ``{public_url}/oauth/callback`` for
all of them, and an account whose own ``redirect_uri`` says otherwise is refused
(exit 2): its links would send the browser somewhere the console is not.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rotator.config.models import Config

__all__ = ["check", "redirect_uris"]


def check(config: Config, *, online: bool = False, out: TextIO | None = None) -> int:
    """Say the (already validated) configuration is OK; --online resolves and probes."""
    # every refusal first: "configuration OK" is printed only for one that is
    uris = redirect_uris(config)
    files = f" (from {1 + len(config.included)} files)" if config.included else ""
    print(
        f"{config.source}: configuration OK: {len(config.accounts)} accounts{files}, "
        f"{len(config.stores)} stores",
        file=out or sys.stdout,
    )
    for pattern in config.unmatched_includes:
        print(
            f"warning: include: {pattern!r} matches no file (allowed: an empty directory "
            "has no accounts yet; check the pattern if it should)",
            file=sys.stderr,
        )
    # valid, but unlike what the vendor documents (a settings model may say so)
    for name, settings in config.accounts.items():
        for key, advice in getattr(settings, "config_warnings", list)():
            print(f"warning: accounts.{name}.{key}: {advice}", file=sys.stderr)
    for line in uris:
        print(line, file=out or sys.stdout)
    if not online:
        return 0
    from rotator.commands.online import check_online

    return check_online(config)


def redirect_uris(config: Config) -> list[str]:
    """``ACCOUNT: redirect URI …`` per account that can be authorized.

    Raises ConfigError (exit 2) for an account whose ``redirect_uri`` is not the
    console's callback while the console is on.
    """
    from rotator.errors import ConfigError
    from rotator.providers.base import Authorizable
    from rotator.providers.registry import provider_class

    console = config.server.console
    lines = []
    for name, settings in sorted(config.accounts.items()):
        provider = provider_class(settings.provider)(name, settings)
        if not isinstance(provider, Authorizable) or provider.authorize_problem() is not None:
            continue
        own = provider.redirect_uri
        if console is not None and own is not None and own != console.callback_url:
            raise ConfigError(
                f"{own} is not the console's redirect URI; with server.console on, every "
                f"account is authorized through {console.callback_url}: set redirect_uri to "
                "that (and register it at the vendor), or remove it",
                path=f"accounts.{name}.redirect_uri",
            )
        uri = own or (console.callback_url if console is not None else None)
        if uri is None:
            lines.append(
                f"{name}: no redirect URI (set redirect_uri or server.console to authorize)"
            )
        else:
            lines.append(f"{name}: redirect URI {uri} (register it at the vendor)")
    return lines
