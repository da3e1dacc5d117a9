"""Vault calls sent straight to the connection pool, answered as hvac answers them.

hvac's JSON adapter over a ``requests.Session`` spends about 450 us of CPU per
call above the connection pool it ends in (hvac's URL and header handling,
``Session.request`` preparing and merging settings, the response object, the
cookie jar both ways: ``bench/results.md``, "Tenth round"). A burst makes two or
three Vault calls per rotation, on one interpreter lock shared by every worker,
so that was the largest cost of an OpenBao burst after the token call.

:class:`Direct` sends the same request (method, URL, headers, JSON body,
timeout) through the pool that ``requests`` itself would use for the URL
(``HTTPAdapter.get_connection_with_tls_context``: the same TLS verification and
CA bundle, the same keep-alive connections, the same retry policy), and turns
what comes back into what hvac would have given: the JSON of a 200, ``{}`` for
another success, and for a failure the exception hvac raises
(``hvac.utils.raise_for_error`` with the same message, errors, text and JSON),
or the ``requests`` exception ``requests`` raises for a transport failure. So
:func:`rotator.backends.vault.client.mapped`, the one place errors become store
errors, sees exactly what it saw before.

It steps aside (the caller goes through hvac) where hvac does more than this:
a proxy that applies to the Vault URL, a redirect (an HA standby pointing at the
active node: nothing was done, hvac follows it), or a ``requests`` too old to
hand out its pool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

__all__ = ["Direct", "Redirected"]


class Redirected(Exception):
    """The server answered 3xx: nothing was done; hvac follows redirects."""


class Direct:
    """One Vault server's calls through ``session``'s pool; see the module docstring."""

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        verify: bool | str,
        timeout: float,
        namespace: str | None,
    ) -> None:
        import requests
        import requests.adapters
        import urllib3
        from urllib3.util import parse_url

        self._base = url.strip("/")
        #: the path of the base URL (a Vault behind a path prefix): what urlopen is sent
        self._prefix = (parse_url(self._base).path or "").rstrip("/")
        self._verify = verify
        adapter = session.get_adapter(self._base + "/")
        if not isinstance(adapter, requests.adapters.HTTPAdapter):
            raise TypeError("Direct needs requests' HTTPAdapter (see Direct.usable)")
        self._adapter = adapter
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        headers = {"X-Vault-Request": "true"}  # what hvac sends with every request
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        self._headers = headers
        #: a request object only for choosing the pool (its URL is all requests reads)
        self._probe = requests.PreparedRequest()
        self._probe.url = self._base + "/"

    @classmethod
    def usable(cls, session: requests.Session, url: str) -> bool:
        """Whether the pool can be used as it is: no proxy for ``url``, and a
        ``requests`` (2.32.2 or later) that hands out the pool for a request."""
        import requests.adapters
        import requests.utils

        adapter = session.get_adapter(url.strip("/") + "/")
        if not isinstance(adapter, requests.adapters.HTTPAdapter):
            return False
        if not hasattr(adapter, "get_connection_with_tls_context"):
            return False
        proxy = requests.utils.select_proxy(url, session.proxies)
        return proxy is None or requests.utils.should_bypass_proxies(url, no_proxy=None)

    def request(
        self, method: str, api_path: str, headers: Mapping[str, str], body: Any = None
    ) -> dict[str, Any]:
        """hvac's ``JSONAdapter.request`` for ``/v1/<api_path>``; raises what it raises,
        and :class:`Redirected` for a 3xx (the caller sends it through hvac)."""
        path = f"/v1/{api_path}"
        while "//" in path:  # as hvac: Vault treats '//' as '/'
            path = path.replace("//", "/")
        tail = path.strip("/")
        url = f"{self._base}/{tail}"
        sent = {**self._headers, **headers}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body, allow_nan=False).encode("utf-8")
            sent["Content-Type"] = "application/json"
        answer = self._send(method, url, f"{self._prefix}/{tail}", payload, sent)
        status = answer.status
        raw = answer.data
        if status >= 400:
            _raise_as_hvac(method, url, status, raw, answer.headers.get("Content-Type"))
        if 300 <= status < 400:
            raise Redirected(status)
        if status == 200:
            try:
                loaded = json.loads(raw)
            except ValueError:
                return {}
            return loaded if isinstance(loaded, dict) else {}
        return {}

    def _send(
        self, method: str, url: str, target: str, payload: bytes | None, headers: dict[str, str]
    ) -> Any:
        """``conn.urlopen`` with the exceptions ``HTTPAdapter.send`` turns its errors into."""
        import requests.exceptions as rex
        from urllib3.exceptions import (
            ClosedPoolError,
            ConnectTimeoutError,
            MaxRetryError,
            NewConnectionError,
            ProtocolError,
            ReadTimeoutError,
            ResponseError,
        )
        from urllib3.exceptions import ProxyError as _ProxyError
        from urllib3.exceptions import SSLError as _SSLError

        adapter = self._adapter
        try:
            conn = adapter.get_connection_with_tls_context(
                self._probe, self._verify, proxies={}, cert=None
            )
            adapter.cert_verify(conn, url, self._verify, None)
            return conn.urlopen(
                method=method,
                url=target,
                body=payload,
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=True,
                decode_content=True,
                retries=adapter.max_retries,
                timeout=self._timeout,
            )
        except (ProtocolError, OSError) as err:
            raise rex.ConnectionError(err) from None
        except MaxRetryError as err:
            reason = err.reason
            if isinstance(reason, ConnectTimeoutError) and not isinstance(
                reason, NewConnectionError
            ):
                raise rex.ConnectTimeout(err) from None
            if isinstance(reason, ResponseError):
                raise rex.RetryError(err) from None
            if isinstance(reason, _ProxyError):
                raise rex.ProxyError(err) from None
            if isinstance(reason, _SSLError):
                raise rex.SSLError(err) from None
            raise rex.ConnectionError(err) from None
        except ClosedPoolError as err:
            raise rex.ConnectionError(err) from None
        except _SSLError as err:
            raise rex.SSLError(err) from None
        except ReadTimeoutError as err:
            raise rex.ReadTimeout(err) from None


def _raise_as_hvac(
    method: str, url: str, status: int, raw: bytes, content_type: str | None
) -> None:
    """hvac's ``RawAdapter._raise_for_error``: the same message, errors, text and JSON."""
    from hvac import utils

    text = raw.decode("utf-8", "replace")
    loaded: Any = None
    errors: Any = None
    if content_type == "application/json":
        try:
            loaded = json.loads(raw)
        except ValueError:
            loaded = None
        else:
            errors = loaded.get("errors") if isinstance(loaded, dict) else None
    message = text if errors is None else None
    utils.raise_for_error(method, url, status, message, errors=errors, text=text, json=loaded)
