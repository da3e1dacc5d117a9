"""``rotator probe ACCOUNT``: what the vendor accepts, found without spending anything.

FaxMAX leaves its cipher, transport and login method unpublished, and a login
spends nothing, so the probe logs in every way the provider can
(:mod:`rotator.providers.faxmax.probe`) and ends with the configuration lines
that worked. For the OAuth2 vendors it checks what can be checked without
spending a grant:

- the token endpoint answers, over TLS that verifies (a certificate or hostname
  error is named);
- ``oauth2`` with ``grant: client_credentials`` or ``password``: one token call.
  It spends no grant (there is none) and is the call every rotation makes; the
  token is dropped, never stored or published;
- ``faxplus-pat``: ``GET /accounts/self`` with the token, a read;
- ``faxplus``: the authorize URL (``rotator authorize`` adds a one-time ``state``);
- never a ``refresh_token`` call (it would spend the stored refresh token), and
  no BIFIT password login (BIFIT does not say whether a new login ends the
  refresh token the daemon holds).

The probe opens no store: it reads no state, takes no lease, writes nothing and
never marks an account failed. Every line is scrubbed of every secret the
account's configuration names before it is printed. Exit 0 when it all worked
(FaxMAX: when some login worked), 1 otherwise.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from rotator.commands.terminal import printable
from rotator.errors import ProviderError, RotatorError, scrub_values, secret_values

if TYPE_CHECKING:
    import httpx

    from rotator.config.models import AccountSettings, Config
    from rotator.providers.faxmax.probe import Combination
    from rotator.providers.faxmax.provider import FaxmaxSettings
    from rotator.providers.faxplus import FaxPlusPatSettings, FaxPlusSettings
    from rotator.providers.oauth2 import OAuth2Settings

__all__ = ["Row", "probe", "reach"]

OK, NOT_TRIED = "ok", "not tried"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: what was checked, how it went, the answer (scrubbed on print)."""

    check: str
    outcome: str  # ok | failed | refused | error | not tried
    answer: str

    @property
    def failed(self) -> bool:
        return self.outcome not in (OK, NOT_TRIED)


_NO_REFRESH = Row("refresh_token grant", NOT_TRIED, "it would spend the stored refresh token")


def probe(config: Config, account: str, *, out: TextIO | None = None) -> int:
    """Probe ``account`` and print the table; the exit code (0 worked, 1 did not)."""
    from rotator.commands.online import secret_refs
    from rotator.http import HttpClients
    from rotator.providers.faxmax.provider import FaxmaxSettings
    from rotator.secrets import resolve

    stdout = out or sys.stdout
    settings = config.accounts[account]
    known: list[object] = []
    unresolved: list[str] = []
    for path, ref in secret_refs(settings, f"accounts.{account}"):
        try:
            known.append(resolve(ref))
        except RotatorError as exc:
            unresolved.append(f"{path}: ERROR {exc}")
    secrets = secret_values(*known)

    def say(line: str) -> None:
        print(printable(scrub_values(line, secrets)), file=stdout)

    say(f"probe {account} ({settings.provider}): nothing is stored, no grant is spent")
    if unresolved:
        for line in unresolved:
            say(line)
        say("nothing was sent: fix these secret references first")
        return 1
    http = HttpClients()
    try:
        client = http.get(verify=settings.tls_verify, ca_bundle=settings.ca_bundle)
        if isinstance(settings, FaxmaxSettings):
            return _faxmax(account, settings, client, say)
        rows = _oauth_checks(account, settings, client)
    finally:
        http.close()
    table = [(row.check, row.outcome, row.answer) for row in rows]
    for line in _table(("check", "outcome", "answer"), table):
        say(line)
    broken = [row for row in rows if row.failed]
    say("")
    say(f"{len(broken)} of {len(rows)} checks failed" if broken else "every check passed")
    return 1 if broken else 0


def _faxmax(
    account: str, settings: FaxmaxSettings, client: httpx.Client, say: Callable[[str], None]
) -> int:
    from rotator.providers.faxmax.probe import combinations, probe_logins

    endpoint = reach(client, settings.url, settings)
    say(f"endpoint {endpoint.answer}")
    if endpoint.failed:
        rows = [
            (*_columns(c), NOT_TRIED, "the endpoint is unreachable") for c in combinations(settings)
        ]
        for line in _table(("transport", "login", "cipher", "outcome", "answer"), rows):
            say(line)
        say("")
        say("nothing worked: the endpoint did not answer (see above)")
        return 1
    tried = probe_logins(account, settings, client)
    rows = [(*_columns(a.combination), a.outcome, a.answer) for a in tried]
    for line in _table(("transport", "login", "cipher", "outcome", "answer"), rows):
        say(line)
    say("")
    worked = [a.combination for a in tried if a.ok]
    if not worked:
        say(
            "nothing worked: check username, password or api_code, api_password and "
            "remote_ip; the vendor's answers are above"
        )
        return 1
    sent = [a for a in tried if a.outcome != NOT_TRIED]
    say(
        f"{len(worked)} of {len(sent)} logins worked ({len(tried) - len(sent)} not sent); "
        f"the keys of accounts.{account} for each:"
    )
    for combination in worked:
        for line in combination.config_lines():
            say(f"  {line}")
    if settings.password is not None and any(c.cipher for c in worked):
        say("  # password is set, so the daemon logs in with Core.login: the passwordless")
        say("  # lines matter only without it")
    return 0


