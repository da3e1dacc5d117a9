"""``rotator check [--online]``: validate the configuration, and with --online what it names."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rotator.config.models import Config

__all__ = ["check"]


def check(config: Config, *, online: bool = False, out: TextIO | None = None) -> int:
    """Say the (already validated) configuration is OK; --online resolves and probes."""
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
    if not online:
        return 0
    from rotator.commands.online import check_online

    return check_online(config)
