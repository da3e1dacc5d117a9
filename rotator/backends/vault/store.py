"""The Vault / OpenBao KV v2 store (hvac).

One login is shared by every operation and every worker thread: the token lives
in the store object, guarded by a lock, and is sent per request as a header, so
the one hvac client (and its connection pool) never holds mutable token state.
A background thread renews the token (``auth/token/renew-self``) once two
thirds of its TTL have passed, and logs in again when it cannot be renewed
(AppRole, Kubernetes). A 403 on an operation triggers one re-login (for the
``token`` method: the reference is read again) and one retry before it is
reported, so a revoked or expired token heals itself.

Writes use KV v2 check-and-set on every call (``cas=0`` = create only), carry
the custom metadata ``managed-by: rotator``, refuse a secret without that
marker unless the sink says ``adopt``, and write nothing when the data is
unchanged. hvac and requests errors are mapped once, in :func:`_mapped`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any, ClassVar, TypeVar

from rotator.backends.base import (
    Record,
    Validation,
    ValidationStatus,
    Version,
    WriteResult,
    reason,
    require_json,
)
from rotator.errors import (
    SecretRefError,
    StoreAuthError,
    StoreConflict,
    StoreError,
    StoreNotManaged,
    StorePermissionError,
    StoreUnavailable,
    scrub,
)
from rotator.secrets import Secret, resolve

__all__ = ["MANAGED_BY", "VaultStore"]

MANAGED_BY = ("managed-by", "rotator")
_log = logging.getLogger("rotator.backends.vault")
_T = TypeVar("_T")

#: connections kept per store (one per concurrent worker, up to this many)
_POOL_SIZE = 64
#: renew once this share of the token's TTL has passed
_RENEW_SHARE = 2 / 3
#: a renewal that leaves less than this share of the original TTL means the
#: token is near its max TTL: log in again instead
_RELOGIN_SHARE = 1 / 2
#: what ``_known`` holds for a path that was absent when we read it
_ABSENT = b""


class _Token:
    """The daemon's own Vault token and when to renew it (monotonic seconds)."""

    __slots__ = ("expires_at", "generation", "renew_at", "renewable", "secret", "ttl")

    def __init__(self, secret: Secret, ttl: int, renewable: bool, now: float, generation: int):
        self.secret = secret
        self.ttl = ttl
        self.renewable = renewable
        self.generation = generation
        # ttl 0: a token that never expires (root, or a periodic token read wrongly)
        self.renew_at = now + ttl * _RENEW_SHARE if ttl > 0 else None
        self.expires_at = now + ttl if ttl > 0 else None