def _columns(combination: Combination) -> tuple[str, str, str]:
    return combination.transport, combination.method, combination.cipher or "-"


def _oauth_checks(account: str, settings: AccountSettings, client: httpx.Client) -> list[Row]:
    from rotator.providers.bifit import BifitSettings
    from rotator.providers.faxplus import FaxPlusPatSettings, FaxPlusSettings
    from rotator.providers.oauth2 import OAuth2Settings

    rows: list[Row] = []
    token_url = getattr(settings, "token_url", None)
    if isinstance(token_url, str):
        rows.append(reach(client, token_url, settings, check="token endpoint"))
    if isinstance(settings, OAuth2Settings):
        rows.append(_oauth2_grant(account, settings, client))
    elif isinstance(settings, FaxPlusSettings):
        api = settings.api_base.rstrip("/") + "/accounts/self"
        rows.append(reach(client, api, settings, check="API (no token sent)"))
        rows.append(_authorize_url(settings))
        rows.append(
            Row("refresh_token grant", NOT_TRIED, "it would spend the stored refresh token")
        )
    elif isinstance(settings, FaxPlusPatSettings):
        rows.append(_pat(settings, client))
    elif isinstance(settings, BifitSettings):
        rows.append(
            Row(
                "password grant",
                NOT_TRIED,
                "BIFIT does not say whether a new login ends the refresh token the daemon holds",
            )
        )
        rows.append(
            Row("refresh_token grant", NOT_TRIED, "it would spend the stored refresh token")
        )
    if not rows:
        rows.append(Row("provider", NOT_TRIED, f"nothing to probe for {settings.provider!r}"))
    return rows


def _oauth2_grant(account: str, settings: OAuth2Settings, client: httpx.Client) -> Row:
    from rotator.providers.oauth2 import OAuth2Provider
    from rotator.state import AccountState

    check = f"{settings.grant} grant"
    if settings.grant == "refresh_token":
        return Row(check, NOT_TRIED, "it would spend the stored refresh token")
    now = datetime.now(UTC)
    try:
        tokens = OAuth2Provider(account, settings).refresh(AccountState(account), client, now)
    except ProviderError as exc:
        return Row(check, "refused" if not exc.transient else "error", str(exc))
    except RotatorError as exc:
        return Row(check, "error", str(exc))
    lifetime = round((tokens.expires_at - now).total_seconds())
    return Row(check, OK, f"a token was issued (lifetime {lifetime} s); dropped, not stored")


def _authorize_url(settings: FaxPlusSettings) -> Row:
    from rotator.providers.faxplus import authorization_url

    if settings.redirect_uri is None:
        return Row("authorize URL", NOT_TRIED, "no redirect_uri: set it to use rotator authorize")
    return Row("authorize URL", OK, authorization_url(settings, "STATE"))


def _pat(settings: FaxPlusPatSettings, client: httpx.Client) -> Row:
    from rotator.providers.faxplus import verify_token
    from rotator.secrets import resolve
    from rotator.tokens import format_time

    check = "token at /accounts/self"
    try:
        verify_token(client, settings.api_base, resolve(settings.token), None, _timeout(settings))
    except ProviderError as exc:
        return Row(check, "refused" if not exc.transient else "error", str(exc))
    except RotatorError as exc:
        return Row(check, "error", str(exc))
    return Row(check, OK, f"accepted (a read); it expires {format_time(settings.expires_at)}")


def reach(
    client: httpx.Client, url: str, settings: AccountSettings, check: str = "endpoint"
) -> Row:
    """A GET without credentials: does ``url`` answer, over TLS that verifies?

    Any HTTP status counts as an answer (a token endpoint answers GET with 405);
    the body is not read.
    """
    import httpx

    safe = url.split("?", 1)[0]
    timeout = _timeout(settings)
    try:
        with client.stream("GET", safe, timeout=timeout) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return Row(check, "error", f"{safe}: no answer within {timeout:g} s")
    except httpx.UnsupportedProtocol:
        return Row(check, "error", f"{safe} is not an http:// or https:// URL")
    except httpx.HTTPError as exc:
        tls = tls_failure(exc)
        if tls:
            return Row(check, "error", f"{safe}: {tls}")
        return Row(check, "error", f"{safe}: cannot connect ({type(exc).__name__}: {exc})")
    if not safe.startswith("https://"):
        how = "plain HTTP, no TLS"
    elif settings.tls_verify:
        how = "TLS verified"
    else:
        how = "TLS NOT verified: tls_verify is false"
    return Row(check, OK, f"{safe} answered HTTP {status} ({how})")


def tls_failure(exc: BaseException) -> str:
    """What TLS refused, named from the error chain; "" when it was not TLS."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            reason = current.verify_message or current.reason or "not trusted"
            return f"TLS: the certificate was refused: {reason} (ca_bundle names the CAs to trust)"
        if isinstance(current, ssl.SSLError):
            return f"TLS: the handshake failed: {current.reason or type(current).__name__}"
        current = current.__cause__ or current.__context__
    return ""


def _timeout(settings: AccountSettings) -> float:
    return settings.timeout.total_seconds()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned columns; the last one runs on."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers) - 1)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            [str(c).ljust(w) for c, w in zip(cells, widths, strict=False)] + [str(cells[-1])]
        ).rstrip()

    return [line(headers), *(line(row) for row in rows)]
