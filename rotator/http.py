"""HTTP clients for rotations: one ``httpx.Client`` per worker thread and TLS setting.

Each worker thread has its own clients, so a rotation never waits for another
thread's turn on a shared connection pool, and the pool it uses holds only that
thread's connections. httpcore checks every idle connection of a pool for a
server-side close (one ``poll`` each) whenever it hands out or takes back a
connection: with one pool shared by 16 workers that was 30 ``poll`` calls per
rotation, each a hand-over of the interpreter lock; now it is 5 (``strace -c``,
2,000 rotations). A thread does one request at a time, so its pool needs one
connection per vendor host; the TLS context (CA certificates loaded once) is
shared.

:class:`PoliteClient` is the client every one of them is: each request it sends
passes the gate of its host (:mod:`rotator.politeness`: concurrency cap, rate
limit, the pauses a vendor asks for) whoever sends it, so no call to a vendor
can bypass the limits. The wait is bounded by half the request's timeout: a call
that would wait longer is not made (:class:`~rotator.politeness.Throttled`),
so the lease of the account it rotates stays well within its time.

:func:`iter_decoded` reads an answer's body with the decompressed size capped
while it is decompressed: httpx inflates each network chunk whole, so a 50 KB
gzip bomb reached about 150 MB before any size check saw a byte of it.

:func:`open_answer` is the vendor call's way through a :class:`PoliteClient`:
rotator builds the request once and hands it to the transport httpx would have
chosen for its URL (a proxy from ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY``
included). The client's layers around the transport (URL merge, cookie jar,
auth flow, redirect loop, event hooks, timing, its own log line) cost about
150-200 us of CPU per call of about 550 and did one thing wrong: one cookie jar
per worker served every account, so a cookie a vendor set for one account went
out with the next account's token request. No vendor call stores or sends a
cookie now, whichever path it takes.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator.errors import BadResponse
from rotator.netstream import corked_backend, install
from rotator.politeness import Permit, Politeness

if TYPE_CHECKING:
    import ssl

    import httpcore
    import httpx

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_DECODED_BYTES",
    "HttpClients",
    "iter_decoded",
    "open_answer",
    "polite_client_class",
]

#: keep-alive connections per thread: one per vendor host for this many hosts
PER_THREAD_CONNECTIONS = 8
#: the most a vendor answer may inflate to; a token response is a few KiB
MAX_DECODED_BYTES = 1024 * 1024
#: the most one decompression step produces (memory held per step)
_STEP = 64 * 1024
#: the encodings rotator asks for and decodes itself
ACCEPT_ENCODING = "gzip, deflate"


class HttpClients:
    """Hands out clients keyed by (thread, verify, ca_bundle); thread-safe.

    ``max_connections`` bounds the keep-alive connections of each thread's client
    (at most one request at a time runs on it, so it bounds the hosts kept warm).
    """

    def __init__(
        self,
        *,
        max_connections: int = PER_THREAD_CONNECTIONS,
        user_agent: str = "rotator",
        politeness: Politeness | None = None,
    ) -> None:
        #: the gates of every vendor host, shared by every thread's client
        self.politeness = politeness if politeness is not None else Politeness()
        self._local = threading.local()
        self._all: list[httpx.Client] = []
        self._tls: dict[tuple[bool, str], bool | ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self._max_connections = max_connections
        self._user_agent = user_agent
        self._backend: httpcore.NetworkBackend | None = None

    def get(self, *, verify: bool = True, ca_bundle: Path | None = None) -> httpx.Client:
        key = (verify, str(ca_bundle or ""))
        mine: dict[tuple[bool, str], httpx.Client] | None = getattr(self._local, "clients", None)
        if mine is None:
            mine = self._local.clients = {}
        client = mine.get(key)
        if client is None:
            client = mine[key] = self._new_client(key, ca_bundle)
        return client

    def _new_client(self, key: tuple[bool, str], ca_bundle: Path | None) -> httpx.Client:
        import httpx

        with self._lock:
            tls = self._tls.get(key)
            if tls is None:
                tls = self._tls[key] = _tls_context(key[0], ca_bundle)
            client = polite_client_class()(
                self.politeness,
                verify=tls,
                follow_redirects=False,
                trust_env=True,
                headers={"User-Agent": self._user_agent, "Accept-Encoding": ACCEPT_ENCODING},
                limits=httpx.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                    keepalive_expiry=30,
                ),
            )
            self._all.append(client)
            if self._backend is None:
                self._backend = corked_backend()
            mounts: dict[Any, Any] = getattr(client, "_mounts", {})
            for transport in (getattr(client, "_transport", None), *mounts.values()):
                install(transport, self._backend)  # else httpcore's own, unchanged
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._all:
                client.close()
            self._all.clear()
            self._local = threading.local()


def open_answer(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> httpx.Response:
    """Send one request and return the answer with its body unread; the caller closes it.

    A :class:`PoliteClient` takes the lean path (``PoliteClient.lean_open``); any
    other client (a test's ``httpx.Client``) the full one, as ``client.stream``.
    """
    opener = getattr(client, "lean_open", None)
    if opener is not None:
        response: httpx.Response = opener(
            method, url, params=params, data=data, content=content, headers=headers, timeout=timeout
        )
        return response
    request = client.build_request(
        method, url, params=params, data=data, content=content, headers=headers, timeout=timeout
    )
    return client.send(request, stream=True)


_polite_client: Callable[..., httpx.Client] | None = None
#: httpx's private "which transport serves this URL" (mounts, proxies); an httpx
#: without it gets the full path (tests name another attribute to take it)
_TRANSPORT_FOR_URL = "_transport_for_url"


def polite_client_class() -> Callable[..., httpx.Client]:
    """The ``httpx.Client`` subclass whose every request passes its host's gate.

    Built on first use: httpx is imported only by the commands that call out.
    """
    global _polite_client  # noqa: PLW0603 - one class, built once, httpx imported lazily
    if _polite_client is not None:
        return _polite_client
    from http.cookiejar import CookieJar  # imports urllib.request: not before httpx is

    import httpx

    class _NoCookies(CookieJar):
        """A jar that keeps nothing: a vendor's ``Set-Cookie`` never reaches another call."""

        def set_cookie(self, cookie: Any) -> None:
            return None

        def extract_cookies(self, response: Any, request: Any) -> None:
            return None

    class _ReleasingStream(httpx.SyncByteStream):
        """The answer's body; closing it frees the host's slot (once)."""

        def __init__(self, inner: httpx.SyncByteStream, on_close: Any) -> None:
            self._inner = inner
            self._on_close = on_close

        def __iter__(self) -> Iterator[bytes]:
            yield from self._inner

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                on_close, self._on_close = self._on_close, None
                if on_close is not None:
                    on_close()

    class PoliteClient(httpx.Client):
        def __init__(self, politeness: Politeness, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.politeness = politeness
            self.cookies = _NoCookies()

        def lean_open(
            self,
            method: str,
            url: str,
            *,
            params: Mapping[str, str] | None = None,
            data: Mapping[str, str] | None = None,
            content: bytes | None = None,
            headers: Mapping[str, str] | None = None,
            timeout: float = 30.0,
        ) -> httpx.Response:
            """The request, built once, straight to its transport; the body unread.

            What ``build_request`` + ``send`` would put on the wire, less the
            cookies (none) and the client's layers: the headers are the client's
            merged with the caller's as httpx merges them, ``params`` merge into
            the URL's query as httpx merges them, and the transport is the one
            httpx picks for the URL (its proxies). A URL with user info (httpx
            turns it into Basic auth) or without a host, a closed client, or an
            httpx without ``_transport_for_url`` take the full path.
            """
            merged = httpx.Headers(self.headers)
            if headers:
                merged.update(headers)
            extensions = {
                "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
            }
            request = httpx.Request(
                method,
                url,
                params=params,
                data=data,
                content=content,
                headers=merged,
                extensions=extensions,
            )
            transport_for = getattr(self, _TRANSPORT_FOR_URL, None)
            target = request.url
            if transport_for is None or self.is_closed or target.is_relative_url or target.userinfo:
                full = self.build_request(
                    method,
                    url,
                    params=params,
                    data=data,
                    content=content,
                    headers=headers,
                    timeout=timeout,
                )
                sent: httpx.Response = self.send(full, stream=True)
                return sent
            permit: Permit = self.politeness.acquire(str(target), budget=(timeout or 30.0) / 2)
            try:
                response: httpx.Response = transport_for(target).handle_request(request)
            except BaseException:
                self.politeness.release(permit, None, None)
                raise
            response.request = request
            return self._released(response, permit)

        def _released(self, response: httpx.Response, permit: Permit) -> httpx.Response:
            """``response`` whose closing frees ``permit`` (the host's slot), once."""
            status, retry_after = response.status_code, response.headers.get("retry-after")
            if response.is_closed:  # built whole in memory (httpx.MockTransport)
                self.politeness.release(permit, status, retry_after)
                return response
            response.stream = _ReleasingStream(
                response.stream,  # type: ignore[arg-type]
                lambda: self.politeness.release(permit, status, retry_after),
            )
            return response

        def send(self, request: httpx.Request, *, stream: bool = False, **kwargs: Any) -> Any:
            timeouts = request.extensions.get("timeout") or {}
            read = timeouts.get("read") or timeouts.get("connect") or 30.0
            permit: Permit = self.politeness.acquire(str(request.url), budget=read / 2)
            try:
                response = super().send(request, stream=True, **kwargs)
            except BaseException:
                self.politeness.release(permit, None, None)
                raise
            response = self._released(response, permit)
            if not stream and not response.is_closed:
                try:
                    response.read()
                finally:
                    response.close()
            return response

    _polite_client = PoliteClient
    return PoliteClient


def _tls_context(verify: bool, ca_bundle: Path | None) -> bool | ssl.SSLContext:
    """One context per TLS setting, shared by every thread's client."""
    import ssl

    import httpx

    if not verify:
        return False
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=str(ca_bundle))
    factory = getattr(httpx, "create_ssl_context", None)  # httpx >= 0.28
    if factory is None:
        return True  # each client loads the default CA bundle itself
    context: ssl.SSLContext = factory(trust_env=True)
    return context


def iter_decoded(
    response: httpx.Response, *, limit: int = MAX_DECODED_BYTES, where: str = "the vendor"
) -> Iterator[bytes]:
    """The body of *response*, decompressed in bounded steps; refused past *limit* bytes.

    Reads the raw stream (``iter_raw``) and inflates at most 64 KiB per step, so
    memory stays bounded whatever the compression ratio. A body that inflates
    past *limit*, or an encoding other than gzip/deflate/identity, is a
    :class:`~rotator.errors.BadResponse`; a body that is not what its
    Content-Encoding says raises ``httpx.DecodingError`` (as httpx itself would).
    """
    import httpx

    if response.is_stream_consumed:
        # built in memory (httpx.MockTransport): httpx has decoded it already
        yield response.content
        return
    encodings = [
        part.strip().lower()
        for part in response.headers.get("content-encoding", "").split(",")
        if part.strip() and part.strip().lower() != "identity"
    ]
    if not encodings:
        yield from response.iter_raw()
        return
    if len(encodings) > 1 or encodings[0] not in ("gzip", "x-gzip", "deflate"):
        raise BadResponse(
            f"{where} answered with Content-Encoding {', '.join(encodings)[:40]!r}; "
            f"rotator asks for {ACCEPT_ENCODING} only",
            status=response.status_code,
        )
    gzip = encodings[0] != "deflate"
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)
    size = 0
    started = False
    try:
        for raw in response.iter_raw():
            if not started and not gzip and raw:
                # "deflate" is zlib-wrapped by the RFC, raw deflate by some servers
                started = True
                if raw[0] & 0x0F != 8:
                    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = raw
            while data:
                out = inflater.decompress(data, min(_STEP, limit - size + 1))
                data = inflater.unconsumed_tail
                size += len(out)
                if size > limit:
                    raise BadResponse(
                        f"{where} answered a body that inflates past {limit} bytes",
                        status=response.status_code,
                    )
                if out:
                    yield out
        rest = inflater.flush()
    except zlib.error as exc:
        raise httpx.DecodingError(str(exc)) from None
    if size + len(rest) > limit:
        raise BadResponse(
            f"{where} answered a body that inflates past {limit} bytes",
            status=response.status_code,
        )
    if rest:
        yield rest
