"""Signed re-authorization links: ``{public_url}/authorize/{account}?exp=…&nonce=…&sig=…``.

A link is a key to one account's re-authorization, so it is signed (HMAC-SHA256
over the account, the expiry and a random nonce), short-lived (``link_ttl``) and
usable once (the nonce's use is recorded in the state store by
:mod:`rotator.service.console.book`, not here: any replica may finish a flow).

Only the canonical query is accepted: exactly ``exp``, ``nonce`` and ``sig``, in
that order, each once, in their one spelling. So any change to a link's query,
even one that would parse to the same values, is refused, and the signature is
the only thing compared with a secret (in constant time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from rotator.errors import ConfigError
from rotator.fileio import key_file

if TYPE_CHECKING:
    from rotator.config.models import ConsoleSettings

__all__ = ["KEY_FILE", "Link", "LinkRefused", "LinkSigner", "load_signing_key"]

#: the generated key's file name, beside the spool key
KEY_FILE = "console.key"
_QUERY = re.compile(r"exp=([1-9][0-9]{0,11})&nonce=([0-9a-f]{32})&sig=([A-Za-z0-9_-]{43})")
_DOMAIN = b"rotator-console-link-v1\0"


class LinkRefused(Exception):
    """A link that must not be followed: ``status`` and a reason fit for the page and log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Link:
    """A link that verified: whose, until when, and its nonce (the key of its one use)."""

    account: str
    until: datetime
    nonce: str


class LinkSigner:
    """Mints and verifies the links of one console (one key, one base URL, one TTL)."""

    def __init__(self, key: bytes, base_url: str, ttl: timedelta) -> None:
        if len(key) < 32:
            raise ConfigError(
                "server.console.signing_key must hold at least 32 bytes",
                path="server.console.signing_key",
            )
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl

    @classmethod
    def from_settings(cls, console: ConsoleSettings, key_dir: Path) -> LinkSigner:
        return cls(load_signing_key(console, key_dir), console.base_url, console.link_ttl)

    def _sign(self, account: str, exp: int, nonce: str) -> str:
        message = _DOMAIN + f"{account}\0{exp}\0{nonce}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def mint(self, account: str, now: datetime) -> str:
        """A fresh link for ``account``, valid ``ttl`` from ``now``, usable once."""
        exp = int((now + self.ttl).timestamp())
        nonce = secrets.token_hex(16)
        sig = self._sign(account, exp, nonce)
        return f"{self.base_url}/authorize/{account}?exp={exp}&nonce={nonce}&sig={sig}"

    def verify(self, account: str, query: str, now: datetime) -> Link:
        """The link's facts, or LinkRefused: malformed (400), forged (403), expired (410)."""
        match = _QUERY.fullmatch(query)
        if match is None:
            raise LinkRefused(400, "this is not a re-authorization link (its query was changed)")
        exp_text, nonce, sig = match.groups()
        exp = int(exp_text)
        if not hmac.compare_digest(sig.encode(), self._sign(account, exp, nonce).encode()):
            raise LinkRefused(
                403,
                "the link's signature does not match (it was changed, is for another account, "
                "or was signed with another key)",
            )
        until = datetime.fromtimestamp(exp, UTC)
        if until <= now:
            raise LinkRefused(410, "the link has expired; use the link of a newer alert")
        return Link(account, until, nonce)


def load_signing_key(console: ConsoleSettings, key_dir: Path) -> bytes:
    """The key from ``signing_key`` (hashed to 32 bytes), else a 0600 file made on first use."""
    if console.signing_key is not None:
        from rotator.secrets import resolve

        value = resolve(console.signing_key).reveal().strip()
        if len(value) < 16:
            raise ConfigError(
                "server.console.signing_key is too short: use at least 16 random characters "
                "(e.g. the output of `openssl rand -base64 32`)",
                path="server.console.signing_key",
            )
        return hashlib.sha256(_DOMAIN + value.encode()).digest()
    return _key_file(key_dir / KEY_FILE)


def _key_file(path: Path) -> bytes:
    return key_file(
        path,
        key_path="server.console.signing_key",
        damaged=f"the console key file {path} is damaged (it must hold 32 bytes in base64): "
        "remove it (the links already sent stop working) or restore it",
        unwritable=lambda error: (
            f"cannot create the console key {path}: {error} (set "
            "server.console.signing_key, or make server.spool_dir writable)"
        ),
    )
