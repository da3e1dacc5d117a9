"""Text for the operator's terminal: shown, never obeyed.

Much of what the commands print comes from outside rotator: a vendor's error
description, a store's answer, whatever the state store holds. A terminal acts
on some characters (ESC sequences that clear the screen, retitle the window or
write the clipboard; C1 controls; a carriage return that overwrites the line)
and others cannot be seen at all (bidi overrides, zero-width characters). Every
line the commands print that may carry such text goes through :func:`printable`,
which shows those characters as their escapes, the way Python writes them.
Kept free of imports, so the command line can use it on its error path.
"""

from __future__ import annotations

from typing import TextIO

__all__ = ["fit", "printable"]


def printable(text: str) -> str:
    """``text`` with every character a terminal would not simply show replaced by its escape.

    A space stays a space; tabs, newlines and every other non-printable character
    (``str.isprintable``: Cc, Cf, Cs, Co, Cn, Zl, Zp and the other Zs) become
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def fit(text: str, stream: TextIO) -> str:
    """Text the stream can encode: a printable character it cannot is escaped, not an error."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)
