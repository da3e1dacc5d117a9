"""Reading a configuration file: YAML -> :class:`~rotator.config.models.Config`.

The file is validated in passes. The first checks the top level (``server``,
``stores``, ``defaults``, ``alerts``) and that ``accounts`` is a mapping. The
second validates each account with its provider's own model (so each provider
owns its keys), after filling in ``defaults``; then cross-references (sinks and
state name defined stores) and paths (each place in a store has one writer) are
checked. Every refusal is a :class:`ConfigError` whose message starts with the
key path, e.g.
``accounts.idp-api.sinks[0].store: 'fils' is not a defined store (defined: files, vault)``.

Accounts may also live in the files ``include:`` names (:mod:`.files` reads
them); they join the main file's accounts before the second pass, so defaults
and stores apply to them alike. With ``include:`` in use every message about an
account starts with the file it is written in
(``accounts.d/x.yaml: accounts.acme.client_id: ...``).

The file is hostile input: :func:`load_config` raises nothing but ConfigError,
whatever the bytes (the daemon's reload on SIGHUP relies on it), and the YAML
loader bounds alias expansion, nesting and number sizes.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from rotator.config import yamlfile
from rotator.config.checks import Origins, check_aws_names, check_paths, check_references
from rotator.config.fields import shown
from rotator.config.files import (
    MAX_FILE_BYTES,
    MAX_TOTAL_BYTES,
    Included,
    Includes,
    read_includes,
    read_text,
    yaml_error,
)
from rotator.config.messages import Refusals, closest, config_error, key_path
from rotator.config.models import AccountSettings, Config
from rotator.config.templates import Templates
from rotator.errors import ConfigError
from rotator.providers.registry import PROVIDERS, provider_class

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "INTERNAL",
    "MAX_FILE_BYTES",
    "config_path",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = "/etc/rotator/rotator.yaml"
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOP_KEYS = ("server", "include", "stores", "defaults", "alerts", "accounts")


def config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return explicit or env.get("ROTATOR_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str) -> Config:
    """Read and validate a configuration file (and the files it includes).

    Every failure is a ConfigError.
    """
    text = read_text(path)
    return parse_config(text, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_config(text: str, *, source: str = "<string>", base_dir: str | None = None) -> Config:
    """Validate the text of a configuration file; every failure is a ConfigError.

    ``include:`` patterns are relative to ``base_dir`` (default: the directory of
    ``source`` when it names a file, else the working directory).

    Every value is bounded before it reaches arithmetic, so an exception other
    than ConfigError is a bug in these checks; it still becomes a ConfigError
    (``check`` exits 2, a daemon reloading on SIGHUP keeps its configuration),
    and its message says so (the hostile-input tests look for it).
    """
    is_file = not source.startswith("<")
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source)) if is_file else os.getcwd()
    main = _Main(text, source, base_dir, source if is_file else None)
    try:
        with _collector_paused():
            return _parse(main)
    except ConfigError:
        raise
    except Exception as exc:  # the contract: nothing but ConfigError leaves
        raise ConfigError(f"{source}: {INTERNAL} ({type(exc).__name__})") from None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a file is read and validated.

    Loading makes millions of objects and hardly a cycle (the parsed YAML is freed
    by reference counting as each account is validated), but each growth of the
    heap by a quarter triggered a full collection that walked all of them: 0.8 of
    a 100,000-account start's 7 CPU seconds. Whatever cycles a reload's worker
    threads make meanwhile wait the few seconds for the collector to come back.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class _Main:
    """The main file: its text (read again for lines only when a message needs them)."""

    text: str
    source: str
    base_dir: str
    path: str | None

    def line_of(self, account: Any) -> int:
        lines: dict[tuple[Any, ...], int] = {}
        yamlfile.load(self.text, one_line=True, key_lines=lines)
        return lines.get(("accounts", account), 0)


#: the message of a ConfigError that stands for a bug in the checks
INTERNAL = "the file could not be validated; this is a bug in rotator's checks, please report it"


def _parse(main: _Main) -> Config:
    try:
        raw = yamlfile.load(main.text, one_line=True)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, main.source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{main.source}: the top level must be a mapping of sections")
    return _validate(raw, main)


def _validate(raw: dict[Any, Any], main: _Main) -> Config:
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"unknown section (valid: {', '.join(_TOP_KEYS)}){closest(key, list(_TOP_KEYS))}",
                path=key_path([key]),
            )
    accounts_raw = raw.get("accounts") or {}
    if not isinstance(accounts_raw, dict):
        raise ConfigError("must be a mapping of account name to settings", path="accounts")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("must be a mapping of account keys", path="defaults")
    top = {k: v for k, v in raw.items() if k not in ("accounts", "include")}
    try:
        base = Config.model_validate({**top, "source": main.source})
    except ValidationError as exc:
        raise config_error(exc, model=Config, data=top) from None

    includes = read_includes(
        raw.get("include"),
        base_dir=main.base_dir,
        main=main.path,
        main_shown=main.source,
        budget=MAX_TOTAL_BYTES - len(main.text.encode("utf-8")),
    )
    accounts_raw, origins = _merge(accounts_raw, includes, main)
    # with include: in use, every message about an account names the file it is written in
    at = Origins(origins, main.source) if "include" in raw else Origins({}, "")

    unknown = _unknown_defaults(defaults, accounts_raw)
    if unknown is not None:
        raise ConfigError(
            "is not an account key of any provider", path=key_path(["defaults", unknown])
        )
    accounts: dict[str, AccountSettings] = {}
    templates = Templates({})
    refusals = Refusals()
    # Each account's parsed YAML is dropped once its model is built: the raw and the
    # validated copies of 100,000 accounts are never in memory together.
    for name in list(accounts_raw):
        body = accounts_raw.pop(name)
        try:
            accounts[name] = _account(name, body, defaults, templates)
        except ConfigError as exc:
            refusals.add(ConfigError(f"{at(name)}{exc}") if at(name) else exc)
            if refusals.full:
                break
    refusals.raise_any()

    config = base.model_copy(
        update={
            "accounts": accounts,
            "included": tuple(part.shown for part in includes.files),
            "unmatched_includes": includes.unmatched,
        }
    )
    check_references(config, at)
    check_paths(config, at)
    check_aws_names(config, at)
    return config


def _merge(
    accounts: dict[Any, Any], includes: Includes, main: _Main
) -> tuple[dict[Any, Any], dict[Any, str]]:
    """The main file's accounts and every included file's, each name once."""
    if not includes.files:
        return accounts, {}
    combined = dict(accounts)
    found_in: dict[Any, Included] = {}
    for part in includes.files:
        for name, body in part.accounts.items():
            if name in combined:
                first = found_in.get(name)
                if first is None:
                    elsewhere = f"{main.source} (line {main.line_of(name)})"
                else:
                    elsewhere = f"{first.shown} (line {first.lines.get(name, 0)})"
                raise ConfigError(
                    f"{part.shown}: {key_path(['accounts', name])}: defined twice, here "
                    f"(line {part.lines.get(name, 0)}) and in {elsewhere}; "
                    "an account has one name: rename or remove one of them"
                )
            combined[name] = body
            found_in[name] = part
    return combined, {name: part.shown for name, part in found_in.items()}


def _account(
    name: Any, body: Any, defaults: dict[Any, Any], templates: Templates
) -> AccountSettings:
    """One account, validated by its provider's model after ``defaults`` fill it in."""
    if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
        raise ConfigError(
            "account names use letters, digits, '.', '_' and '-' (at most 100)",
            path=key_path(["accounts", name]),
        )
    path = f"accounts.{name}"
    if not isinstance(body, dict):
        raise ConfigError("must be a mapping of account keys", path=path)
    provider = body.get("provider", defaults.get("provider"))
    if not isinstance(provider, str):
        raise ConfigError(
            f"required key is missing (one of: {', '.join(PROVIDERS.names())})",
            path=f"{path}.provider",
        )
    if provider not in PROVIDERS:
        # the registry quotes the name whole and looks for the closest: not for 1 MB of it
        raise ConfigError(PROVIDERS.unknown(shown(provider)[1:-1]), path=f"{path}.provider")
    model = provider_class(provider, path=f"{path}.provider").settings_model
    fields = _fields_of(model)
    merged = {key: value for key, value in defaults.items() if key in fields and key not in body}
    merged.update(body)
    try:
        validated: AccountSettings = templates.validate(model, merged)
        return validated
    except ValidationError as exc:
        raise config_error(exc, prefix=path, model=model, data=merged) from None


@functools.cache
def _fields_of(model: type[AccountSettings]) -> frozenset[str]:
    # pydantic's ``model_fields`` is a property that builds its answer at each call
    return frozenset(model.model_fields)


def _unknown_defaults(defaults: dict[Any, Any], accounts: dict[Any, Any]) -> str | None:
    """The first key of ``defaults`` that no provider has, if any.

    The providers the configuration names are asked first; the others are
    imported only for a key none of those has (a mistake, or a key meant for
    another provider's accounts).
    """
    keys = [key for key in defaults if key not in AccountSettings.model_fields]
    bodies = [defaults, *(body for body in accounts.values() if isinstance(body, dict))]
    named = {name for body in bodies if isinstance(name := body.get("provider"), str)}
    known_names = set(PROVIDERS.names())
    for providers in (sorted(known_names & named), sorted(known_names - named)):
        if not keys:
            return None
        known: set[str] = set()
        for name in providers:
            known.update(provider_class(name).settings_model.model_fields)
        keys = [key for key in keys if key not in known]
    return keys[0] if keys else None
