"""Metrics and their exposition: names, labels, no secret, and prometheus_client's protocol."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from rotator import __version__
from rotator.secrets import Secret
from rotator.service.health import CachedProbe, HealthServer, Probe
from rotator.service.metrics import Metrics, exposition_handler
from rotator.state import AccountState
from tests.support import leakcheck

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def serve(
    metrics: Metrics, *, healthz: object = None, readyz: object = None, listen: str = "127.0.0.1:0"
) -> HealthServer:
    ok = lambda: Probe(True)  # noqa: E731
    probes = {"/healthz": healthz or ok, "/readyz": readyz or ok}
    return HealthServer(listen, exposition_handler(metrics, probes))  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class Health:
    def __init__(self) -> None:
        self.alive = Probe(True, "scheduler running")
        self.ready = Probe(False, "stores not validated yet")
        self.calls = 0

    def healthz(self) -> Probe:
        self.calls += 1
        return self.alive


@pytest.fixture
def served() -> Iterator[tuple[Metrics, Health, str]]:
    metrics = Metrics()
    health = Health()
    server = serve(
        metrics,
        healthz=CachedProbe(health.healthz, ttl=0),
        readyz=CachedProbe(lambda: health.ready, ttl=0),
    )
    server.start()
    host, port = server.address
    yield metrics, health, f"http://{host}:{port}"
    server.stop()


def test_metrics_scraped_and_parsed(served: tuple[Metrics, Health, str]) -> None:
    metrics, _, base = served
    access = leakcheck.register("access-token-metrics-test-1", "access token")
    refresh = leakcheck.register("refresh-token-metrics-test-1", "refresh token")
    state = AccountState(
        account="acme-fax",
        provider="faxplus",
        access_token=Secret(access),
        issued_at=T0,
        expires_at=T0 + timedelta(hours=1),
        refresh_token=Secret(refresh),
        refresh_expires_at=T0 + timedelta(days=30),
        last_success_at=T0,
    )
    metrics.observe_state(state, T0)
    metrics.observe_rotation("acme-fax", "success", 0.3)
    metrics.observe_rotation("acme-fax", "failure", 1.5)
    metrics.observe_rotation("acme-fax", "success", None)
    metrics.alert_sent("webhook", "refresh_token_expiry")
    pat = AccountState(
        account="pat",
        provider="faxplus-pat",
        access_token=Secret(access),
        issued_at=T0,
        expires_at=T0 + timedelta(hours=1),
        refresh_expires_at=T0 + timedelta(days=5),
        failed=True,
    )
    metrics.observe_state(pat, T0)

    status, text = get(f"{base}/metrics")
    assert status == 200
    assert access not in text and refresh not in text
    got = samples(text)
    acme = (("account", "acme-fax"),)
    assert (
        got[("rotator_access_token_expiry_timestamp_seconds", acme)]
        == (T0 + timedelta(hours=1)).timestamp()
    )
    assert (
        got[("rotator_refresh_token_expiry_timestamp_seconds", acme)]
        == (T0 + timedelta(days=30)).timestamp()
    )
    assert got[("rotator_last_success_timestamp_seconds", acme)] == T0.timestamp()
    assert got[("rotator_account_ready", acme)] == 1
    assert got[("rotator_rotations_total", (("account", "acme-fax"), ("result", "success")))] == 2
    assert got[("rotator_rotations_total", (("account", "acme-fax"), ("result", "failure")))] == 1
    assert got[("rotator_rotation_duration_seconds_count", ())] == 2
    assert got[("rotator_rotation_duration_seconds_sum", ())] == pytest.approx(1.8)
    assert got[("rotator_rotation_duration_seconds_bucket", (("le", "0.5"),))] == 1
    assert (
        got[
            (
                "rotator_alerts_sent_total",
                (("channel", "webhook"), ("kind", "refresh_token_expiry")),
            )
        ]
        == 1
    )
    info = [k for k in got if k[0] == "rotator_build_info"]
    assert len(info) == 1 and ("version", __version__) in info[0][1]
    # a personal access token's expiry date is the end of the grant
    assert (
        got[("rotator_refresh_token_expiry_timestamp_seconds", (("account", "pat"),))]
        == (T0 + timedelta(days=5)).timestamp()
    )
    assert got[("rotator_account_ready", (("account", "pat"),))] == 0

    # an expired token is not ready; a removed account leaves no series behind
    metrics.observe_state(state, T0 + timedelta(hours=2))
    metrics.forget("pat")
    got = samples(get(f"{base}/metrics")[1])
    assert got[("rotator_account_ready", acme)] == 0
    assert not [k for k in got if ("account", "pat") in k[1]]


def test_health_and_readiness(served: tuple[Metrics, Health, str]) -> None:
    _, health, base = served
    assert get(f"{base}/healthz") == (200, "ok: scheduler running\n")
    assert get(f"{base}/readyz") == (503, "not ok: stores not validated yet\n")
    health.ready = Probe(True)
    assert get(f"{base}/readyz") == (200, "ok\n")
    health.alive = Probe(False, "scheduler stopped")
    assert get(f"{base}/healthz") == (503, "not ok: scheduler stopped\n")
    assert get(f"{base}/nope")[0] == 404


def test_probe_answers_are_cached() -> None:
    now = [100.0]
    calls: list[int] = []

    def check() -> Probe:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return Probe(True)

    probe = CachedProbe(check, ttl=5, monotonic=lambda: now[0])
    assert probe().ok and probe().ok and len(calls) == 1
    now[0] += 5
    assert probe().ok and len(calls) == 2
    now[0] += 5
    assert probe() == Probe(False, "probe failed: RuntimeError")


def test_a_taken_port_is_a_clear_error(served: tuple[Metrics, Health, str]) -> None:
    from rotator.errors import RotatorError

    _, _, base = served
    taken = base.removeprefix("http://")
    with pytest.raises(RotatorError, match=f"server.listen: cannot listen on {taken}"):
        serve(Metrics(), listen=taken)


def test_serves_on_ipv6_loopback() -> None:
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this environment")
    try:
        server = serve(Metrics(), listen="[::1]:0")
    except Exception as exc:  # an IPv6-less container
        pytest.skip(f"cannot bind ::1: {exc}")
    server.start()
    try:
        port = server.address[1]
        assert get(f"http://[::1]:{port}/healthz") == (200, "ok\n")
    finally:
        server.stop()


def test_the_exposition_is_prometheus_clients_own(
    served: tuple[Metrics, Health, str],
) -> None:
    """Content negotiation, gzip, ``name[]`` filtering and HEAD, as Prometheus scrapes."""
    metrics, _, base = served
    metrics.observe_rotation("acme-fax", "success", 0.3)
    # the classic text format by default
    status, headers, body = request(f"{base}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    # the process is described too (a private registry once hid process_* metrics)
    for name in ("process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert f"\n{name}" in text, name
    # OpenMetrics when the scraper asks for it
    status, headers, body = request(
        f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")
    # gzip when accepted
    status, headers, body = request(f"{base}/metrics", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert "rotator_rotations_total" in gzip.decompress(body).decode()
    # name[] filters
    status, _, body = request(f"{base}/metrics?name[]=rotator_rotations_total")
    names = {s[0] for s in samples(body.decode())}
    assert names == {"rotator_rotations_total"}
    # HEAD answers GET's status and headers without a body, on every route
    for path, code in (("/metrics", 200), ("/healthz", 200), ("/readyz", 503), ("/x", 404)):
        status, headers, body = request(f"{base}{path}", method="HEAD")
        assert (status, body) == (code, b""), path
        assert headers["Content-Type"].startswith("text/plain"), path


def test_every_metric_name_and_label_is_kept() -> None:
    """Dashboards and alert rules depend on these names and labels."""
    metrics = Metrics()
    described = {
        family.name: {label for sample in family.samples for label in sample.labels}
        for family in metrics.registry.collect()
    }
    metrics.observe_rotation("a", "success", 0.1)
    metrics.alert_sent("c", "dead")
    metrics.observe_state(
        AccountState(
            account="a",
            provider="oauth2",
            access_token=Secret(leakcheck.register("names-test-access-token", "access token")),
            expires_at=T0 + timedelta(hours=1),
            refresh_expires_at=T0 + timedelta(days=1),
            last_success_at=T0,
        ),
        T0,
    )
    labelled = {
        family.name: {label for sample in family.samples for label in sample.labels}
        for family in metrics.registry.collect()
    }
    expected = {
        "rotator_access_token_expiry_timestamp_seconds": {"account"},
        "rotator_refresh_token_expiry_timestamp_seconds": {"account"},
        "rotator_rotations": {"account", "result"},
        "rotator_rotation_duration_seconds": {"le"},
        "rotator_last_success_timestamp_seconds": {"account"},
        "rotator_account_ready": {"account"},
        "rotator_alerts_sent": {"channel", "kind"},
        "rotator_build_info": {"version", "python"},
    }
    for name, labels in expected.items():
        assert labelled[name] == labels, name
    assert "rotator_build_info" in described


def test_vendor_hosts_are_exported_by_host_name_only() -> None:
    """Requests by status class, limiter waits and the current pause of each vendor host;
    the label is the host (and a port other than the scheme's), never a user, path or query."""
    from rotator.politeness import Politeness

    politeness = Politeness()
    metrics = Metrics()
    metrics.watch_vendors(politeness)
    secret = leakcheck.register("metrics-url-secret-value", "refresh token")
    url = f"https://user:{secret}@idp.example/oauth/token?refresh_token={secret}"
    for status, retry_after in ((200, None), (200, None), (400, None), (None, None)):
        politeness.release(politeness.acquire(url, budget=1), status, retry_after)
    politeness.release(politeness.acquire("http://127.0.0.1:8080/t", budget=1), 429, "60")
    text = metrics.render().decode()
    assert secret not in text and "oauth" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {
        (s.labels["host"], s.labels["class"]): s.value
        for s in families["rotator_vendor_requests"].samples
    }
    assert requests == {
        ("idp.example", "2xx"): 2,
        ("idp.example", "4xx"): 1,
        ("idp.example", "error"): 1,
        ("127.0.0.1:8080", "4xx"): 1,
    }
    waits = families["rotator_vendor_limiter_wait_seconds"].samples
    counts = {s.labels["host"]: s.value for s in waits if s.name.endswith("_count")}
    assert counts == {"idp.example": 4, "127.0.0.1:8080": 1}
    pause = {s.labels["host"]: s.value for s in families["rotator_vendor_pause_seconds"].samples}
    assert pause["idp.example"] == 0 and 59 < pause["127.0.0.1:8080"] <= 60
    assert "rotator_vendor_deferred_jobs" in families


def test_a_running_daemon_serves_the_process_and_python_families(tmp_path: Path) -> None:
    """A real ``rotator run``: the standard families a default registry has, on /metrics.

    The private registry once left them out; the unit's memory and descriptor advice,
    and every dashboard built on node-style process metrics, read them.
    """
    from tests.fakes.oauth2 import emulator
    from tests.support.net import free_port
    from tests.support.proc import DaemonProcess

    secret = leakcheck.register("metrics-proc-client-secret-7a3e", "client secret")
    webhook = leakcheck.register("http://127.0.0.1:9/hook/metrics-proc-c0ffee", "webhook URL")
    listen = f"127.0.0.1:{free_port()}"
    with emulator(clients={"svc": secret}) as vendor:
        config = tmp_path / "rotator.yaml"
        config.write_text(
            f"server: {{listen: '{listen}', spool_dir: {tmp_path / 'spool'}}}\n"
            f"stores: {{files: {{type: file, directory: {tmp_path / 'store'}}}}}\n"
            "alerts:\n"
            "  channels:\n"
            "    - {type: webhook, url: env:METRICS_HOOK}\n"
            "    - {type: webhook, url: env:METRICS_HOOK, format: slack}\n"
            "accounts:\n"
            "  svc-api:\n"
            "    provider: oauth2\n"
            f"    token_url: {vendor.url}\n"
            "    grant: client_credentials\n"
            "    client_id: svc\n"
            "    client_secret: env:METRICS_SECRET\n"
            "    sinks: [{store: files, path: svc.json}]\n",
            encoding="utf-8",
        )
        env = {"METRICS_SECRET": secret, "METRICS_HOOK": webhook}
        with DaemonProcess(config, env=env) as daemon:
            daemon.wait_log('"outcome": "success"')
            status, text = get(f"http://{listen}/metrics")
            daemon.stop()
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_cpu_seconds",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_objects_collected",
        "python_gc_collections",
        "rotator_rotations",
        "rotator_build_info",
    ):
        assert name in families, name
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_open_fds"].samples[0].value > 0
    # no secret anywhere: not in a label, not in a value, not in a help text
    for value in (secret, webhook, "metrics-proc-c0ffee"):
        assert value not in text
    labels = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert "svc-api" in labels


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.booleans() | st.none()), max_size=12))
def test_the_refresh_expiry_series_follows_the_last_state_and_forget(
    steps: list[tuple[str, bool | None]],
) -> None:
    """Whatever the order of states with and without a refresh expiry (None: the account
    is forgotten), each account's series is there exactly when its last state had one."""
    metrics = Metrics()
    expected: dict[str, float] = {}
    for account, refresh in steps:
        if refresh is None:
            metrics.forget(account)
            expected.pop(account, None)
            continue
        until = T0 + timedelta(days=len(expected) + 1) if refresh else None
        metrics.observe_state(AccountState(account, refresh_expires_at=until), T0)
        if until is not None:
            expected[account] = until.timestamp()
        else:
            expected.pop(account, None)
    for account in ("a", "b"):
        value = metrics.registry.get_sample_value(
            "rotator_refresh_token_expiry_timestamp_seconds", {"account": account}
        )
        assert value == expected.get(account), (account, steps)
