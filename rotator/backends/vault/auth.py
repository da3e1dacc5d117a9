"""The Vault store's own login: token, AppRole, Kubernetes; renewal; re-login.

One login is shared by every operation and every worker thread: the token
lives here, guarded by a lock, and is handed to each client call. A background
thread renews it (``auth/token/renew-self``) once two thirds of its TTL have
passed, and logs in again when it cannot be renewed (AppRole, Kubernetes). A
403 on an operation leads to one re-login (for the ``token`` method: the
reference is read again, so a token file rewritten by Vault Agent is picked up)
before the store retries once and reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rotator.backends.vault.client import VaultClient, mapped
from rotator.errors import SecretRefError, StoreAuthError, StoreError
from rotator.secrets import Secret, resolve
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.config.models import VaultStoreSettings

__all__ = ["Token", "VaultLogin"]

_log = logging.getLogger("rotator.backends.vault")

#: renew once this share of the token's TTL has passed
_RENEW_SHARE = 2 / 3
#: a renewal that leaves less than this share of the original TTL means the
#: token is near its max TTL: log in again instead
_RELOGIN_SHARE = 1 / 2
#: the keep-alive thread's pause after a failed renewal
_KEEPALIVE_BACKOFF = 10.0


class Token:
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


class VaultLogin:
    """Owns the token of one store: logs in, renews, keeps it alive, logs in again."""

    def __init__(
        self,
        store: str,
        settings: VaultStoreSettings,
        client: VaultClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        keepalive: bool = True,
    ) -> None:
        self.store = store
        self.settings = settings
        self._client = client
        self._clock = clock
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._token: Token | None = None
        self._generation = 0
        self._waiter = Waiter()
        # wakes the keep-alive thread when a new token brings a new renewal time
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> Token | None:
        """The current token (None before the first login); for status and tests."""
        return self._token

    def current(self) -> Token:
        """The token to use now: logs in first, or renews one that is due."""
        with self._lock:
            token = self._token
            if token is None:
                return self._login()
            if token.renew_at is not None and self._clock() >= token.renew_at:
                return self._renew_locked(token)
            return token

    def after_403(self, seen_generation: int) -> Token:
        """A new login after Vault refused the token of ``seen_generation``."""
        with self._lock:
            if self._token is not None and self._token.generation != seen_generation:
                return self._token  # another thread already logged in again
            return self._login()

    def expires_in(self) -> float | None:
        """Seconds until the current token expires (None: no token yet, or no TTL)."""
        with self._lock:
            if self._token is None or self._token.expires_at is None:
                return None
            return self._token.expires_at - self._clock()

    def close(self) -> None:
        self._waiter.stop()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # -- logging in (lock held) ------------------------------------------------------

    def _login(self) -> Token:
        auth = self.settings.auth
        try:
            if auth.method == "token":
                secret = resolve(auth.token)
                data = self._client.lookup_self(secret)
                ttl, renewable = int(data.get("ttl") or 0), bool(data.get("renewable"))
            else:
                if auth.method == "approle":
                    body = {
                        "role_id": resolve(auth.role_id).reveal(),
                        "secret_id": resolve(auth.secret_id).reveal(),
                    }
                else:
                    body = {"role": auth.role, "jwt": self._service_account_jwt(auth.jwt_path)}
                login = self._client.login(auth.mount, body)
                if not login.get("client_token"):
                    raise StoreAuthError(
                        f"{auth.method} login at auth/{auth.mount} returned no token",
                        store=self.store,
                    )
                secret = Secret(str(login["client_token"]))
                ttl, renewable = int(login.get("lease_duration") or 0), bool(login.get("renewable"))
        except SecretRefError as exc:
            raise StoreAuthError(
                f"cannot read the vault credentials: {exc}", store=self.store
            ) from None
        except StoreError:
            raise
        except Exception as exc:
            raise mapped(
                exc,
                self.settings,
                store=self.store,
                action=f"{auth.method} login",
                path="",
                login=True,
            ) from None
        self._generation += 1
        token = Token(secret, ttl, renewable, self._clock(), self._generation)
        self._token = token
        self._start_keepalive(token)
        return token

    def _service_account_jwt(self, jwt_path: Path) -> str:
        try:
            return str(jwt_path.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise StoreAuthError(
                f"cannot read the Kubernetes service account token {jwt_path}: {exc.strerror} "
                "(is the pod's service account token mounted? set auth.jwt_path)",
                store=self.store,
            ) from None

    def _renew_locked(self, token: Token) -> Token:
        can_relogin = self.settings.auth.method != "token"
        if token.renewable:
            try:
                ttl = int(self._client.renew_self(token.secret).get("lease_duration") or 0)
            except Exception as exc:  # a refused renewal: log in again if we can
                _log.warning(
                    "vault store %s: renewing the token failed (%s)",
                    self.store,
                    type(exc).__name__,
                )
                ttl = -1
            if ttl > 0 and (ttl >= token.ttl * _RELOGIN_SHARE or not can_relogin):
                renewed = Token(token.secret, ttl, True, self._clock(), token.generation)
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
                    self.store,
                    type(exc).__name__,
                    token.expires_at - now,
                )
                return token
        # a token we cannot renew nor replace: keep using it until Vault refuses it
        token.renew_at = None
        _log.warning(
            "vault store %s: the token cannot be renewed; it expires in %.0fs "
            "(use a renewable token, or AppRole / Kubernetes auth)",
            self.store,
            max(0.0, (token.expires_at or 0) - self._clock()),
        )
        return token

    # -- keep-alive --------------------------------------------------------------------

    def _start_keepalive(self, token: Token) -> None:
        if not self._keepalive or token.renew_at is None:
            return
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._keepalive_loop, name=f"vault-keepalive-{self.store}", daemon=True
            )
            self._thread.start()

    def _keepalive_loop(self) -> None:
        while not self._waiter.stopped:
            with self._lock:
                token = self._token
                due = None if token is None else token.renew_at
            wait = None if due is None else max(0.0, due - self._clock())
            # Not a Waiter: this is a timer that a new login moves (it sets _wake),
            # not a backoff; under waits.set_testing a Waiter would return at once and
            # the thread would spin until the renewal time. close() sets _wake too.
            self._wake.wait(timeout=wait)
            self._wake.clear()
            if self._waiter.stopped:
                return
            try:
                self.current()
            except StoreError as exc:
                _log.warning("vault store %s: keeping the token alive failed: %s", self.store, exc)
                self._waiter.sleep(_KEEPALIVE_BACKOFF)
