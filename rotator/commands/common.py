"""What every command beside the daemon needs: the config, an account by name, a Rotator.

Kept free of heavy imports at module level, so that ``rotator --help`` (which
imports :class:`UsageError` through the command line) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.config.models import Config
    from rotator.rotation.rotator import Rotator

__all__ = ["UsageError", "load", "open_rotator", "require_account"]


class UsageError(Exception):
    """Bad usage that argparse could not catch (exit 2); the message says what is right."""


def load(config_arg: str | None) -> Config:
    """The validated configuration named by ``-c`` (or $ROTATOR_CONFIG, or the default)."""
    from rotator.config import config_path, load_config

    return load_config(config_path(config_arg))


def require_account(config: Config, name: str) -> None:
    """UsageError naming the configured accounts when ``name`` is not one of them."""
    if name not in config.accounts:
        known = ", ".join(sorted(config.accounts)) or "none"
        raise UsageError(f"no account {name!r} in {config.source} (accounts: {known})")


def open_rotator(config: Config, *, spool: bool = True) -> Rotator:
    """A Rotator over the configured stores; ``spool=False`` for commands that only read.

    A command that may spool opens it where the daemon does (one resolution,
    :func:`~rotator.rotation.spool.spool_dir`), which refuses before anything else
    is opened where no daemon would look.
    """
    from rotator.service.app import build_rotator

    return build_rotator(config, spool=spool)
