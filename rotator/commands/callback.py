"""How an authorization code comes back to ``rotator authorize``.

Two ways: the browser's redirect reaches a one-shot loopback listener, or the
operator pastes the code (or the whole redirect address) with ``--code``, or
through standard input with ``--code -`` so that it never shows in ``ps``.

The listener is reachable by anything that can reach its address, so it only
accepts the one request that proves it comes from our authorization URL: the
redirect path, and the ``state`` printed in that URL (compared in constant
time). Every other request (a guessed state, no state, a wrong path, an error
with a wrong state) is answered 400 and ignored, and the listener keeps
waiting for the real redirect until its timeout: a stranger can neither abort
the bootstrap nor slip in a code of their own.

Fax.Plus does not document that it sends ``state`` back. A redirect on the
right path that carries a code but no state is refused like the others (it
cannot be told from a forged one), but it is not met with silence: the browser
page and the terminal (once) say that the state was missing and how to finish,
``rotator authorize ACCOUNT --code '<the address>'``, which the operator can
judge because they know whether it was their own browser.
"""

from __future__ import annotations

import html
import ipaddress
import secrets
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from rotator.commands.common import UsageError
from rotator.errors import RotatorError

__all__ = [
    "AuthorizeError",
    "Callback",
    "CallbackListener",
    "is_loopback",
    "listen_address",
    "parse_pasted_code",
    "read_code",
    "same_state",
    "warn_if_exposed",
]

_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


class AuthorizeError(RotatorError):
    """The authorization did not complete (exit 1); the message says why."""


@dataclass(frozen=True, slots=True)
class Callback:
    """What came back: a code or an error, and the ``state`` it came with."""

    code: str | None
    state: str | None
    error: str | None = None


def same_state(expected: str, given: str | None) -> bool:
    """Constant-time comparison of two ``state`` values.

    Compared as UTF-8 bytes: ``secrets.compare_digest`` raises TypeError on a
    ``str`` that is not ASCII, and the given value is whatever a stranger sent.
    """
    if given is None:
        return False
    return secrets.compare_digest(
        expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )


def _callback_from_query(query: str) -> Callback:
    params = dict(parse_qsl(query, keep_blank_values=True))
    return Callback(
        code=params.get("code") or None,
        state=params.get("state"),
        error=params.get("error_description") or params.get("error"),
    )


def parse_pasted_code(value: str) -> Callback:
    """``--code`` takes a bare code, or the whole redirect URL (or its query string)."""
    value = value.strip()
    query = urlsplit(value).query if "://" in value else value.lstrip("?")
    if "=" not in query:
        return Callback(code=value or None, state=None)
    return _callback_from_query(query)


def read_code(value: str, stdin: TextIO | None = None) -> str:
    """The ``--code`` argument, or, for ``-``, the first non-empty line of standard input.

    Raises UsageError (exit 2) when standard input holds nothing.
    """
    if value != "-":
        return value
    source = stdin or sys.stdin
    if source.isatty():
        print(
            "paste the code or the whole redirect address, then press Enter:",
            file=sys.stderr,
            flush=True,
        )
    for line in source:
        if line.strip():
            return line.strip()
    raise UsageError(
        "--code - read nothing from standard input; pipe in the code or the redirect "
        "address (e.g. `pbpaste | rotator authorize ACCOUNT --code -`)"
    )


def is_loopback(host: str) -> bool:
    """True when ``host`` only reaches this machine (127.0.0.0/8, ::1, localhost)."""
    bare = host.strip("[]").lower()
    if bare in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def listen_address(listen: str | None, redirect_uri: str) -> tuple[str, int] | None:
    """Where to listen: ``--listen HOST:PORT``, else a loopback ``redirect_uri``, else None."""
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
        return host, int(port)
    split = urlsplit(redirect_uri)
    if split.scheme == "http" and is_loopback(split.hostname or ""):
        return split.hostname or "127.0.0.1", split.port or 80
    return None


def warn_if_exposed(host: str, port: int, err: TextIO | None = None) -> bool:
    """Say on stderr when the listener is reachable from beyond this machine.

    Not a refusal: inside a container the redirect may have to come in through
    a published port. Returns True when it warned.
    """
    if is_loopback(host):
        return False
    print(
        f"warning: --listen {host}:{port} is not a loopback address: anyone who can reach "
        "this machine on that port can talk to the listener while it waits (it only accepts "
        "the redirect carrying the state printed here). Prefer "
        f"--listen 127.0.0.1:{port} (or [::1]:{port}) unless the browser's redirect must "
        "come in from outside, e.g. through a container's published port.",
        file=err or sys.stderr,
        flush=True,
    )
    return True


