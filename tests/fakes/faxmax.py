"""A FaxMAX emulator: JSON-RPC 2.0 at ``POST /api/v1``.

Strict where FaxMAX documents it (and where the tests pin down what it does not):

- the request is the JSON-RPC object in the form field ``data``
  (``application/json`` only with ``accept_json=True``); errors are JSON-RPC
  ``error`` objects sent with HTTP 200, as FaxMAX does;
- ``Core.login`` {username, password} -> {"token": session};
- ``Core.login_token`` {token_, code_}: ``code_`` must be the API code;
  ``token_`` must decrypt with the configured cipher and API password to
  {"username", "exp", "remote_ip"} with ``exp`` not in the past and at most
  3 seconds ahead -> {"token": session};
- ``Core.token_login`` {token_}: a live session is renewed
  (``rotate_sessions`` hands out a new token), a dead one refused.

Time is the emulator's ``clock`` (unix seconds): it judges ``exp`` and stamps
every answer's ``Date`` header, so a clock set apart from the test's is a vendor
whose clock is skewed. ``delays`` holds a method's answer back that many real
seconds (a slow keep-alive); the clock is read after the delay, as a real
server reads it when it handles the call.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from typing import Any

from rotator.providers.faxmax.cipher import decrypt
from tests.fakes.vendorhttp import Reply, Request, VendorServer
from tests.support import leakcheck

__all__ = ["FaxmaxEmulator"]

WRONG_LOGIN = 1001
WRONG_CODE = 1002
BAD_TOKEN = 1003
SESSION_EXPIRED = 1004


class FaxmaxEmulator(VendorServer):
    name = "faxmax"

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        api_code: str = "code-7Q2kfVd9",
        api_password: str = "api-pw-Zt8#mL1q",  # noqa: S107 - the emulated domain's
        cipher: str = "aes-256-cbc",
        session_ttl: float = 3600,
        accept_json: bool = False,
        rotate_sessions: bool = False,
        clock: Callable[[], float] = time.time,
        delays: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.users = dict(users or {"alice@example.com": "fax-Pass-4455"})
        for password in self.users.values():
            leakcheck.register(password, "faxmax password")
        self.api_code = leakcheck.register(api_code, "faxmax api code")
        self.api_password = leakcheck.register(api_password, "faxmax api password")
        self.cipher = cipher
        self.session_ttl = session_ttl
        self.accept_json = accept_json
        self.rotate_sessions = rotate_sessions
        self.clock = clock
        self.delays = dict(delays or {})
        self.sessions: dict[str, tuple[str, float]] = {}  # token -> (user, expiry)
        self.login_tokens: list[dict[str, Any]] = []  # decrypted passwordless payloads

    @property
    def endpoint(self) -> str:
        return self.base_url + "/api/v1"

    @property
    def username(self) -> str:
        return next(iter(self.users))

    def http_date(self) -> str:
        return email.utils.formatdate(self.clock(), usegmt=True)

    def end_sessions(self) -> None:
        with self.lock:
            self.sessions.clear()

    # -- routes -------------------------------------------------------------------------------

    def route(self, request: Request) -> Reply:
        if request.path != "/api/v1" or request.method != "POST":
            return Reply(404, b"not found", "text/plain")
        content_type = request.headers.get("content-type", "")
        raw: str | None = None
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = request.form
            if [name for name, _ in form] == ["data"]:
                raw = form[0][1]
        elif content_type.startswith("application/json") and self.accept_json:
            raw = request.body.decode("utf-8", "replace")
        if raw is None:
            return self._error(None, -32700, "Parse error: expected the form field data")
        try:
            call = json.loads(raw)
        except ValueError:
            return self._error(None, -32700, "Parse error")
        if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or "id" not in call:
            return self._error(None, -32600, "Invalid Request")
        call_id = call["id"]
        params = call.get("params")
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            return self._error(call_id, -32602, "Invalid params")
        method = call.get("method")
        handler = {
            "Core.login": self._login,
            "Core.login_token": self._login_token,
            "Core.token_login": self._token_login,
        }.get(method if isinstance(method, str) else "")
        if handler is None:
            return self._error(call_id, -32601, f"Method not found: {method}")
        delay = self.delays.get(str(method), 0.0)
        if delay:
            time.sleep(delay)  # a slow vendor, on this request's own server thread
        with self.lock:
            return handler(call_id, params)

    def _result(self, call_id: Any, result: Any) -> Reply:
        return Reply(200, {"jsonrpc": "2.0", "result": result, "id": call_id})

    def _error(self, call_id: Any, code: int, message: str) -> Reply:
        return Reply(
            200, {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": call_id}
        )

    def _session(self, user: str) -> str:
        token = self.issue("session")
        self.sessions[token] = (user, self.clock() + self.session_ttl)
        return token

    def _login(self, call_id: Any, params: dict[str, str]) -> Reply:
        if set(params) != {"username", "password"}:
            return self._error(call_id, -32602, "Invalid params: username, password")
        if self.users.get(params["username"]) != params["password"]:
            return self._error(call_id, WRONG_LOGIN, "Wrong username or password")
        return self._result(call_id, {"token": self._session(params["username"])})

    def _login_token(self, call_id: Any, params: dict[str, str]) -> Reply:
        if set(params) != {"token_", "code_"}:
            return self._error(call_id, -32602, "Invalid params: token_, code_")
        if params["code_"] != self.api_code:
            return self._error(call_id, WRONG_CODE, "Wrong API code")
        try:
            payload = json.loads(decrypt(self.cipher, params["token_"], self.api_password))
        except ValueError:
            return self._error(call_id, BAD_TOKEN, "Token cannot be decrypted")
        if not isinstance(payload, dict) or set(payload) != {"username", "exp", "remote_ip"}:
            return self._error(call_id, BAD_TOKEN, "Token must hold username, exp, remote_ip")
        self.login_tokens.append(payload)
        exp = payload["exp"]
        now = self.clock()
        if not isinstance(exp, int) or exp < int(now):
            return self._error(call_id, BAD_TOKEN, "Token expired")
        if exp > now + 3:
            return self._error(call_id, BAD_TOKEN, "Token exp is more than 3 seconds ahead")
        if payload["username"] not in self.users:
            return self._error(call_id, WRONG_LOGIN, "Unknown user")
        return self._result(call_id, {"token": self._session(payload["username"])})

    def _token_login(self, call_id: Any, params: dict[str, str]) -> Reply:
        if set(params) != {"token_"}:
            return self._error(call_id, -32602, "Invalid params: token_")
        entry = self.sessions.get(params["token_"])
        if entry is None or entry[1] <= self.clock():
            self.sessions.pop(params["token_"], None)
            return self._error(call_id, SESSION_EXPIRED, "Session expired")
        user = entry[0]
        if self.rotate_sessions:
            del self.sessions[params["token_"]]
            return self._result(call_id, {"token": self._session(user)})
        self.sessions[params["token_"]] = (user, self.clock() + self.session_ttl)
        return self._result(call_id, {"token": params["token_"]})
