"""Prometheus metrics, and the HTTP handler that serves them with the probes.

The metrics live in a private ``CollectorRegistry`` (nothing global, so tests
and two daemons in one process never collide), with the standard collectors a
default registry has registered on it: ``process_*`` (resident memory, CPU
seconds, open file descriptors; the systemd unit's memory and file-descriptor
advice reads them), ``python_info`` and ``python_gc_*``. Labels are account names, results, channel
names and alert kinds: never a token, URL or error text. Vendor hosts are
labelled by host name (and a port other than the scheme's): no user, path or
query, since URLs can carry secrets.

``/metrics`` is prometheus_client's own exposition handler, subclassed: it
negotiates OpenMetrics through ``Accept``, gzips when asked, filters with
``name[]``; the subclass adds ``HEAD`` and routes ``/healthz`` and ``/readyz``
to the probes of :mod:`rotator.service.health`.

This module imports prometheus_client; import it only when the server is
configured (``rotator --help`` never pays for it).
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from rotator import __version__
from rotator.politeness import WAIT_BUCKETS
from rotator.service.health import Probe, probe_answer
from rotator.tokens import format_time

if TYPE_CHECKING:
    from rotator.politeness import Politeness
    from rotator.state import AccountState

__all__ = ["RELOGIN_AT", "Metrics", "exposition_handler"]

#: the ``extra`` key of a password re-login (rotator.providers.bifit.RELOGIN_AT; not
#: imported from there, so a daemon without BIFIT accounts never loads that module)
RELOGIN_AT = "relogin_at"


class Metrics:
    """Every metric rotator exports, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_open_fds, ...
        PlatformCollector(registry=r)  # python_info
        GCCollector(registry=r)  # python_gc_objects_collected_total, ...
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
        self.relogins = Counter(
            "rotator_password_relogins",
            "Refused refresh tokens replaced by a password login (BIFIT): above 0, the "
            "refresh grant does not work for the account.",
            ["account"],
            registry=r,
        )
        #: account -> the re-login last counted (a state is observed after its rotation
        #: and again by every sweep; each re-login counts once)
        self._relogins_counted: dict[str, str] = {}
        #: accounts with a refresh-expiry series: a state without a refresh expiry (client
        #: credentials: every rotation) removes one only then, not by a remove that takes
        #: the metric's lock, reads the environment twice and raises KeyError
        self._refresh_expiring: set[str] = set()
        self._relogins_lock = threading.Lock()
        self.alerts_sent = Counter(
            "rotator_alerts_sent",
            "Alerts delivered, by channel and alert kind.",
            ["channel", "kind"],
            registry=r,
        )
        self.notify = Counter(
            "rotator_notify",
            "Consumer notifications by account, entry type (exec, webhook), event and outcome "
            "(delivered, failed, dropped, claimed_elsewhere).",
            ["account", "type", "event", "outcome"],
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
            self._refresh_expiring.add(account)
        elif account in self._refresh_expiring:
            self._refresh_expiring.discard(account)
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
        self._count_relogin(state)

    def _count_relogin(self, state: AccountState) -> None:
        # the token in hand came from a re-login when the marker is its issue time
        relogin = state.extra.get(RELOGIN_AT, "")
        if not relogin or state.issued_at is None or relogin != format_time(state.issued_at):
            # an ordinary refresh since: the next re-login is a new one (no lock when
            # nothing is to forget, as for nearly every rotation: the test is atomic)
            if not relogin and state.account in self._relogins_counted:
                with self._relogins_lock:
                    self._relogins_counted.pop(state.account, None)
            return
        with self._relogins_lock:
            if self._relogins_counted.get(state.account) == relogin:
                return
            self._relogins_counted[state.account] = relogin
        self.relogins.labels(state.account).inc()

    def alert_sent(self, channel: str, kind: str) -> None:
        self.alerts_sent.labels(channel, kind).inc()

    def notified(self, account: str, kind: str, event: str, outcome: str) -> None:
        self.notify.labels(account, kind, event, outcome).inc()

    def forget(self, account: str) -> None:
        """Drop an account's series (it left the configuration on reload)."""
        for gauge in (self.access_expiry, self.refresh_expiry, self.last_success, self.ready):
            _remove(gauge, account)
        _remove(self.relogins, account)
        self._refresh_expiring.discard(account)
        with self._relogins_lock:
            self._relogins_counted.pop(account, None)

    def watch_vendors(self, politeness: Politeness) -> None:
        """Export each vendor host's requests, limiter waits and pause, read at scrape."""
        self.registry.register(_VendorCollector(politeness))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


class _VendorCollector(Collector):
    """``rotator_vendor_*`` from :meth:`Politeness.stats` (no lock taken per request)."""

    def __init__(self, politeness: Politeness) -> None:
        self._politeness = politeness

    def describe(self) -> list[Metric]:
        return []  # unchecked: the series come and go with the hosts

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "rotator_vendor_requests",
            "Calls to vendor hosts by status class (2xx..5xx, error: no answer).",
            labels=["host", "class"],
        )
        waits = HistogramMetricFamily(
            "rotator_vendor_limiter_wait_seconds",
            "Time a call or a deferred job waited for its host's limiter (rate, "
            "concurrency, a pause the vendor asked for).",
            labels=["host"],
        )
        pause = GaugeMetricFamily(
            "rotator_vendor_pause_seconds",
            "Seconds until the host takes calls again (a 429/503 pause); 0 when open.",
            labels=["host"],
        )
        deferred = CounterMetricFamily(
            "rotator_vendor_deferred_jobs",
            "Jobs deferred because their host was paused.",
            labels=["host"],
        )
        for host in self._politeness.stats():
            for kind, count in sorted(host.requests.items()):
                requests.add_metric([host.label, kind], count)
            bounds = [str(b) for b in WAIT_BUCKETS]
            buckets = [*zip(bounds, host.wait_buckets, strict=True), ("+Inf", host.wait_count)]
            waits.add_metric([host.label], buckets, host.wait_sum)
            pause.add_metric([host.label], host.paused_for)
            deferred.add_metric([host.label], host.deferred)
        yield from (requests, waits, pause, deferred)


