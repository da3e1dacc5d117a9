"""The Provider protocol and the one HTTP send helper (the registry: providers.registry).

A provider turns an account's state into a fresh :class:`~rotator.tokens.TokenSet`
and says what consumers receive. It takes its ``httpx.Client`` from the caller
(so tests aim it at an emulator) and does no other I/O.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from rotator.errors import BadResponse, PermanentProviderError, TransientProviderError
from rotator.http import iter_decoded, open_answer
from rotator.tokens import MAX_RESPONSE_BYTES, ConsumerView, TokenSet, format_time

if TYPE_CHECKING:
    import httpx

    from rotator.config.models import AccountSettings
    from rotator.state import AccountState

__all__ = [
    "Authorizable",
    "HttpAnswer",
    "Provider",
    "base_view",
    "pkce_challenge",
    "send",
]


class Provider(Protocol):
    name: ClassVar[str]
    settings_model: ClassVar[type[AccountSettings]]

    def __init__(self, account: str, settings: Any) -> None: ...

    @property
    def needs_seed(self) -> bool:
        """True when it cannot start without a stored grant (`rotator import`/`authorize`)."""
        ...

    def refresh(self, state: AccountState, client: httpx.Client, now: datetime) -> TokenSet: ...

    def consumer_view(self, tokens: TokenSet) -> ConsumerView:
        """What sinks receive: strings, and objects where a vendor needs one (never an
        object flattened into a JSON string)."""
        ...


@runtime_checkable
class Authorizable(Protocol):
    """A provider that can obtain a grant by the authorization-code flow (RFC 6749 4.1).

    ``rotator authorize`` and the console's links both drive it, so what "can be
    authorized" means is decided here, once: :meth:`authorize_problem` answers
    None when the account's settings allow the flow, else what to set.
    """

    account: str

    @property
    def supports_pkce(self) -> bool:
        """True when the flow sends an S256 ``code_challenge`` (RFC 7636)."""
        ...

    @property
    def redirect_uri(self) -> str | None:
        """The account's own ``redirect_uri`` (None: not configured)."""
        ...

    def authorize_problem(self) -> str | None:
        """None when the account can be authorized; else what its settings lack."""
        ...

    def authorization_url(
        self, state: str, redirect_uri: str, code_challenge: str | None
    ) -> str: ...

    def exchange_code(
        self,
        client: httpx.Client,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
        now: datetime,
    ) -> TokenSet:
        """Trade a code for tokens; the answer must carry a refresh token, and its
        ``refresh_expires_at`` follows the vendor's rules for a fresh authorization."""
        ...


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(ASCII(code_verifier))), without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def base_view(account: str, provider: str, tokens: TokenSet) -> dict[str, str]:
    """The consumer view every provider starts from (DESIGN.md, "What sinks receive").

    All strings; a provider that adds an object builds a ``dict[str, ViewValue]``
    from it."""
    return {
        "access_token": tokens.access_token.reveal(),
        "token_type": tokens.token_type,
        "expires_at": format_time(tokens.expires_at),
        "account": account,
        "provider": provider,
    }


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    content_type: str
    retry_after: str | None
    #: the answer's ``Date`` header (FaxMAX measures clock skew from it)
    date: str | None = None


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> HttpAnswer:
    """Send one request; map transport failures to typed errors; cap the body size.

    The URL in an error never includes the query string (Fax.Plus puts the refresh
    token there). ``timeout`` bounds the whole answer, not only each read: httpx's
    timeouts are per network operation, so a vendor trickling its body a byte at
    a time would otherwise hold the call (and the account's lease) for hours.
    """
    import httpx

    safe_url = url.split("?", 1)[0]
    deadline = time.monotonic() + timeout
    try:
        response = open_answer(
            client,
            method,
            url,
            params=params,
            data=data,
            content=content,
            headers=headers,
            timeout=timeout,
        )
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in iter_decoded(response, where=safe_url):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise BadResponse(
                        f"{safe_url} answered more than {MAX_RESPONSE_BYTES} bytes",
                        status=response.status_code,
                    )
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TransientProviderError(
                        "timeout",
                        f"{safe_url} did not answer within {timeout:g}s (the answer trickled in)",
                    )
            answer_headers = response.headers
            return HttpAnswer(
                status=response.status_code,
                body=b"".join(chunks),
                content_type=answer_headers.get("content-type", ""),
                retry_after=answer_headers.get("retry-after"),
                date=answer_headers.get("date"),
            )
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        raise TransientProviderError(
            "timeout", f"{safe_url} did not answer within {timeout:g}s ({type(exc).__name__})"
        ) from None
    except httpx.UnsupportedProtocol:
        raise PermanentProviderError(
            "bad_url", f"{safe_url} is not an http:// or https:// URL"
        ) from None
    except httpx.TransportError as exc:
        raise TransientProviderError(
            "connection_error", f"{safe_url}: {type(exc).__name__}"
        ) from None
    except httpx.RequestError as exc:
        # DecodingError (a Content-Encoding the body does not match), TooManyRedirects:
        # the answer is unusable, and no raw httpx error may escape a provider.
        raise TransientProviderError(
            "bad_encoding", f"{safe_url}: unusable answer ({type(exc).__name__})"
        ) from None