class CallbackListener:
    """A loopback HTTP listener that waits for the one redirect carrying ``state``."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        state: str,
        *,
        account: str = "ACCOUNT",
        err: TextIO | None = None,
    ) -> None:
        self.path = path or "/"
        self.refused = 0  # requests answered 400 and ignored (tests and the timeout message)
        #: of those, redirects with a code (or error) and no state at all
        self.stateless = 0
        self.account = account
        self._err = err
        self._state = state
        self._result: Callback | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._server = _bind(host, port, self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="authorize", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _accept(self, target: str) -> tuple[int, str]:
        """Decide on one request: (HTTP status, text for the browser)."""
        split = urlsplit(target)
        callback = _callback_from_query(split.query)
        if split.path == self.path and callback.state is None and (callback.code or callback.error):
            return self._stateless()
        if split.path != self.path or not same_state(self._state, callback.state):
            with self._lock:
                self.refused += 1
            return 400, "This is not the redirect rotator is waiting for; it was ignored."
        if callback.code is None and callback.error is None:
            with self._lock:
                self.refused += 1
            return 400, "No code in this request; it was ignored."
        with self._lock:
            if self._result is not None:  # the browser retried: the first answer stands
                return 400, "rotator already received the authorization."
            self._result = callback
        self._done.set()
        if callback.error:
            return 400, "The authorization was not granted. See the terminal."
        return 200, "rotator received the authorization. You can close this."

    @property
    def finish_with_code(self) -> str:
        return f"rotator authorize {self.account} --code '<the address>'"

    def _stateless(self) -> tuple[int, str]:
        """A redirect without ``state``: refused, and said how to finish (the terminal once)."""
        with self._lock:
            self.refused += 1
            self.stateless += 1
            first = self.stateless == 1
        if first:
            print(
                f"a redirect reached {self.path} without a state (Fax.Plus did not send back "
                "the one in the URL above), so it was not taken: anyone who can reach this "
                "port could send one. If it came from your browser, copy the address the "
                f"browser shows and run:\n\n  {self.finish_with_code}\n\n(this one keeps "
                "waiting for a redirect with the state; stop it with Ctrl-C)",
                file=self._err or sys.stderr,
                flush=True,
            )
        return 400, (
            "This redirect carries no <code>state</code>, so rotator cannot tell it from a "
            "forged one and did not take it. If you just authorized, copy this page's address "
            f"and run: <code>{html.escape(self.finish_with_code)}</code>"
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a connection that sends nothing does not hold a thread for long

            def do_GET(self) -> None:
                self._reply(*listener._accept(self.path))

            def do_POST(self) -> None:
                self._reply(400, "This is not the redirect rotator is waiting for.")

            def _reply(self, status: int, text: str) -> None:
                body = f"<!doctype html><title>rotator</title><p>{text}</p>\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # the request line carries the code

        return Handler

    def __enter__(self) -> CallbackListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait(self, timeout: float) -> Callback:
        """The accepted redirect; AuthorizeError when none came within ``timeout``."""
        if not self._done.wait(timeout):
            ignored = f" ({self.refused} other requests were ignored)" if self.refused else ""
            if self.stateless:
                raise AuthorizeError(
                    f"no redirect with the state arrived within {timeout:g}s{ignored}; "
                    f"{self.stateless} came without a state (Fax.Plus did not send it back): "
                    f"if it was yours, finish with {self.finish_with_code}, pasting the "
                    "address the browser shows"
                )
            raise AuthorizeError(
                f"no redirect arrived within {timeout:g}s{ignored}; open the URL above, or run "
                "again with --code"
            )
        with self._lock:
            assert self._result is not None  # noqa: S101 - set before the event
            return self._result


def _bind(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    bind = host.strip("[]")
    if bind.lower() == "localhost":
        bind = "127.0.0.1"
    server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer
    if ":" in bind:

        class _V6(ThreadingHTTPServer):
            address_family = socket.AF_INET6

        server_class = _V6
    try:
        return server_class((bind, port), handler)
    except OSError as exc:
        raise AuthorizeError(
            f"cannot listen on {host}:{port} for the redirect: {exc.strerror or exc} "
            "(use --listen HOST:PORT, or --code)"
        ) from None