class VaultStore:
    """KV v2 paths under ``mount``/``prefix``; versions are KV version numbers (int)."""

    kind: ClassVar[str] = "vault"

    def __init__(
        self,
        name: str,
        settings: Any,
        *,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        keepalive: bool = True,
    ) -> None:
        self.name = name
        self.settings = settings
        self.mount = settings.mount.strip("/")
        self.prefix = settings.prefix.strip("/")
        self._client = client if client is not None else self._default_client()
        self._clock = clock
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self._generation = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # path -> (version, digest of its data) as this process last read or wrote it,
        # for marked (or absent) paths only: a write with that version as
        # expected_version and new data goes straight to the CAS write (the server
        # checks the version), without reading the path again first.
        self._known: dict[str, tuple[int, bytes]] = {}

    def _default_client(self) -> Any:
        import hvac
        import requests
        import requests.adapters

        verify: bool | str = self.settings.verify
        if verify and self.settings.ca_cert is not None:
            verify = str(self.settings.ca_cert)
        elif verify:
            # what requests would take from the environment (trust_env is off below)
            verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            )
        # token="" keeps hvac from picking up $VAULT_TOKEN or ~/.vault-token: the
        # token is sent per request from self._token.
        # every worker thread shares this session: a pool as large as the biggest
        # worker pool (server.workers, 16 by default), so that no
        # connection is opened and dropped per request
        session = requests.Session()
        session.verify = verify  # hvac prefers the session's verify over its own argument
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=_POOL_SIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # requests scans the whole environment for proxy settings on every request
        # (half a millisecond of CPU with ~80 variables); read them once instead.
        session.proxies = dict(requests.utils.get_environ_proxies(self.settings.url))
        session.trust_env = False
        return hvac.Client(
            url=self.settings.url,
            session=session,
            token="",
            verify=verify,
            timeout=self.settings.timeout.total_seconds(),
            namespace=self.settings.namespace,
        )

    # -- paths ---------------------------------------------------------------------

    def _full(self, path: str) -> str:
        pure = PurePosixPath(path.strip("/"))
        if not path.strip("/") or ".." in pure.parts or "." in pure.parts:
            raise StoreError(
                f"path {path!r} must be a relative KV path without '..'",
                store=self.name,
                path=path,
            )
        return f"{self.prefix}/{pure}" if self.prefix else str(pure)

    def _data_path(self, full: str) -> str:
        return f"{self.mount}/data/{full}"

    def _metadata_path(self, full: str) -> str:
        return f"{self.mount}/metadata/{full}"

    # -- HTTP ----------------------------------------------------------------------

    def _request(
        self, method: str, api_path: str, token: Secret | None, json: Any = None
    ) -> dict[str, Any] | None:
        headers = {"X-Vault-Token": token.reveal()} if token is not None else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if json is not None:
            kwargs["json"] = json
        response = self._client.adapter.request(method, f"/v1/{api_path}", **kwargs)
        return response if isinstance(response, dict) else None

    # -- the daemon's own token -------------------------------------------------------

    def _login(self) -> _Token:
        """Log in with the configured method (lock held by the caller)."""
        auth = self.settings.auth
        method = auth.method
        try:
            if method == "token":
                secret = resolve(auth.token)
                answer = self._request("GET", "auth/token/lookup-self", secret)
                data = (answer or {}).get("data") or {}
                ttl, renewable = int(data.get("ttl") or 0), bool(data.get("renewable"))
            else:
                if method == "approle":
                    body = {
                        "role_id": resolve(auth.role_id).reveal(),
                        "secret_id": resolve(auth.secret_id).reveal(),
                    }
                else:
                    body = {"role": auth.role, "jwt": self._service_account_jwt()}
                answer = self._request("POST", f"auth/{auth.mount}/login", None, json=body)
                login = (answer or {}).get("auth") or {}
                if not login.get("client_token"):
                    raise StoreAuthError(
                        f"{method} login at auth/{auth.mount} returned no token", store=self.name
                    )
                secret = Secret(login["client_token"])
                ttl, renewable = int(login.get("lease_duration") or 0), bool(login.get("renewable"))
        except SecretRefError as exc:
            raise StoreAuthError(
                f"cannot read the vault credentials: {exc}", store=self.name
            ) from None
        except StoreError:
            raise
        except Exception as exc:
            raise _mapped(exc, self, action=f"{method} login", path="", login=True) from None
        self._generation += 1
        token = _Token(secret, ttl, renewable, self._clock(), self._generation)
        self._token = token
        self._start_keepalive(token)
        return token

    def _service_account_jwt(self) -> str:
        jwt_path = self.settings.auth.jwt_path
        try:
            return str(jwt_path.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise StoreAuthError(
                f"cannot read the Kubernetes service account token {jwt_path}: {exc.strerror} "
                "(is the pod's service account token mounted? set auth.jwt_path)",
                store=self.name,
            ) from None

    def _current_token(self) -> _Token:
        with self._lock:
            token = self._token
            if token is None:
                return self._login()
            if token.renew_at is not None and self._clock() >= token.renew_at:
                return self._renew_locked(token)
            return token

    def _renew_locked(self, token: _Token) -> _Token:
        can_relogin = self.settings.auth.method != "token"
        if token.renewable:
            try:
                answer = self._request("POST", "auth/token/renew-self", token.secret, json={})
                ttl = int(((answer or {}).get("auth") or {}).get("lease_duration") or 0)
            except Exception as exc:  # a refused renewal: log in again if we can
                _log.warning(
                    "vault store %s: renewing the token failed (%s)",
                    self.name,
                    type(exc).__name__,
                )
                ttl = -1
            if ttl > 0 and (ttl >= token.ttl * _RELOGIN_SHARE or not can_relogin):
                renewed = _Token(token.secret, ttl, True, self._clock(), token.generation)
                renewed.ttl = token.ttl  # keep measuring against the TTL we logged in with
                self._token = renewed
                return renewed
        if can_relogin:
            try:
                return self._login()
            except StoreError as exc:
                now = self._clock()
                if token.expires_at is None or now >= token.expires_at:
                    raise
                # Vault is briefly unreachable: the old token is still good; try again soon
                token.renew_at = now + min(30.0, (token.expires_at - now) / 2)
                _log.warning(
                    "vault store %s: logging in again failed (%s); the current token "
                    "expires in %.0fs",
                    self.name,
                    type(exc).__name__,
                    token.expires_at - now,
                )
                return token
        # a token we cannot renew nor replace: keep using it until Vault refuses it
        token.renew_at = None
        _log.warning(
            "vault store %s: the token cannot be renewed; it expires in %.0fs "
            "(use a renewable token, or AppRole / Kubernetes auth)",
            self.name,
            max(0.0, (token.expires_at or 0) - self._clock()),
        )
        return token

    def _relogin_after_403(self, seen_generation: int) -> _Token:
        with self._lock:
            if self._token is not None and self._token.generation != seen_generation:
                return self._token  # another thread already logged in again
            return self._login()

    def renew_if_due(self) -> None:
        """Renew (or replace) the token if its renewal time has come. Used by the
        keep-alive thread; public so tests drive it with an injected clock."""
        self._current_token()

    def token_expires_in(self) -> float | None:
        """Seconds until the current token expires (None: no token yet, or no TTL)."""
        with self._lock:
            if self._token is None or self._token.expires_at is None:
                return None
            return self._token.expires_at - self._clock()

    def _start_keepalive(self, token: _Token) -> None:
        if not self._keepalive or token.renew_at is None:
            return
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._keepalive_loop, name=f"vault-keepalive-{self.name}", daemon=True
            )
            self._thread.start()

    def _keepalive_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                token = self._token
                due = None if token is None else token.renew_at
            wait = None if due is None else max(0.0, due - self._clock())
            self._wake.wait(timeout=wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.renew_if_due()
            except StoreError as exc:
                _log.warning("vault store %s: keeping the token alive failed: %s", self.name, exc)
                self._stop.wait(10)

    # -- one operation, with one re-login on 403 --------------------------------------

    def _call(self, action: str, path: str, fn: Callable[[Secret], _T]) -> _T:
        token = self._current_token()
        try:
            return fn(token.secret)
        except StoreError:
            raise
        except Exception as exc:
            if not _is_forbidden(exc):
                raise _mapped(exc, self, action=action, path=path) from None
        token = self._relogin_after_403(token.generation)
        try:
            return fn(token.secret)
        except StoreError:
            raise
        except Exception as exc:
            raise _mapped(exc, self, action=action, path=path) from None

    # -- SecretStore -------------------------------------------------------------------

    def _latest(
        self, token: Secret, full: str
    ) -> tuple[dict[str, str] | None, dict[str, Any] | None]:
        """(data of the latest live version, its metadata); (None, metadata) when the
        latest version is deleted or destroyed; (None, None) when nothing is there."""
        import hvac.exceptions

        try:
            answer = self._request("GET", self._data_path(full), token)
        except hvac.exceptions.InvalidPath as exc:
            body = exc.json if isinstance(exc.json, dict) else {}
            errors = " ".join(str(e) for e in (exc.errors or []))
            if "no handler for route" in errors:
                raise
            meta = ((body.get("data") or {}).get("metadata")) or None
            return None, meta if isinstance(meta, dict) else None
        payload = (answer or {}).get("data") or {}
        data = payload.get("data")
        meta = payload.get("metadata")
        if not isinstance(meta, dict):
            meta = None
        if not isinstance(data, dict):
            return None, meta
        return {str(k): v if isinstance(v, str) else _json(v) for k, v in data.items()}, meta

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        require_json(self.name, "a vault sink", fmt, path)
        full = self._full(path)
        data, meta = self._call("reading", self._data_path(full), lambda t: self._latest(t, full))
        if data is None or meta is None:
            if meta is None:  # nothing there at all (not a deleted latest version)
                self._known[full] = (0, _ABSENT)
            else:
                self._known.pop(full, None)
            return None
        self._remember(full, int(meta["version"]), data, meta)
        return Record(data=data, version=int(meta["version"]))

    def _remember(
        self, full: str, version: int, data: Mapping[str, str], meta: Mapping[str, Any]
    ) -> None:
        custom = (meta or {}).get("custom_metadata") or {}
        if custom.get(MANAGED_BY[0]) == MANAGED_BY[1]:
            self._known[full] = (version, _digest(data))
        else:
            self._known.pop(full, None)

    def write(
        self,
        path: str,
        data: Mapping[str, str],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult:
        require_json(self.name, "a vault sink", fmt, path)
        full = self._full(path)
        new = {str(k): str(v) for k, v in data.items()}

        digest = _digest(new)
        known = self._known.get(full)
        fast_cas: int | None = None
        if known is not None and known[1] != digest:
            # We last saw this path (marked, or absent) at the expected version and the
            # data differs: skip the GET; the server's check-and-set guards the version.
            if expected_version is None and known[1] == _ABSENT:
                fast_cas = 0
            elif expected_version is not None and known[0] == _as_int(expected_version):
                fast_cas = known[0]
        if fast_cas is not None:
            cas = fast_cas

            def cas_write(token: Secret) -> WriteResult:
                if cas == 0:
                    # A new path: the marker first, as below. Someone creating the path
                    # since our read makes the data write fail (cas=0), as it would
                    # if they created it between a GET here and this POST.
                    self._request(
                        "POST",
                        self._metadata_path(full),
                        token,
                        json={"custom_metadata": {MANAGED_BY[0]: MANAGED_BY[1]}},
                    )
                answer = self._request(
                    "POST",
                    self._data_path(full),
                    token,
                    json={"options": {"cas": cas}, "data": new},
                )
                return WriteResult(int(((answer or {}).get("data") or {})["version"]), True)

            try:
                result = self._call("writing", self._data_path(full), cas_write)
            except StoreError:
                self._known.pop(full, None)
                raise
            self._known[full] = (int(result.version), digest)
            return result

        def attempt(token: Secret) -> WriteResult:
            current, meta = self._latest(token, full)
            version = int(meta["version"]) if meta else 0
            custom = (meta or {}).get("custom_metadata") or {}
            marked = custom.get(MANAGED_BY[0]) == MANAGED_BY[1]
            if meta is not None and not marked and not adopt:
                raise StoreNotManaged(
                    f"{self.mount}/{full} exists and was not written by rotator (no custom "
                    f"metadata {MANAGED_BY[0]}={MANAGED_BY[1]}); set adopt: true on the sink "
                    "to take it over",
                    store=self.name,
                    path=path,
                )
            if expected_version is None:
                if current is not None and not adopt:
                    raise StoreConflict(
                        f"{self.mount}/{full} already exists (create-only write lost)",
                        store=self.name,
                        path=path,
                    )
            elif current is None or _as_int(expected_version) != version:
                raise StoreConflict(
                    f"{self.mount}/{full} is at version {version}, not {expected_version} "
                    "(compare-and-set lost)",
                    store=self.name,
                    path=path,
                )
            if not marked:
                # before the data: a crash in between leaves a marked path, never an
                # unmarked secret that rotator wrote
                marker = {
                    **{str(k): str(v) for k, v in custom.items()},
                    MANAGED_BY[0]: MANAGED_BY[1],
                }
                self._request(
                    "POST", self._metadata_path(full), token, json={"custom_metadata": marker}
                )
            if current == new:
                self._known[full] = (version, digest)
                return WriteResult(version, changed=False)
            answer = self._request(
                "POST",
                self._data_path(full),
                token,
                json={"options": {"cas": version}, "data": new},
            )
            written = int(((answer or {}).get("data") or {})["version"])
            self._known[full] = (written, digest)
            return WriteResult(written, changed=True)

        try:
            return self._call("writing", self._data_path(full), attempt)
        except StoreError:
            self._known.pop(full, None)
            raise

    def delete(self, path: str) -> None:
        import hvac.exceptions

        full = self._full(path)
        self._known.pop(full, None)

        def attempt(token: Secret) -> None:
            try:
                self._request("DELETE", self._metadata_path(full), token)
            except hvac.exceptions.InvalidPath as exc:
                if "no handler for route" in " ".join(str(e) for e in (exc.errors or [])):
                    raise

        self._call("deleting", self._metadata_path(full), attempt)

    def validate(self, probe_path: str | None = None) -> Validation:
        """READY when we can log in, the mount is KV v2 and the policy allows what
        rotation needs on ``probe_path``; ERROR with the reason otherwise; UNKNOWN
        when the token may not ask Vault about its own capabilities."""
        import hvac.exceptions

        try:
            token = self._current_token()
            try:
                mount = self._request("GET", f"sys/internal/ui/mounts/{self.mount}", token.secret)
            except (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden):
                return Validation(
                    ValidationStatus.ERROR,
                    f"no KV v2 mount {self.mount}/ visible to this token at "
                    f"{self.settings.url} (enable one: bao secrets enable -path={self.mount} "
                    "kv-v2, or fix the store's mount)",
                )
            info = (mount or {}).get("data") or {}
            version = str((info.get("options") or {}).get("version") or "")
            if info.get("type") not in ("kv", "generic") or version != "2":
                return Validation(
                    ValidationStatus.ERROR,
                    f"mount {self.mount}/ is {info.get('type')} version {version or '1'}, "
                    "not KV version 2 (bao kv enable-versioning, or point mount at a KV v2 engine)",
                )
            if probe_path is None:
                return Validation(
                    ValidationStatus.READY,
                    f"logged in ({self.settings.auth.method}); {self.mount}/ is KV v2",
                )
            full = self._full(probe_path)
            data_path, meta_path = self._data_path(full), self._metadata_path(full)
            try:
                answer = self._request(
                    "POST",
                    "sys/capabilities-self",
                    token.secret,
                    json={"paths": [data_path, meta_path]},
                )
            except hvac.exceptions.Forbidden:
                return Validation(
                    ValidationStatus.UNKNOWN,
                    f"logged in, but this token may not read sys/capabilities-self, "
                    f"so the policy on {data_path} was not checked",
                )
        except StoreError as exc:
            return Validation(ValidationStatus.ERROR, reason(exc, self.name))
        except Exception as exc:
            mapped = _mapped(exc, self, action="validating", path="")
            return Validation(ValidationStatus.ERROR, reason(mapped, self.name))
        caps = (answer or {}).get("data") or answer or {}
        data_caps = set(caps.get(data_path) or [])
        meta_caps = set(caps.get(meta_path) or [])
        if "root" in data_caps:
            data_caps |= {"create", "update", "read"}
        if "root" in meta_caps:
            meta_caps |= {"create", "update", "read"}
        lacking_write = sorted({"create", "update"} - data_caps)
        if lacking_write:
            return Validation(
                ValidationStatus.ERROR,
                f"permission denied writing {data_path} "
                f"(the policy lacks {'/'.join(lacking_write)})",
            )
        if "read" not in data_caps:
            return Validation(
                ValidationStatus.ERROR,
                f"permission denied reading {data_path} (the policy lacks read)",
            )
        if not ({"create", "update"} & meta_caps):
            return Validation(
                ValidationStatus.ERROR,
                f"permission denied writing {meta_path} (the policy lacks update; "
                "rotator marks the paths it writes with custom metadata managed-by=rotator)",
            )
        return Validation(
            ValidationStatus.READY,
            f"logged in ({self.settings.auth.method}); may read and write {data_path}",
        )

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        session = getattr(self._client.adapter, "session", None)
        if session is not None:
            session.close()


# -- helpers ---------------------------------------------------------------------------


def _digest(data: Mapping[str, str]) -> bytes:
    return hashlib.blake2b(
        json.dumps(data, sort_keys=True).encode("utf-8"), digest_size=16
    ).digest()


def _json(value: object) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _as_int(version: Version) -> int:
    try:
        return int(version)
    except ValueError:
        return -1


def _short(errors: str) -> str:
    """Vault wraps one error as '1 error occurred: * permission denied'."""
    return re.sub(r"^\d+ errors? occurred:\s*\*\s*", "", errors).strip()


def _is_forbidden(exc: Exception) -> bool:
    import hvac.exceptions

    return isinstance(exc, hvac.exceptions.Forbidden)


def _mapped(
    exc: Exception, store: VaultStore, *, action: str, path: str, login: bool = False
) -> StoreError:
    """The one place hvac / requests errors become typed store errors."""
    import hvac.exceptions
    import requests.exceptions

    url = store.settings.url
    where = f" {path}" if path else ""
    errors = scrub(", ".join(str(e) for e in (getattr(exc, "errors", None) or [])))
    if isinstance(exc, requests.exceptions.SSLError):
        return StoreError(
            f"TLS verification of {url} failed (set ca_cert to the CA that signed the "
            "server's certificate)",
            store=store.name,
            path=path,
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return StoreUnavailable(
            f"{url} did not answer in time ({action}{where}); raise timeout or check the server",
            store=store.name,
            path=path,
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return StoreUnavailable(
            f"cannot reach {url} ({action}{where}): connection failed", store=store.name, path=path
        )
    if login and isinstance(exc, hvac.exceptions.InvalidRequest | hvac.exceptions.Forbidden):
        if store.settings.auth.method == "token":
            hint = (
                "the token is expired, revoked or wrong, or its policy lacks "
                "auth/token/lookup-self (part of the default policy)"
            )
        else:
            hint = "check the role and its credentials"
        return StoreAuthError(
            f"{action} refused by {url}: {_short(errors) or 'permission denied'} ({hint})",
            store=store.name,
        )
    if isinstance(exc, hvac.exceptions.Forbidden):
        # name the path that was refused, which may be the metadata next to the data
        refused = str(getattr(exc, "url", "") or "").partition("/v1/")[2].split("?")[0]
        where = f" {refused}" if refused else where
        return StorePermissionError(
            f"permission denied {action}{where} (the policy of this token does not allow it)",
            store=store.name,
            path=path,
        )
    if isinstance(exc, hvac.exceptions.Unauthorized):
        return StoreAuthError(
            f"{url} refused our credentials ({action}{where})", store=store.name, path=path
        )
    if isinstance(exc, hvac.exceptions.InvalidPath):
        if "no handler for route" in errors:
            return StoreError(
                f"no secrets engine mounted at {store.mount}/ on {url} (enable KV v2 there, "
                "or fix the store's mount)",
                store=store.name,
                path=path,
            )
        return StoreError(f"{action}{where}: not found", store=store.name, path=path)
    if isinstance(exc, hvac.exceptions.InvalidRequest) and "check-and-set" in errors:
        return StoreConflict(
            f"{path} changed since it was read (compare-and-set lost)",
            store=store.name,
            path=path,
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
            store=store.name,
            path=path,
        )
    if isinstance(exc, hvac.exceptions.VaultError):
        return StoreError(
            f"{action}{where} failed: {errors or type(exc).__name__}", store=store.name, path=path
        )
    return StoreError(f"{action}{where} failed: {type(exc).__name__}", store=store.name, path=path)
