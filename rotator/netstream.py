"""The sockets under rotator's HTTP clients: one write per request, a timeout set once.

httpcore writes a request's head and its body separately and sets the socket's
timeout before every read and write; ``socket.settimeout`` is an ``ioctl`` each
time, even when the value is the one already set. A token call was 11 system
calls on its connection (``strace -c``, 1,000 calls): 2 ``sendto``, 3 ``ioctl``,
5 ``poll``, 1 ``recvfrom``. Each one releases the interpreter lock, and with 16
busy workers every release is a hand-over between threads. The stream here
holds what is written until the next read (an HTTP/1.1 client always reads the
answer after it has written the request) and sets the timeout only when it
changes: 6 system calls a call, on plain TCP and under TLS alike.

Only httpcore's own plain socket streams are wrapped (``SyncStream``); TLS inside
TLS (an HTTPS proxy) and anything else is left as httpcore made it. An httpcore
whose pools do not keep ``_network_backend`` gets its own backend, unchanged.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

    import httpcore

__all__ = ["cork", "corked_backend", "install"]

#: a request larger than this is written before its answer is read
_HOLD = 64 * 1024
_UNSET = object()


def corked_backend() -> httpcore.NetworkBackend:
    """httpcore's sync backend, whose plain socket streams write once per request."""
    import httpcore

    class _CorkedStream(httpcore.NetworkStream):
        """``inner``'s socket, written once per request, its timeout set when it changes."""

        def __init__(self, inner: httpcore.NetworkStream) -> None:
            self._inner = inner
            self._sock: socket.socket = inner.get_extra_info("socket")
            self._held = bytearray()
            self._held_timeout: float | None = None
            self._timeout: object = _UNSET

        def _set_timeout(self, timeout: float | None) -> None:
            if timeout != self._timeout:
                self._sock.settimeout(timeout)
                self._timeout = timeout

        def _send_held(self) -> None:
            """Write what is held; a write that fails for another reason than time is
            left for the read to find, as httpcore does (a server may refuse a request
            early and still answer it)."""
            held, self._held = bytes(self._held), bytearray()
            try:
                self._set_timeout(self._held_timeout)
                self._sock.sendall(held)
            except TimeoutError as exc:
                raise httpcore.WriteTimeout(exc) from exc
            except OSError:
                pass

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            if not buffer:
                return
            self._held += buffer
            self._held_timeout = timeout
            if len(self._held) > _HOLD:
                held, self._held = bytes(self._held), bytearray()
                try:
                    self._set_timeout(timeout)
                    self._sock.sendall(held)
                except TimeoutError as exc:
                    raise httpcore.WriteTimeout(exc) from exc
                except OSError as exc:
                    raise httpcore.WriteError(exc) from exc

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            if self._held:
                self._send_held()
            try:
                self._set_timeout(timeout)
                return self._sock.recv(max_bytes)
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(exc) from exc
            except OSError as exc:
                raise httpcore.ReadError(exc) from exc

        def close(self) -> None:
            self._held = bytearray()  # a request never answered: the connection goes
            self._inner.close()

        def start_tls(
            self,
            ssl_context: ssl.SSLContext,
            server_hostname: str | None = None,
            timeout: float | None = None,
        ) -> httpcore.NetworkStream:
            if self._held:
                self._send_held()
            return cork(self._inner.start_tls(ssl_context, server_hostname, timeout))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class _CorkedBackend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> httpcore.NetworkStream:
            return cork(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

        def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Any = None
        ) -> httpcore.NetworkStream:
            return cork(self._inner.connect_unix_socket(path, timeout, socket_options))

        def sleep(self, seconds: float) -> None:
            # httpcore sleeps only between connect retries; rotator's pools make none
            self._inner.sleep(seconds)

    global _stream_class  # noqa: PLW0603 - built once, httpcore imported lazily
    _stream_class = _CorkedStream
    return _CorkedBackend()


_stream_class: Any = None


def cork(stream: httpcore.NetworkStream) -> httpcore.NetworkStream:
    """``stream`` written once per request, if it is httpcore's plain socket stream."""
    if type(stream).__name__ != "SyncStream" or _stream_class is None:
        return stream  # TLS in TLS, a mock, another httpcore: as it is
    if not isinstance(stream.get_extra_info("socket"), socket.socket):
        return stream
    wrapped: httpcore.NetworkStream = _stream_class(stream)
    return wrapped


def install(transport: Any, backend: httpcore.NetworkBackend) -> bool:
    """Give ``transport``'s pool (httpx's ``HTTPTransport``) ``backend``; False if it has none."""
    import httpcore

    pool = getattr(transport, "_pool", None)
    if not isinstance(getattr(pool, "_network_backend", None), httpcore.SyncBackend):
        return False
    pool._network_backend = backend  # type: ignore[union-attr]
    return True
