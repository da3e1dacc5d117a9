"""The console's bookkeeping, in the state store: pending flows and spent links.

One record per account, ``console/<account>`` in the account's state store, so
any replica can finish a flow another started, and every change is a
compare-and-set on the version read: two clicks on one link, or two callbacks
with one ``state``, cannot both win. The record holds

- ``flows``: ``state`` -> the link's nonce and expiry, the PKCE verifier (never
  in a URL), the redirect URI and the flow's own deadline (``FLOW_TTL``);
- ``used``: nonce -> the link's expiry; a link is spent when its callback
  brings a code, so a link preview (a chat client unfurling it) does not burn
  it, and a link whose flow went through is refused ever after.

Expired entries are dropped on each write and at most ``MAX_FLOWS`` flows wait
per account, so the record stays small whatever opens links. A record a newer
release wrote (:data:`rotator.records.CONSOLE_RECORD`) is neither read nor
written over: the sign-in is refused, naming the release to upgrade to.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rotator.errors import StoreConflict, StoreError
from rotator.providers.base import pkce_challenge
from rotator.records import CONSOLE_RECORD
from rotator.service.console.links import Link, LinkRefused
from rotator.tokens import format_time, parse_time

if TYPE_CHECKING:
    from rotator.backends.base import SecretStore, Version

__all__ = ["FLOW_TTL", "MAX_FLOWS", "Flow", "FlowBook", "book_path", "split_state"]

#: how long the vendor's login may take between the link and the callback
FLOW_TTL = timedelta(minutes=15)
MAX_FLOWS = 16
_TRIES = 8


def book_path(account: str) -> str:
    return f"console/{account}"


def split_state(state: str) -> tuple[str, str] | None:
    """``<random>.<account>``: the random part has no dot, account names may."""
    token, dot, account = state.partition(".")
    if not dot or not token or not account:
        return None
    return token, account


@dataclass(frozen=True, slots=True)
class Flow:
    """A flow a link started: what the callback needs to finish it."""

    account: str
    nonce: str
    link_until: datetime
    until: datetime
    redirect_uri: str
    verifier: str | None


class FlowBook:
    """Flows and spent links of the accounts, each in its account's state store."""

    def __init__(self, store_for: Any) -> None:
        #: account name -> its state store (looked up on each call: reloads change it)
        self._store_for = store_for

    def _load(self, account: str) -> tuple[SecretStore, dict[str, Any], Version | None]:
        store: SecretStore = self._store_for(account)
        record = store.read(book_path(account))
        if record is None:
            return store, {"flows": {}, "used": {}}, None
        data = record.strings()
        try:
            CONSOLE_RECORD.check(account, data)
        except StoreError as exc:
            # a newer release's sign-ins (NewerFormat), or a mark that is no format:
            # neither read by guesswork nor written over, so the sign-in is refused
            raise LinkRefused(503, str(exc)) from None
        try:
            book = {"flows": json.loads(data["flows"]), "used": json.loads(data["used"])}
        except (KeyError, ValueError):
            book = {"flows": {}, "used": {}}  # damaged: start over (spent links stay expired)
        return store, book, record.version

    @staticmethod
    def _save(store: SecretStore, account: str, book: dict[str, Any], version: Any) -> bool:
        data = {
            **CONSOLE_RECORD.mark(account),
            "flows": json.dumps(book["flows"], sort_keys=True),
            "used": json.dumps(book["used"], sort_keys=True),
        }
        try:
            store.write(book_path(account), data, expected_version=version)
        except StoreConflict:
            return False
        return True

    @staticmethod
    def _prune(book: dict[str, Any], now: datetime) -> None:
        book["used"] = {n: u for n, u in book["used"].items() if parse_time(u) > now}
        flows = {s: f for s, f in book["flows"].items() if parse_time(f["until"]) > now}
        book["flows"] = dict(sorted(flows.items(), key=lambda kv: kv[1]["until"])[-MAX_FLOWS:])

    def start(
        self, link: Link, *, redirect_uri: str, pkce: bool, now: datetime
    ) -> tuple[str, str | None]:
        """A new flow for a verified link: its ``state`` and PKCE challenge (or None).

        LinkRefused(410) when the link was spent already.
        """
        for _ in range(_TRIES):
            store, book, version = self._load(link.account)
            if link.nonce in book["used"]:
                raise LinkRefused(410, "this link was used already; use the link of a newer alert")
            self._prune(book, now)
            state = f"{secrets.token_urlsafe(24)}.{link.account}"
            verifier = secrets.token_urlsafe(48) if pkce else None
            book["flows"][state] = {
                "nonce": link.nonce,
                "link_until": format_time(link.until),
                "until": format_time(min(now + FLOW_TTL, link.until)),
                "redirect_uri": redirect_uri,
                "verifier": verifier or "",
            }
            if self._save(store, link.account, book, version):
                return state, pkce_challenge(verifier) if verifier else None
        raise LinkRefused(503, "the console's record kept changing; open the link again")

    def finish(self, state: str, now: datetime, *, spend: bool) -> Flow:
        """Take the flow of ``state`` out of the book (single use).

        ``spend``: a code came back, so the link is spent too; a link spent already
        (another flow of it finished first) is refused (409). Unknown, used or
        expired states are refused (400).
        """
        parts = split_state(state)
        unknown = LinkRefused(
            400,
            "this sign-in is unknown, was finished already or took too long; "
            "open the link from the alert again",
        )
        if parts is None:
            raise unknown
        account = parts[1]
        for _ in range(_TRIES):
            try:
                store, book, version = self._load(account)
            except KeyError:
                raise unknown from None  # no such account (any more)
            raw = book["flows"].pop(state, None)
            if raw is None:
                raise unknown
            flow = Flow(
                account=account,
                nonce=raw["nonce"],
                link_until=parse_time(raw["link_until"]),
                until=parse_time(raw["until"]),
                redirect_uri=raw["redirect_uri"],
                verifier=raw["verifier"] or None,
            )
            spent = flow.nonce in book["used"]
            if spend and not spent and flow.until > now:
                book["used"][flow.nonce] = format_time(flow.link_until)
            self._prune(book, now)
            if not self._save(store, account, book, version):
                continue
            if flow.until <= now:
                raise unknown
            if spend and spent:
                raise LinkRefused(
                    409, "this link was used already (another sign-in with it finished first)"
                )
            return flow
        raise LinkRefused(503, "the console's record kept changing; open the link again")
