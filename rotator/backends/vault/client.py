"""The few Vault calls rotator makes, as a typed Protocol, and the hvac client behind it.

The store and its login code see only :class:`VaultClient` (external-secrets'
``SMInterface`` idea): each method is one Vault endpoint with typed arguments,
so mypy checks every call, and a test injects a wrapped client through the
store's constructor instead of patching private methods. :class:`HvacClient`
is the one implementation; it is the only module that imports hvac, and
:func:`mapped` is the one place hvac and requests errors become typed store
errors.

The token is an argument of every call, sent as a header: the one hvac client
(and its connection pool) never holds token state, so every worker thread
shares it while the login code swaps tokens under its own lock.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rotator.backends.vault.direct import Direct, Redirected
from rotator.errors import (
    StoreAuthError,
    StoreConflict,
    StoreError,
    StorePermissionError,
    StoreUnavailable,
    scrub,
)
from rotator.secrets import Secret
from rotator.tokens import ViewValue

if TYPE_CHECKING:
    from rotator.config.models import VaultStoreSettings

__all__ = ["HvacClient", "Latest", "VaultClient", "is_forbidden", "mapped"]

#: connections kept per store (one per concurrent worker, up to this many)
_POOL_SIZE = 64

#: (data of the latest live version, its metadata): (None, metadata) when the latest
#: version is deleted or destroyed, (None, None) when nothing is at the path
Latest = tuple[dict[str, Any] | None, dict[str, Any] | None]


class VaultClient(Protocol):
    """Exactly the Vault endpoints rotator calls. Errors are the SDK's own; the
    store maps them with :func:`mapped` (the SDK's, for an injected client)."""

    def lookup_self(self, token: Secret) -> Mapping[str, Any]:
        """``GET auth/token/lookup-self``: the ``data`` of the answer."""
        ...

    def renew_self(self, token: Secret) -> Mapping[str, Any]:
        """``POST auth/token/renew-self``: the ``auth`` of the answer."""
        ...

    def login(self, mount: str, body: Mapping[str, str]) -> Mapping[str, Any]:
        """``POST auth/<mount>/login`` (AppRole, Kubernetes): the ``auth`` of the answer."""
        ...

    def read_data(self, data_path: str, token: Secret) -> Latest:
        """``GET <mount>/data/<path>``; a missing or deleted latest version is an answer."""
        ...

    def write_data(
        self, data_path: str, data: Mapping[str, ViewValue], cas: int, token: Secret
    ) -> int:
        """``POST <mount>/data/<path>`` with check-and-set ``cas``: the new version."""
        ...

    def write_metadata(self, metadata_path: str, custom: Mapping[str, str], token: Secret) -> None:
        """``POST <mount>/metadata/<path>`` setting ``custom_metadata``."""
        ...

    def delete_metadata(self, metadata_path: str, token: Secret) -> None:
        """``DELETE <mount>/metadata/<path>`` (every version); a missing path is done."""
        ...

    def list_keys(self, metadata_path: str, token: Secret) -> list[str] | None:
        """``LIST <mount>/metadata/<dir>``: the keys under it (a sub-directory ends in
        ``/``), [] when there are none; None when the policy does not allow it (403)."""
        ...

    def mount_info(self, mount: str, token: Secret) -> Mapping[str, Any] | None:
        """``GET sys/internal/ui/mounts/<mount>``; None when no mount is visible."""
        ...

    def capabilities(self, paths: Sequence[str], token: Secret) -> Mapping[str, Any] | None:
        """``POST sys/capabilities-self``; None when the token may not ask."""
        ...

    def close(self) -> None: ...


class HvacClient:
    """:class:`VaultClient` over one hvac client and one pooled requests session."""

    def __init__(self, settings: VaultStoreSettings) -> None:
        import hvac
        import requests
        import requests.adapters
        import requests.utils

        verify: bool | str = settings.verify
        if verify and settings.ca_cert is not None:
            verify = str(settings.ca_cert)
        elif verify:
            # what requests would take from the environment (trust_env is off below)
            verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            )
        # every worker thread shares this session: a pool as large as the biggest
        # worker pool (server.workers, 16 by default), so that no connection is
        # opened and dropped per request
        session = requests.Session()
        session.verify = verify  # hvac prefers the session's verify over its own argument
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=_POOL_SIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # requests scans the whole environment for proxy settings on every request
        # (half a millisecond of CPU with ~80 variables); read them once instead.
        session.proxies = dict(requests.utils.get_environ_proxies(settings.url))
        session.trust_env = False
        self._session = session
        # token="" keeps hvac from picking up $VAULT_TOKEN or ~/.vault-token: the
        # token is an argument of every call
        self._hvac = hvac.Client(
            url=settings.url,
            session=session,
            token="",
            verify=verify,
            timeout=settings.timeout.total_seconds(),
            namespace=settings.namespace,
        )
        #: the same calls without hvac's and requests' layers (None: hvac's own path)
        self._direct: Direct | None = (
            Direct(
                session,
                settings.url,
                verify=verify,
                timeout=settings.timeout.total_seconds(),
                namespace=settings.namespace,
            )
            if Direct.usable(session, settings.url)
            else None
        )

    def _request(
        self, method: str, api_path: str, token: Secret | None, body: Any = None
    ) -> dict[str, Any]:
        headers = {"X-Vault-Token": token.reveal()} if token is not None else {}
        if self._direct is not None:
            try:
                return self._direct.request(method, api_path, headers, body)
            except Redirected:
                pass  # an HA standby's redirect: hvac follows it (nothing was done)
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        answer = self._hvac.adapter.request(method, f"/v1/{api_path}", **kwargs)
        # hvac's JSON adapter answers a body-less 204 with the response object
        return answer if isinstance(answer, dict) else {}

    def lookup_self(self, token: Secret) -> Mapping[str, Any]:
        return _dict(self._request("GET", "auth/token/lookup-self", token).get("data"))

    def renew_self(self, token: Secret) -> Mapping[str, Any]:
        return _dict(self._request("POST", "auth/token/renew-self", token, {}).get("auth"))

    def login(self, mount: str, body: Mapping[str, str]) -> Mapping[str, Any]:
        return _dict(self._request("POST", f"auth/{mount}/login", None, dict(body)).get("auth"))

    def read_data(self, data_path: str, token: Secret) -> Latest:
        import hvac.exceptions

        try:
            answer = self._request("GET", data_path, token)
        except hvac.exceptions.InvalidPath as exc:
            if _no_route(exc):
                raise
            # 404 with a body: the latest version is deleted; its metadata says which
            body = exc.json if isinstance(exc.json, dict) else {}
            meta = _dict(body.get("data")).get("metadata")
            return None, meta if isinstance(meta, dict) else None
        payload = _dict(answer.get("data"))
        data, meta = payload.get("data"), payload.get("metadata")
        return (
            data if isinstance(data, dict) else None,
            meta if isinstance(meta, dict) else None,
        )

    def write_data(
        self, data_path: str, data: Mapping[str, ViewValue], cas: int, token: Secret
    ) -> int:
        body = {"options": {"cas": cas}, "data": dict(data)}
        return int(_dict(self._request("POST", data_path, token, body).get("data"))["version"])

    def write_metadata(self, metadata_path: str, custom: Mapping[str, str], token: Secret) -> None:
        self._request("POST", metadata_path, token, {"custom_metadata": dict(custom)})

    def delete_metadata(self, metadata_path: str, token: Secret) -> None:
        import hvac.exceptions

        try:
            self._request("DELETE", metadata_path, token)
        except hvac.exceptions.InvalidPath as exc:
            if _no_route(exc):
                raise

    def list_keys(self, metadata_path: str, token: Secret) -> list[str] | None:
        import hvac.exceptions

        try:
            answer = self._request("LIST", metadata_path, token)
        except hvac.exceptions.Forbidden:
            return None
        except hvac.exceptions.InvalidPath as exc:
            if _no_route(exc):
                raise
            return []  # nothing under it yet
        keys = _dict(answer.get("data")).get("keys")
        return [str(k) for k in keys] if isinstance(keys, list) else []

    def mount_info(self, mount: str, token: Secret) -> Mapping[str, Any] | None:
        import hvac.exceptions

        try:
            return _dict(self._request("GET", f"sys/internal/ui/mounts/{mount}", token).get("data"))
        except (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden):
            return None

    def capabilities(self, paths: Sequence[str], token: Secret) -> Mapping[str, Any] | None:
        import hvac.exceptions

        try:
            answer = self._request("POST", "sys/capabilities-self", token, {"paths": list(paths)})
        except hvac.exceptions.Forbidden:
            return None
        return _dict(answer.get("data")) or answer

    def close(self) -> None:
        self._session.close()


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _no_route(exc: Exception) -> bool:
    """A 404 from the router (no engine at the mount), not from the KV engine."""
    return "no handler for route" in " ".join(str(e) for e in getattr(exc, "errors", None) or [])


