"""systemd's ``EnvironmentFile=`` rules, as a reader the tests can run without PID 1.

:func:`read_env_file` follows the parser systemd uses for ``EnvironmentFile=``
(``src/basic/env-file.c``, documented in systemd.exec(5), "EnvironmentFile="):
lines of ``KEY=VALUE``; ``#`` and ``;`` start comments; an unquoted value keeps
interior whitespace, drops leading and trailing whitespace, and takes a
backslash as "the next character as it is"; ``'...'`` holds anything verbatim;
``"..."`` knows the escapes ``\\" \\\\ \\` \\$``; quoted and unquoted parts run
together (``'a'"'"'b'`` is ``a'b``); carriage return ends a line as newline
does. Unlike a shell, nothing is expanded: ``$HOME`` stays ``$HOME``.

It is strict where systemd would quietly ignore a line: an invalid name, an
unterminated quote, a line without ``=`` raise :class:`EnvSyntaxError`, because
a rotator env file must never rely on a line systemd drops.

:func:`systemd_parse` runs systemd's own parser where one can be run without a
manager: the ``environment.d`` generator reads the same syntax (and then expands
``$NAME``, which ``EnvironmentFile=`` does not, and drops empty values), so the
tests compare the two on values without ``$`` and that are not empty.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

__all__ = ["GENERATOR", "EnvSyntaxError", "read_env_file", "systemd_parse"]

GENERATOR = Path("/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NEWLINE = "\n\r"
_WHITESPACE = " \t\n\r"
_DOUBLE_QUOTE_ESCAPES = '"\\`$'


class EnvSyntaxError(ValueError):
    pass


def read_env_file(text: str) -> dict[str, str]:
    """The variables systemd sets from an ``EnvironmentFile=`` holding ``text``."""
    out: dict[str, str] = {}
    state = "pre_key"
    key = value = ""
    trailing = 0  # unquoted trailing whitespace of the value, dropped at the line's end
    line = 1

    def push() -> None:
        name = key.rstrip(" \t")
        if not _NAME.fullmatch(name):
            raise EnvSyntaxError(f"line {line}: {name!r} is not a variable name")
        out[name] = value[: len(value) - trailing] if trailing else value

    for char in text:
        if state == "pre_key":
            if char in _WHITESPACE:
                pass
            elif char in "#;":
                state = "comment"
            else:
                state, key, value, trailing = "key", char, "", 0
        elif state == "key":
            if char in _NEWLINE:
                raise EnvSyntaxError(f"line {line}: no '=' (systemd ignores the line)")
            if char == "=":
                state = "pre_value"
            else:
                key += char
        elif state == "pre_value":
            if char in _NEWLINE:
                push()
                state = "pre_key"
            elif char == "'":
                state = "single"
            elif char == '"':
                state = "double"
            elif char == "\\":
                state = "value_escape"
            elif char not in _WHITESPACE:
                state, value, trailing = "value", value + char, 0
        elif state == "value":
            if char in _NEWLINE:
                push()
                state = "pre_key"
            elif char == "\\":
                state, trailing = "value_escape", 0
            else:
                value += char
                trailing = trailing + 1 if char in " \t" else 0
        elif state == "value_escape":
            state = "value"
            if char not in _NEWLINE:  # backslash-newline continues the line
                value, trailing = value + char, 0
        elif state == "single":
            if char == "'":
                state = "pre_value"
            else:
                value += char
        elif state == "double":
            if char == '"':
                state = "pre_value"
            elif char == "\\":
                state = "double_escape"
            else:
                value += char
        elif state == "double_escape":
            state = "double"
            if char in _DOUBLE_QUOTE_ESCAPES:
                value += char
            elif char not in _NEWLINE:
                value += "\\" + char
        elif state == "comment":
            if char == "\\":
                # systemd before 254 continued the comment onto the next line; 254 does not
                raise EnvSyntaxError(f"line {line}: a backslash in a comment")
            if char in _NEWLINE:
                state = "pre_key"
        if char == "\n":
            line += 1
    if state in ("single", "double", "double_escape"):
        raise EnvSyntaxError(f"line {line}: a quote is never closed")
    if state == "key":
        raise EnvSyntaxError(f"line {line}: no '=' (systemd ignores the line)")
    if state in ("pre_value", "value", "value_escape"):
        push()
    return out


def systemd_parse(text: str) -> dict[str, str]:
    """What systemd's own environment-file parser makes of ``text`` (via environment.d).

    Only for text whose values hold no ``$`` and are not empty (see the module docstring).
    """
    with tempfile.TemporaryDirectory(prefix="rotator-envd-") as home:
        conf = Path(home) / "environment.d"
        conf.mkdir()
        (conf / "90-rotator-test.conf").write_text(text, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_CONFIG_HOME": home}
        result = subprocess.run(
            [str(GENERATOR)], env=env, capture_output=True, text=True, timeout=30, check=True
        )
    out: dict[str, str] = {}
    for assignment in result.stdout.splitlines():
        name, _, printed = assignment.partition("=")
        out[name] = _unquote(printed)
    return out


def _unquote(printed: str) -> str:
    """The generator's output value: as is, or in double quotes with ``" \\ ` $`` escaped
    (systemd's ``shell_maybe_quote``; POSIX double-quote rules, which shlex does not follow)."""
    if not (len(printed) >= 2 and printed[0] == printed[-1] == '"'):
        return printed
    inner, out, index = printed[1:-1], [], 0
    while index < len(inner):
        char = inner[index]
        if char == "\\" and index + 1 < len(inner) and inner[index + 1] in _DOUBLE_QUOTE_ESCAPES:
            char = inner[index + 1]
            index += 1
        out.append(char)
        index += 1
    return "".join(out)
