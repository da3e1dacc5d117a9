"""The configuration: YAML -> frozen, validated models; key-path error messages.

The rooms: :mod:`.models` (what a valid configuration is), :mod:`.fields` (its
value types: durations, URLs, store paths), :mod:`.loading` (reading a file and
the passes across accounts and stores), :mod:`.messages` (key-path errors) and
:mod:`.yamlfile` (a strict, bounded YAML loader). The names below are the
public surface; ``rotator --help`` does not import this package (the CLI imports
it inside the commands that read a configuration).
"""

from __future__ import annotations

from rotator.config.fields import parse_duration
from rotator.config.loading import DEFAULT_CONFIG_PATH, config_path, load_config, parse_config
from rotator.config.models import (
    AccountSettings,
    AlertsSettings,
    Config,
    Sink,
    state_store,
    store_identity,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AccountSettings",
    "AlertsSettings",
    "Config",
    "Sink",
    "config_path",
    "load_config",
    "parse_config",
    "parse_duration",
    "state_store",
    "store_identity",
]