class _Discard(io.BufferedIOBase):
    """Where a HEAD answer's body goes."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


class Pages(Protocol):
    """The hook for paths the server does not own (the console).

    ``(method, path, query, headers, body, peer=) -> (status, headers, body)``, or None
    when the path is not the hook's either; ``peer`` is the client's address (the status
    page answers loopback clients only while no viewer token is configured).
    """

    def __call__(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        /,
        *,
        peer: str,
    ) -> tuple[int, dict[str, str], bytes] | None: ...


#: a request body larger than this is no form of ours
_MAX_BODY = 64 * 1024


def exposition_handler(
    metrics: Metrics,
    probes: Mapping[str, Callable[[], Probe]],
    pages: Pages | None = None,
) -> type[BaseHTTPRequestHandler]:
    """The request handler for ``server.listen``: ``/metrics``, the ``probes`` by path,
    and every other path offered to ``pages`` (the console) before a 404."""

    class Handler(MetricsHandler):
        registry = metrics.registry
        server_version = f"rotator/{__version__}"
        _head_only = False

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                super().do_GET()
                return
            probe = probes.get(path)
            if probe is not None:
                self._send(*probe_answer(probe()))
            elif not self._offer(self.command, b""):
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length", "0")
            if not length.isdigit() or int(length) > _MAX_BODY:
                self._send(413, b"request body too large\n")
                return
            body = self._read_body(int(length))
            if body is None or not self._offer("POST", body):
                self._send(404 if body is not None else 400, b"not found\n")

        def _read_body(self, length: int) -> bytes | None:
            # the head reader already took what arrived with the head; read the rest here
            data = self.rfile.read(length)
            while len(data) < length:
                chunk = self.connection.recv(min(65536, length - len(data)))
                if not chunk:
                    return None
                data += chunk
            return data

        def _offer(self, method: str, body: bytes) -> bool:
            if pages is None:
                return False
            split = urlsplit(self.path)
            headers = dict(self.headers.items())
            peer = str(self.client_address[0])
            answer = pages(method, split.path, split.query, headers, body, peer=peer)
            if answer is None:
                return False
            status, headers, content = answer
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            return True

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            # The GET answer's status and headers, without its body.
            self._head_only = True
            self.do_GET()

        def end_headers(self) -> None:
            super().end_headers()
            if self._head_only:
                self.wfile = _Discard()

        def log_message(self, format: str, *args: Any) -> None:
            return None  # probes every few seconds would drown the log

    return Handler
