"""One FaxMAX JSON-RPC 2.0 call, and the errors its answers map to.

Requests go to the account's URL as the form field ``data`` holding the JSON-RPC
request (``transport: json`` posts the JSON itself). A JSON-RPC ``error`` object
is an error whatever the HTTP status, including the 200 FaxMAX answers with.
Every error carries the call's :class:`~rotator.providers.faxmax.clock.Timing`
(local send and receive times, the vendor's ``Date`` header), so a refused
login token can say whether a clock was at fault.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rotator.errors import (
    BadResponse,
    InvalidGrant,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    scrub_values,
)
from rotator.providers.base import send
from rotator.providers.faxmax.clock import RunClock, Timing
from rotator.tokens import error_from_status

if TYPE_CHECKING:
    from datetime import timedelta

    import httpx

__all__ = [
    "EXP_REFUSED",
    "JsonRpcError",
    "JsonRpcFault",
    "JsonRpcRefused",
    "JsonRpcServerError",
    "LoginTokenTimeRefused",
    "rpc_call",
]

#: the code of a login token refused for its time (transient: a clock, not the grant)
EXP_REFUSED = "login_token_exp"
#: request parameters that carry a secret (scrubbed from the vendor's answer)
_SECRET_PARAMS = ("password", "token_", "code_")

_ids = itertools.count(1)


class Endpoint(Protocol):
    """What a call needs from the account's settings."""

    @property
    def url(self) -> str: ...

    transport: Literal["form", "json"]
    timeout: timedelta


class JsonRpcError(ProviderError):
    """Marker base: every error that came as a JSON-RPC ``error`` object."""

    def __init__(
        self,
        code: str,
        description: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        timing: Timing | None = None,
    ) -> None:
        super().__init__(code, description, status=status, retry_after=retry_after)
        self.timing = timing


class JsonRpcRefused(JsonRpcError, InvalidGrant):
    """An application error: the login, code or session was refused."""


class JsonRpcFault(JsonRpcError, PermanentProviderError):
    """A protocol error (-32700..-32600): our request or the method name is wrong."""


class JsonRpcServerError(JsonRpcError, TransientProviderError):
    """-32603 internal error: worth retrying."""


class LoginTokenTimeRefused(JsonRpcError, TransientProviderError):
    """The vendor refused a login token's ``exp`` (expired or too far ahead).

    A clock (ours or the vendor's) or a slow path, not a dead grant: retried with
    backoff; the description says the measured clock offset.
    """


def rpc_call(
    client: httpx.Client,
    endpoint: Endpoint,
    method: str,
    params: dict[str, str],
    *,
    known: tuple[str, ...] = (),
    clock: RunClock,
) -> Any:
    """One JSON-RPC call; the ``result`` or a typed error.

    ``known``: the account's secrets; with the secret parameters of this call they
    are scrubbed from any vendor text put in an error.
    """
    secrets = (*known, *(params[key] for key in _SECRET_PARAMS if key in params))
    request_id = next(_ids)
    body = json.dumps(
        {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id},
        separators=(",", ":"),
    )
    timeout = endpoint.timeout.total_seconds()
    headers = {"Accept": "application/json"}
    sent_at = clock.now()
    if endpoint.transport == "json":
        answer = send(
            client,
            "POST",
            endpoint.url,
            content=body.encode("utf-8"),
            headers={**headers, "Content-Type": "application/json"},
            timeout=timeout,
        )
    else:
        answer = send(
            client, "POST", endpoint.url, data={"data": body}, headers=headers, timeout=timeout
        )
    timing = Timing(sent_at, clock.now(), answer.date)
    payload: Any = None
    try:
        payload = json.loads(answer.body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." past the stack
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        raise _rpc_error(method, payload["error"], answer.status, secrets, timing)
    if not 200 <= answer.status < 300:
        raise error_from_status(
            answer.status, answer.body, answer.content_type, answer.retry_after, secrets
        )
    if not isinstance(payload, dict) or payload.get("jsonrpc") != "2.0" or "result" not in payload:
        raise BadResponse(
            f"{method}: the answer is not a JSON-RPC 2.0 result", status=answer.status
        )
    if payload.get("id") != request_id:
        raise BadResponse(
            f"{method}: the answer's id does not match the request's", status=answer.status
        )
    return payload["result"]


def _rpc_error(
    method: str,
    error: dict[str, Any],
    status: int,
    secrets: tuple[str, ...],
    timing: Timing,
) -> ProviderError:
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else 0
    message = error.get("message")
    said = scrub_values(message, secrets) if isinstance(message, str) else "no message"
    text = f"{method}: {said}"
    kind = f"jsonrpc_{code}"
    if code == -32603:
        return JsonRpcServerError(kind, text, status=status, timing=timing)
    if -32768 <= code <= -32600:
        return JsonRpcFault(kind, text, status=status, timing=timing)
    return JsonRpcRefused(kind, text, status=status, timing=timing)