def _short(errors: str) -> str:
    """Vault wraps one error as '1 error occurred: * permission denied'."""
    return re.sub(r"^\d+ errors? occurred:\s*\*\s*", "", errors).strip()


def is_forbidden(exc: Exception) -> bool:
    """A 403: the token is revoked or expired (one re-login heals it) or the policy
    refuses (the re-login changes nothing and the retry reports it)."""
    import hvac.exceptions

    return isinstance(exc, hvac.exceptions.Forbidden)


def mapped(
    exc: Exception,
    settings: VaultStoreSettings,
    *,
    store: str,
    action: str,
    path: str,
    login: bool = False,
) -> StoreError:
    """The one place hvac / requests errors become typed store errors (scrubbed)."""
    import hvac.exceptions
    import requests.exceptions

    url = settings.url
    where = f" {path}" if path else ""
    errors = scrub(", ".join(str(e) for e in (getattr(exc, "errors", None) or [])))
    if isinstance(exc, requests.exceptions.SSLError):
        return StoreError(
            f"TLS verification of {url} failed (set ca_cert to the CA that signed the "
            "server's certificate)",
            store=store,
            path=path,
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return StoreUnavailable(
            f"{url} did not answer in time ({action}{where}); raise timeout or check the server",
            store=store,
            path=path,
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return StoreUnavailable(
            f"cannot reach {url} ({action}{where}): connection failed", store=store, path=path
        )
    if login and isinstance(exc, hvac.exceptions.InvalidRequest | hvac.exceptions.Forbidden):
        if settings.auth.method == "token":
            hint = (
                "the token is expired, revoked or wrong, or its policy lacks "
                "auth/token/lookup-self (part of the default policy)"
            )
        else:
            hint = "check the role and its credentials"
        return StoreAuthError(
            f"{action} refused by {url}: {_short(errors) or 'permission denied'} ({hint})",
            store=store,
        )
    if isinstance(exc, hvac.exceptions.Forbidden):
        # name the path that was refused, which may be the metadata next to the data
        refused = str(getattr(exc, "url", "") or "").partition("/v1/")[2].split("?")[0]
        where = f" {refused}" if refused else where
        return StorePermissionError(
            f"permission denied {action}{where} (the policy of this token does not allow it)",
            store=store,
            path=path,
        )
    if isinstance(exc, hvac.exceptions.Unauthorized):
        return StoreAuthError(
            f"{url} refused our credentials ({action}{where})", store=store, path=path
        )
    if isinstance(exc, hvac.exceptions.InvalidPath):
        if "no handler for route" in errors:
            return StoreError(
                f"no secrets engine mounted at {settings.mount.strip('/')}/ on {url} (enable "
                "KV v2 there, or fix the store's mount)",
                store=store,
                path=path,
            )
        return StoreError(f"{action}{where}: not found", store=store, path=path)
    if isinstance(exc, hvac.exceptions.InvalidRequest) and "check-and-set" in errors:
        return StoreConflict(
            f"{path} changed since it was read (compare-and-set lost)", store=store, path=path
        )
    if isinstance(
        exc,
        hvac.exceptions.VaultDown
        | hvac.exceptions.InternalServerError
        | hvac.exceptions.BadGateway
        | hvac.exceptions.RateLimitExceeded
        | hvac.exceptions.VaultNotInitialized,
    ):
        sealed = (
            " (sealed or not initialised)"
            if isinstance(exc, hvac.exceptions.VaultDown | hvac.exceptions.VaultNotInitialized)
            else ""
        )
        return StoreUnavailable(
            f"{url} is not serving ({action}{where}){sealed}: {errors or type(exc).__name__}",
            store=store,
            path=path,
        )
    if isinstance(exc, hvac.exceptions.VaultError):
        return StoreError(
            f"{action}{where} failed: {errors or type(exc).__name__}", store=store, path=path
        )
    return StoreError(f"{action}{where} failed: {type(exc).__name__}", store=store, path=path)
