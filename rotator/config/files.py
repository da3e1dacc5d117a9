"""Reading configuration files: the main file, and the files its ``include:`` names.

Platforms that keep one grant per customer generate their accounts, often one
file per customer or per team; one hand-edited file holding every account does
not suit them. ``include:`` lists glob patterns, relative to the main file's
directory (absolute ones are allowed). The files a pattern matches are read in
sorted order, patterns in the order written, a file matched twice once. Each
holds an ``accounts:`` mapping and nothing else: stores, defaults and alerts
stay in the main file and apply to every account wherever it is written.

What is refused, and why:

- another key in an included file: ``defaults`` there would apply to which
  accounts? A refusal names the file, the key, its line and where it belongs;
- an included file with an ``include:`` of its own: one level keeps "where does
  this account come from" one glob away, and no cycle can be written;
- a pattern without glob characters (``*?[``) that matches no file: a named file
  that is not there is a typo or a missing deployment step (nginx refuses it
  too). A glob that matches nothing is allowed, as nginx does: an empty
  ``accounts.d/`` is a platform before its first customer, or a Helm release
  without extra ConfigMaps. ``check`` warns about it and the daemon logs it;
- a match that is the main file itself, a directory or another non-file;
- more than :data:`MAX_TOTAL_BYTES` in all: the files are operator input, but a
  glob over the wrong directory must not fill memory.

Symlinks are followed, as for the main file: the kubelet mounts a ConfigMap's
keys as symlinks into its ``..data`` directory, and ``*`` does not match a name
starting with a dot, so ``accounts.d/*/*.yaml`` skips the kubelet's own entries.
The main file has no permission rule (it holds references to secrets, not
secrets), so included files have none either.
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml

from rotator.config import yamlfile
from rotator.config.fields import shown
from rotator.config.messages import MAX_MESSAGE, Refusals, key_path
from rotator.errors import ConfigError

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "Included",
    "Includes",
    "read_includes",
    "read_text",
    "yaml_error",
]

#: a configuration file larger than this is refused unread (-c /dev/zero must not fill memory)
MAX_FILE_BYTES = 32 * 2**20
#: the main file and every included file together (100,000 accounts take about 12 MB)
MAX_TOTAL_BYTES = 4 * MAX_FILE_BYTES
_GLOB_CHARS = frozenset("*?[")
#: sections of the main file: named in the refusal of one written in an included file
_MAIN_SECTIONS = ("server", "stores", "defaults", "alerts")


def read_text(path: str, *, what: str = "configuration file", limit: int = MAX_FILE_BYTES) -> str:
    """A configuration file's text; every failure is a ConfigError naming the file."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        hint = " (give -c FILE or set $ROTATOR_CONFIG)" if what == "configuration file" else ""
        raise ConfigError(f"{what} {path} does not exist{hint}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    if len(data) > limit:
        raise ConfigError(
            f"{what} {path} is larger than {limit // 2**20} MB (10,000 accounts take about 1.2 MB)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None


def yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    """A refusal of the loader starts with its key path; a syntax error with the file."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = str(getattr(exc, "problem", None) or "invalid YAML")
    located = getattr(exc, "key_path", None)
    syntax = isinstance(exc, yaml.scanner.ScannerError | yaml.parser.ParserError)
    if located and not syntax:
        shown_path = located if len(located) <= _PATH_PARTS else [*located[:_PATH_PARTS], "…"]
        message = f"{key_path(shown_path)}: {problem} ({source}, {where or 'no position'})"
    else:
        message = f"{source}: not valid YAML{' at ' + where if where else ''}: {problem}"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return ConfigError(message)


#: keys of a path shown in a YAML refusal (one nested 64 deep would fill a screen)
_PATH_PARTS = 12


@dataclass(frozen=True, slots=True)
class Included:
    """One included file: its accounts, and the line each is written on."""

    #: the file as messages name it: relative to the main file's directory when inside it
    shown: str
    accounts: dict[Any, Any]
    lines: dict[Any, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Includes:
    files: tuple[Included, ...] = ()
    #: glob patterns that matched no file (allowed; ``check`` warns)
    unmatched: tuple[str, ...] = ()


def read_includes(
    patterns: Any, *, base_dir: str, main: str | None, main_shown: str, budget: int
) -> Includes:
    """Read every file ``include:`` matches; ``budget``: bytes left for all of them."""
    if patterns is None:
        return Includes()
    if not isinstance(patterns, list):
        raise ConfigError(
            "must be a list of glob patterns, e.g. [accounts.d/*.yaml]", path="include"
        )
    main_real = os.path.realpath(main) if main else None
    seen: set[str] = set()
    refusals = Refusals()
    files: list[Included] = []
    unmatched: list[str] = []
    for index, pattern in enumerate(patterns):
        where = f"include[{index}]"
        if not isinstance(pattern, str) or not pattern.strip():
            raise ConfigError(
                "must be a glob pattern (a path, relative to the main file's directory)",
                path=where,
            )
        full = os.path.join(base_dir, pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            if _GLOB_CHARS.isdisjoint(pattern):
                raise ConfigError(
                    f"{shown(full)} does not exist; write the path of an existing file, "
                    "or a glob pattern (a glob may match nothing)",
                    path=where,
                )
            unmatched.append(pattern)
        for path in matches:
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            name = _shown_path(path, base_dir)
            if real == main_real:
                raise ConfigError(
                    f"{shown(pattern)} matches the main file {main_shown} itself; "
                    "narrow the pattern (e.g. accounts.d/*.yaml)",
                    path=where,
                )
            _check_regular(path, name, where)
            text = read_text(path, what="included file")
            budget -= len(text.encode("utf-8"))
            if budget < 0:
                raise ConfigError(
                    f"the main file and its included files pass {MAX_TOTAL_BYTES // 2**20} MB "
                    f"together at {name} (100,000 accounts take about 12 MB); "
                    "include fewer files",
                    path=where,
                )
            try:
                files.append(_parse_included(text, name, main_shown))
            except ConfigError as exc:
                refusals.add(exc)  # the other files are read too: one check shows each
                if refusals.full:
                    break
        if refusals.full:
            break
    refusals.raise_any()
    return Includes(tuple(files), tuple(unmatched))


def _shown_path(path: str, base_dir: str) -> str:
    """A matched file as messages name it; a name a terminal would act on is quoted."""
    relative = os.path.relpath(path, base_dir)
    name = path if relative.startswith(os.pardir) else relative
    return name if name.isprintable() else ascii(name)


def _check_regular(path: str, name: str, where: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read included file {name}: {exc.strerror}", path=where) from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(
            f"matches {name}, which is {kind}; match the YAML files only "
            "(e.g. accounts.d/*.yaml, or accounts.d/*/*.yaml for a directory per team)",
            path=where,
        )


def _parse_included(text: str, name: str, main_shown: str) -> Included:
    lines: dict[tuple[Any, ...], int] = {}
    try:
        raw = yamlfile.load(text, one_line=True, key_lines=lines)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, name) from None
    if raw is None:
        return Included(name, {})  # an empty file: no accounts (yet)
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: the top level must be a mapping holding accounts:")
    for key in raw:
        if key == "accounts":
            continue
        line = lines.get((key,), 0)
        if key == "include":
            fix = f"included files include no others; add the pattern to include: in {main_shown}"
        elif key in _MAIN_SECTIONS:
            fix = f"{key} applies to every account: move it to the main file {main_shown}"
        else:
            fix = "the only section of an included file is accounts"
        raise ConfigError(
            f"{name}: {key_path([key])}: an included file holds accounts: only (line {line}); {fix}"
        )
    accounts = raw.get("accounts")
    if accounts is None:
        return Included(name, {})
    if not isinstance(accounts, dict):
        raise ConfigError(
            f"{name}: accounts: must be a mapping of account name to settings "
            f"(line {lines.get(('accounts',), 0)})"
        )
    account_lines = {
        part[1]: line for part, line in lines.items() if len(part) == 2 and part[0] == "accounts"
    }
    return Included(name, accounts, account_lines)
