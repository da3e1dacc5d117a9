"""What a FaxMAX domain accepts: every login the provider can make, tried for real.

FaxMAX does not publish the cipher of its passwordless login token, whether the
JSON-RPC request goes in the form field ``data`` or as the body, or (for sure)
the name of the login method. A login spends nothing (no grant is rotated, no
token is stored), so ``rotator probe`` tries them: cipher x transport x login
method, each one real login, and reports what the vendor answered to each.

The configured combination goes first (while the vendor is fresh), built-in
ciphers after it, a plugged-in cipher only as configured. What a protocol error
(``-32700..-32600``) says holds for every cipher of that transport and method,
so the rest of them are not sent; an unreachable endpoint stops the probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rotator.errors import ProviderError, RotatorError, TransientProviderError, scrub
from rotator.providers.faxmax.cipher import BUILTIN
from rotator.providers.faxmax.clock import RunClock
from rotator.providers.faxmax.provider import FaxmaxProvider, FaxmaxSettings
from rotator.providers.faxmax.rpc import JsonRpcFault

if TYPE_CHECKING:
    import httpx

__all__ = ["LOGIN_METHODS", "Attempt", "Combination", "combinations", "probe_logins"]

#: the passwordless login methods the vendor documents (DESIGN.md, vendor facts)
LOGIN_METHODS = ("Core.login_token", "Core.token_login")
PASSWORD_LOGIN = "Core.login"
#: connection-level kinds: the endpoint itself is not there
_UNREACHABLE = frozenset({"connection_error", "timeout", "bad_url"})


@dataclass(frozen=True, slots=True)
class Combination:
    """One way to log in: ``cipher`` is None for ``Core.login`` (no login token)."""

    transport: str
    method: str
    cipher: str | None

    def config_lines(self) -> list[str]:
        """The account keys that select this combination, after a comment naming it."""
        if self.cipher is None:
            return ["# password login (Core.login)", f"transport: {self.transport}"]
        return [
            "# passwordless login (api_code, api_password, remote_ip)",
            f"transport: {self.transport}",
            f"login_method: {self.method}",
            f"cipher: {self.cipher}",
        ]


@dataclass(frozen=True, slots=True)
class Attempt:
    combination: Combination
    outcome: str  # "ok" | "refused" | "error" | "not tried"
    answer: str

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def combinations(settings: FaxmaxSettings) -> list[Combination]:
    """Every combination the account's keys allow, the configured one first."""
    transports = _first(settings.transport, ("form", "json"))
    found: list[Combination] = []
    for transport in transports:
        if settings.password is not None:
            found.append(Combination(transport, PASSWORD_LOGIN, None))
        if None in (settings.api_code, settings.api_password, settings.remote_ip):
            continue
        for method in _first(settings.login_method, LOGIN_METHODS):
            for cipher in _first(settings.cipher, tuple(BUILTIN)):
                found.append(Combination(transport, method, cipher))
    return found


def _first(configured: str, others: tuple[str, ...]) -> list[str]:
    return [configured, *(other for other in others if other != configured)]


def probe_logins(account: str, settings: FaxmaxSettings, client: httpx.Client) -> list[Attempt]:
    """One real login per combination; what the vendor answered to each."""
    attempts: list[Attempt] = []
    skip: dict[tuple[str, str], str] = {}
    unreachable = ""
    for combination in combinations(settings):
        key = (combination.transport, combination.method)
        if unreachable or key in skip:
            attempts.append(Attempt(combination, "not tried", unreachable or skip[key]))
            continue
        attempt, stop = _try(account, settings, combination, client)
        attempts.append(attempt)
        if stop == "fault":
            skip[key] = (
                f"{combination.transport} / {combination.method} answered a protocol error "
                "(no cipher changes that)"
            )
        elif stop == "unreachable":
            unreachable = "the endpoint did not answer (see above)"
    return attempts


def _try(
    account: str, settings: FaxmaxSettings, combination: Combination, client: httpx.Client
) -> tuple[Attempt, str]:
    """The attempt, and what it says about the rest: "", "fault" or "unreachable"."""
    update: dict[str, object] = {"transport": combination.transport}
    if combination.cipher is not None:
        update |= {"cipher": combination.cipher, "login_method": combination.method}
    provider = FaxmaxProvider(account, settings.model_copy(update=update))
    clock = RunClock(datetime.now(UTC))
    try:
        if combination.cipher is None:
            provider.password_login(client, clock)
        else:
            provider.code_login(client, clock)
    except JsonRpcFault as exc:
        return Attempt(combination, "error", str(exc)), "fault"
    except TransientProviderError as exc:
        stop = "unreachable" if exc.code in _UNREACHABLE else ""
        return Attempt(combination, "error", str(exc)), stop
    except ProviderError as exc:
        return Attempt(combination, "refused", str(exc)), ""
    except RotatorError as exc:
        return Attempt(combination, "error", str(exc)), ""
    except Exception as exc:  # a plugged-in cipher's own failure: reported, not raised
        said = scrub(f"the cipher failed: {type(exc).__name__}: {exc}")
        return Attempt(combination, "error", said), ""
    # the session token it returned is dropped here: a probe publishes and stores nothing
    return Attempt(combination, "ok", "logged in: a session token was issued (not kept)"), ""
