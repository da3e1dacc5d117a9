"""Prometheus metrics and the health endpoints, on ``server.listen``.

The metrics live in a private ``CollectorRegistry`` (nothing global, so tests
and two daemons in one process never collide). Labels are account names,
results, channel names and alert kinds: never a token, URL or error text.

``/healthz`` answers whether the process and its scheduler are alive,
``/readyz`` whether the configuration is loaded and the stores validated. Both
call a function the daemon supplies and cache the answer for a few seconds
(:class:`CachedProbe`), so an aggressive prober does not hammer Vault.

This module imports prometheus_client; import it only when the server is
configured (``rotator --help`` never pays for it).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from rotator import __version__

if TYPE_CHECKING:
    from rotator.state import AccountState

__all__ = ["CachedProbe", "HealthServer", "Metrics", "Probe"]

_log = structlog.get_logger("rotator.metrics")


class Metrics:
    """Every metric rotator exports, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.access_expiry = Gauge(
            "rotator_access_token_expiry_timestamp_seconds",
            "When the current access token expires (unix time).",
            ["account"],
            registry=r,
        )
        self.refresh_expiry = Gauge(
            "rotator_refresh_token_expiry_timestamp_seconds",
            "When the refresh token (or personal access token) stops working (unix time); "
            "absent when it does not expire.",
            ["account"],
            registry=r,
        )
        self.rotations = Counter(
            "rotator_rotations",
            "Rotations by result (success, failure, skipped, ...).",
            ["account", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "rotator_rotation_duration_seconds",
            "How long one rotation took, vendor call and store writes included.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.last_success = Gauge(
            "rotator_last_success_timestamp_seconds",
            "When the last successful rotation finished (unix time).",
            ["account"],
            registry=r,
        )
        self.ready = Gauge(
            "rotator_account_ready",
            "1 when the account holds a valid access token and is not failing permanently.",
            ["account"],
            registry=r,
        )
        self.alerts_sent = Counter(
            "rotator_alerts_sent",
            "Alerts delivered, by channel and alert kind.",
            ["channel", "kind"],
            registry=r,
        )
        self.build_info = Gauge(
            "rotator_build_info",
            "Always 1; the labels say which rotator runs.",
            ["version", "python"],
            registry=r,
        )
        import platform

        self.build_info.labels(__version__, platform.python_version()).set(1)

    # -- updates --------------------------------------------------------------------

    def observe_rotation(self, account: str, result: str, seconds: float | None) -> None:
        self.rotations.labels(account, result).inc()
        if seconds is not None:
            self.duration.observe(seconds)

    def observe_state(self, state: AccountState, now: datetime) -> None:
        """Expiry, last-success and readiness gauges from an account's state."""
        account = state.account
        if state.expires_at is not None:
            self.access_expiry.labels(account).set(state.expires_at.timestamp())
        else:
            _remove(self.access_expiry, account)
        if state.refresh_expires_at is not None:
            self.refresh_expiry.labels(account).set(state.refresh_expires_at.timestamp())
        else:
            _remove(self.refresh_expiry, account)
        if state.last_success_at is not None:
            self.last_success.labels(account).set(state.last_success_at.timestamp())
        ready = (
            not state.failed
            and state.access_token is not None
            and state.expires_at is not None
            and state.expires_at > now
        )
        self.ready.labels(account).set(1 if ready else 0)

    def alert_sent(self, channel: str, kind: str) -> None:
        self.alerts_sent.labels(channel, kind).inc()

    def forget(self, account: str) -> None:
        """Drop an account's series (it left the configuration on reload)."""
        for gauge in (self.access_expiry, self.refresh_expiry, self.last_success, self.ready):
            _remove(gauge, account)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


# --- health ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    reason: str = ""


class CachedProbe:
    """Call ``check`` at most once per ``ttl`` seconds; a raising check is a failed probe."""

    def __init__(
        self,
        check: Callable[[], Probe],
        *,
        ttl: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._answer: Probe | None = None
        self._at = 0.0

    def __call__(self) -> Probe:
        with self._lock:
            now = self._monotonic()
            if self._answer is None or now - self._at >= self._ttl:
                try:
                    self._answer = self._check()
                except Exception as exc:
                    self._answer = Probe(False, f"probe failed: {type(exc).__name__}")
                self._at = now
            return self._answer


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP in a background thread."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        *,
        healthz: Callable[[], Probe],
        readyz: Callable[[], Probe],
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, metrics.render()),
            "/healthz": lambda: _probe_answer(healthz()),
            "/readyz": lambda: _probe_answer(readyz()),
        }

        class Handler(BaseHTTPRequestHandler):
            server_version = f"rotator/{__version__}"

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, ctype, body = 404, "text/plain", b"not found: try /metrics\n"
                else:
                    status, ctype, body = route()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # probes every few seconds would drown the log

        server_class = _HTTPServer6 if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, int(port)), Handler)
        except OSError as exc:
            from rotator.errors import RotatorError

            raise RotatorError(
                f"server.listen: cannot listen on {listen}: {exc.strerror or exc} "
                "(another process on that port? choose another port)"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rotator-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        _log.info("serving metrics and health", listen="{}:{}".format(*self.address))

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


class _HTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _probe_answer(probe: Probe) -> tuple[int, str, bytes]:
    text = ("ok" if probe.ok else "not ok") + (f": {probe.reason}" if probe.reason else "")
    return (200 if probe.ok else 503), "text/plain; charset=utf-8", (text + "\n").encode()
