from __future__ import annotations

import email
import email.policy
import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rotator.alert_channels import (
    AlertChannelError,
    CommandAlertChannel,
    EmailAlertChannel,
    WebhookAlertChannel,
    build_channels,
)
from rotator.alerts import (
    Alert,
    Dispatcher,
    Kind,
    MemoryAlertMemory,
    Sent,
    Severity,
    StoreAlertMemory,
    alert_record_path,
    evaluate,
    human_duration,
)
from rotator.backends.file import FileStore
from rotator.config import (
    AccountSettings,
    AlertsSettings,
    CommandChannel,
    EmailChannel,
    FileStoreSettings,
    Sink,
    WebhookChannel,
)
from rotator.secrets import Secret
from rotator.state import AccountState
from tests import leakcheck

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
ALERTS = AlertsSettings()  # warn at 7d, 3d, 1d; repeat 24h; 3 failures


def settings(provider: str = "oauth2", **kw: Any) -> AccountSettings:
    return AccountSettings(provider=provider, sinks=[Sink(store="files", path="x.json")], **kw)


def state(**kw: Any) -> AccountState:
    base: dict[str, Any] = {
        "account": "acme-fax",
        "provider": "faxplus",
        "access_token": Secret("at-not-secret-in-tests"),
        "issued_at": T0,
        "expires_at": T0 + timedelta(hours=1),
        "refresh_token": Secret("rt-not-secret-in-tests"),
        "next_refresh_at": T0 + timedelta(minutes=40),
    }
    base.update(kw)
    return AccountState(**base)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class Recorder:
    """A channel that keeps what it was given (the channels themselves are tested below)."""

    def __init__(self, name: str = "recorder", fail: int = 0) -> None:
        self.name = name
        self.fail = fail
        self.got: list[Alert] = []

    def send(self, alert: Alert) -> None:
        if self.fail:
            self.fail -= 1
            raise AlertChannelError("refused on purpose")
        self.got.append(alert)


# --- evaluation ---------------------------------------------------------------------


def test_no_condition_for_a_healthy_account() -> None:
    assert evaluate(state(refresh_expires_at=T0 + timedelta(days=20)), settings(), ALERTS, T0) == []
    assert evaluate(state(), settings(), ALERTS, T0) == []  # refresh token never expires


@pytest.mark.parametrize(
    ("left", "level", "severity", "told"),
    [
        (timedelta(days=7), 1, Severity.WARNING, "expires in 7 days"),
        (timedelta(days=3), 2, Severity.WARNING, "expires in 3 days"),
        (timedelta(hours=30), 2, Severity.WARNING, "expires in 30 hours"),
        (timedelta(hours=23), 3, Severity.CRITICAL, "expires in 23 hours"),
        (timedelta(hours=-2), 4, Severity.CRITICAL, "expired 2 hours ago"),
    ],
)
def test_refresh_token_thresholds(
    left: timedelta, level: int, severity: Severity, told: str
) -> None:
    end = T0 + left
    [cond] = evaluate(state(refresh_expires_at=end), settings(), ALERTS, T0)
    assert (cond.kind, cond.level, cond.severity) == (Kind.REFRESH_TOKEN_EXPIRY, level, severity)
    stamp = end.strftime("%Y-%m-%d %H:%M UTC")
    assert cond.summary == (
        f"refresh token of acme-fax {told} ({stamp}); re-authorize with: rotator authorize acme-fax"
    )
    assert cond.action == "rotator authorize acme-fax"


def test_account_overrides_thresholds() -> None:
    own = settings(refresh_token_warn=[timedelta(days=14)])
    [cond] = evaluate(state(refresh_expires_at=T0 + timedelta(days=10)), own, ALERTS, T0)
    assert (cond.level, cond.severity) == (1, Severity.CRITICAL)  # the only threshold is the last


def test_personal_access_token_expiry_says_replace_it() -> None:
    # as faxplus-pat records it: the published copy lives max_lifetime, the grant to its date
    pat = state(
        provider="faxplus-pat",
        refresh_token=None,
        expires_at=T0 + timedelta(hours=1),
        refresh_expires_at=T0 + timedelta(days=2),
    )
    [cond] = evaluate(pat, settings("faxplus-pat"), ALERTS, T0)
    assert cond.kind is Kind.TOKEN_EXPIRY
    assert cond.summary == (
        "personal access token of acme-fax expires in 2 days (2026-11-03 10:00 UTC); "
        "replace the token: create a new personal access token, put it where "
        "accounts.acme-fax.token points, set accounts.acme-fax.expires_at and reload rotator"
    )
    # an hour-long published copy is no reason to alert
    assert (
        evaluate(
            replace(pat, refresh_expires_at=T0 + timedelta(days=90)),
            settings("faxplus-pat"),
            ALERTS,
            T0,
        )
        == []
    )


def test_failures_reach_the_threshold() -> None:
    assert evaluate(state(consecutive_failures=2), settings(), ALERTS, T0) == []
    [cond] = evaluate(
        state(consecutive_failures=3, last_error="vendor answered HTTP 503"), settings(), ALERTS, T0
    )
    assert (cond.kind, cond.severity) == (Kind.FAILURES, Severity.WARNING)
    assert "3 rotations of acme-fax failed in a row (last error: vendor answered HTTP 503)" in (
        cond.summary
    )
    assert "rotator refresh acme-fax" in cond.summary


def test_dead_grant_is_critical_and_says_authorize_or_import() -> None:
    dead = state(
        failed=True,
        consecutive_failures=5,
        last_error="invalid_grant: token revoked",
        last_error_code="invalid_grant",
    )
    [cond] = evaluate(dead, settings(), ALERTS, T0)
    assert (cond.kind, cond.severity) == (Kind.DEAD, Severity.CRITICAL)
    assert "rotator authorize acme-fax" in cond.summary
    assert "rotator import acme-fax" in cond.summary
    bad_client = replace(dead, last_error_code="invalid_client")
    [cond] = evaluate(bad_client, settings(), ALERTS, T0)
    assert "fix the client credentials of acme-fax" in cond.summary
    [cond] = evaluate(replace(dead, last_error_code="secret_ref"), settings(), ALERTS, T0)
    assert cond.action == "fix the secret reference named in the error, then reload rotator"
    [cond] = evaluate(replace(dead, last_error_code="http_400"), settings(), ALERTS, T0)
    assert cond.action == "fix the cause, then: rotator refresh acme-fax"


def test_access_token_lapsing_before_the_next_attempt() -> None:
    late = state(expires_at=T0 + timedelta(minutes=10), next_refresh_at=T0 + timedelta(minutes=30))
    [cond] = evaluate(late, settings(), ALERTS, T0)
    assert (cond.kind, cond.level, cond.severity) == (Kind.LAPSE, 1, Severity.WARNING)
    [cond] = evaluate(late, settings(), ALERTS, T0 + timedelta(minutes=11))
    assert (cond.level, cond.severity) == (2, Severity.CRITICAL)


def test_human_duration() -> None:
    assert human_duration(timedelta(days=2, hours=23)) == "3 days"
    assert human_duration(timedelta(hours=47)) == "47 hours"
    assert human_duration(timedelta(minutes=61)) == "61 minutes"
    assert human_duration(timedelta(seconds=1)) == "1 second"
    assert human_duration(timedelta(days=2, seconds=-1)) == "2 days"
    assert human_duration(timedelta(hours=2, seconds=-1)) == "2 hours"


# --- dispatch against a real store -----------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore("files", FileStoreSettings(type="file", directory=tmp_path / "state"))


def dispatcher(store: FileStore, clock: Clock, *channels: Any) -> Dispatcher:
    return Dispatcher(
        alerts=ALERTS,
        channels=list(channels),
        memory=StoreAlertMemory(lambda account: store),
        clock=clock,
        sleep=lambda seconds: None,
    )


def test_each_threshold_fires_once_repeats_resolves_and_survives_restart(
    store: FileStore,
) -> None:
    clock = Clock(T0)
    end = T0 + timedelta(days=10)
    st = state(refresh_expires_at=end)
    rec = Recorder()
    d = dispatcher(store, clock, rec)

    def sweep(hours: float) -> list[Alert]:
        """Check every hour for `hours` hours; return what was sent."""
        out: list[Alert] = []
        for _ in range(int(hours)):
            out += d.check(st, settings())
            clock.advance(hours=1)
        return out

    assert sweep(72) == []  # 10 days .. 7 days left: quiet
    crossing_7d = sweep(1)
    assert [a.summary.split(";")[0] for a in crossing_7d] == [
        "refresh token of acme-fax expires in 7 days (2026-11-11 10:00 UTC)"
    ]
    assert crossing_7d[0].severity is Severity.WARNING and not crossing_7d[0].repeat
    # the next 23 hourly checks are quiet, the 24th is the daily reminder
    assert sweep(23) == []
    [reminder] = sweep(1)
    assert reminder.repeat and reminder.kind is Kind.REFRESH_TOKEN_EXPIRY

    # restart: a new dispatcher over the same store sends nothing already sent
    d = dispatcher(store, clock, rec)
    assert sweep(23) == []
    sent = sweep(49)  # two more daily reminders, then the 3-day threshold
    assert [(a.repeat, a.summary.split(" (")[0]) for a in sent] == [
        (True, "refresh token of acme-fax expires in 5 days"),
        (True, "refresh token of acme-fax expires in 4 days"),
        (False, "refresh token of acme-fax expires in 3 days"),
    ]
    clock.now = end - timedelta(days=1)
    [last] = d.check(st, settings())
    assert (last.severity, last.repeat) == (Severity.CRITICAL, False)
    assert d.check(st, settings()) == []

    # re-authorized: a new refresh token with a far expiry resolves the alert once
    st = replace(st, refresh_expires_at=clock.now + timedelta(days=30))
    [resolved] = d.check(st, settings())
    assert (resolved.status, resolved.kind, resolved.severity) == (
        "resolved",
        Kind.REFRESH_TOKEN_EXPIRY,
        Severity.INFO,
    )
    assert resolved.since == T0 + timedelta(days=3)
    assert d.check(st, settings()) == []
    assert dispatcher(store, clock, rec).check(st, settings()) == []
    assert len(rec.got) == 7  # 7d, three reminders, 3d, 1d, resolved
    record = store.read(alert_record_path("acme-fax"))
    assert record is not None and set(record.data) == {"format"}


def test_thresholds_fire_exactly_once_each_over_a_month(store: FileStore) -> None:
    clock = Clock(T0)
    st = state(refresh_expires_at=T0 + timedelta(days=30))
    rec = Recorder()
    d = Dispatcher(
        alerts=AlertsSettings(repeat=timedelta(days=60)),
        channels=[rec],
        memory=StoreAlertMemory(lambda a: store),
        clock=clock,
        sleep=lambda s: None,
    )
    while clock.now < T0 + timedelta(days=31):
        d.check(st, settings())
        clock.advance(minutes=15)
    assert [(a.severity, a.summary.split(";")[0].split(" (")[0]) for a in rec.got] == [
        (Severity.WARNING, "refresh token of acme-fax expires in 7 days"),
        (Severity.WARNING, "refresh token of acme-fax expires in 3 days"),
        (Severity.CRITICAL, "refresh token of acme-fax expires in 24 hours"),
        (Severity.CRITICAL, "refresh token of acme-fax has expired"),
    ]


def test_failures_then_dead_then_recovery(store: FileStore) -> None:
    clock = Clock(T0)
    rec = Recorder()
    d = dispatcher(store, clock, rec)
    assert d.check(state(consecutive_failures=2), settings()) == []
    [failing] = d.check(state(consecutive_failures=3, last_error="HTTP 503"), settings())
    assert failing.kind is Kind.FAILURES
    dead = d.check(
        state(consecutive_failures=4, failed=True, last_error_code="invalid_grant"), settings()
    )
    assert {(a.kind, a.status) for a in dead} == {
        (Kind.DEAD, "firing"),
        (Kind.FAILURES, "resolved"),
    }
    clock.advance(minutes=5)
    [back] = d.check(state(), settings())
    assert (back.kind, back.status) == (Kind.DEAD, "resolved")
    assert back.summary == "resolved: acme-fax can be refreshed again"
    assert back.title == "[RESOLVED] acme-fax can be refreshed again"


def test_failing_channel_is_retried_and_sends_again_later(store: FileStore) -> None:
    clock = Clock(T0)
    broken = Recorder("broken", fail=100)
    flaky = Recorder("flaky", fail=2)
    pauses: list[float] = []
    d = Dispatcher(
        alerts=ALERTS,
        channels=[broken, flaky],
        memory=StoreAlertMemory(lambda a: store),
        clock=clock,
        sleep=pauses.append,
    )
    st = state(failed=True)
    assert len(d.check(st, settings())) == 1
    assert len(flaky.got) == 1 and pauses == [1.0, 2.0, 1.0, 2.0]
    # one channel took it: remembered, no resend
    assert d.check(st, settings()) == []

    only_broken = Dispatcher(
        alerts=ALERTS,
        channels=[broken],
        memory=MemoryAlertMemory(),
        clock=clock,
        sleep=lambda s: None,
    )
    assert len(only_broken.check(st, settings())) == 1
    broken.fail = 0
    clock.advance(minutes=15)
    # nothing took it the first time, so the next sweep sends it again
    [again] = only_broken.check(st, settings())
    assert not again.repeat and broken.got == [again]


def test_a_store_failure_never_raises(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store wants a directory")
    bad = FileStore("files", FileStoreSettings(type="file", directory=blocked / "sub"))
    d = dispatcher(bad, Clock(T0), Recorder())
    assert d.check(state(failed=True), settings()) == []


def test_two_replicas_send_once(store: FileStore) -> None:
    clock = Clock(T0)
    a, b = Recorder(), Recorder()
    da, db = dispatcher(store, clock, a), dispatcher(store, clock, b)
    st = state(failed=True)
    barrier = threading.Barrier(2)

    def run(d: Dispatcher) -> None:
        barrier.wait()
        d.check(st, settings())

    threads = [threading.Thread(target=run, args=(d,)) for d in (da, db)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(a.got) + len(b.got) == 1


# --- channels against real receivers -----------------------------------------------------


class Hook:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.event = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.got.append((self.path, json.loads(body)))
                hook.event.set()
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def firing(**kw: Any) -> Alert:
    base: dict[str, Any] = {
        "account": "acme-fax",
        "provider": "faxplus",
        "kind": Kind.REFRESH_TOKEN_EXPIRY,
        "status": "firing",
        "severity": Severity.WARNING,
        "summary": "refresh token of acme-fax expires in 3 days (2026-12-01 10:00 UTC); "
        "re-authorize with: rotator authorize acme-fax",
        "action": "rotator authorize acme-fax",
        "at": T0,
        "expires_at": datetime(2026, 12, 1, 10, tzinfo=UTC),
        "since": T0,
    }
    base.update(kw)
    return Alert(**base)


def test_webhook_json(hook: Hook, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_path = leakcheck.register("T0001/B0002/hooksecretvalue123", "webhook url")
    monkeypatch.setenv("ROTATOR_TEST_HOOK", f"http://127.0.0.1:{hook.port}/{secret_path}")
    channel = WebhookAlertChannel(WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK"))
    channel.send(firing())
    [(path, body)] = hook.got
    assert path == f"/{secret_path}"
    assert body == {
        "version": 1,
        "status": "firing",
        "repeat": False,
        "kind": "refresh_token_expiry",
        "severity": "warning",
        "account": "acme-fax",
        "provider": "faxplus",
        "summary": firing().summary,
        "action": "rotator authorize acme-fax",
        "expires_at": "2026-12-01T10:00:00Z",
        "since": "2026-11-01T10:00:00Z",
        "time": "2026-11-01T10:00:00Z",
    }


def test_webhook_slack_and_a_refusal_that_names_no_secret(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_path = leakcheck.register("T0001/B0002/slacksecretvalue456", "webhook url")
    monkeypatch.setenv("ROTATOR_TEST_SLACK", f"http://127.0.0.1:{hook.port}/{secret_path}")
    channel = WebhookAlertChannel(
        WebhookChannel(type="webhook", url="env:ROTATOR_TEST_SLACK", format="slack")
    )
    channel.send(firing(severity=Severity.CRITICAL, repeat=True))
    assert hook.got[0][1] == {
        "text": f":rotating_light: *[CRITICAL] {firing().summary}* _(reminder)_"
    }
    hook.status = 500
    with pytest.raises(AlertChannelError) as caught:
        channel.send(firing())
    assert "env:ROTATOR_TEST_SLACK answered HTTP 500" in str(caught.value)
    assert secret_path not in str(caught.value)


def test_command_gets_the_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "alert.json"
    script = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())"
    channel = CommandAlertChannel(
        CommandChannel(type="command", argv=[sys.executable, "-c", script])
    )
    channel.send(firing())
    assert json.loads(out.read_text()) == firing().payload()


def test_command_failure_and_timeout_are_reported() -> None:
    failing = CommandAlertChannel(
        CommandChannel(
            type="command", argv=[sys.executable, "-c", "import sys; sys.exit('pager down')"]
        )
    )
    with pytest.raises(AlertChannelError, match="exited with 1: pager down"):
        failing.send(firing())
    slow = CommandAlertChannel(
        CommandChannel(
            type="command", argv=[sys.executable, "-c", "import time; time.sleep(30)"], timeout="1s"
        )
    )
    with pytest.raises(AlertChannelError, match="did not finish within 1s"):
        slow.send(firing())
    missing = CommandAlertChannel(CommandChannel(type="command", argv=["/nonexistent/pager"]))
    with pytest.raises(AlertChannelError, match="not found"):
        missing.send(firing())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[tuple[str, str]] = []
        self.event = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        self.event.set()
        return "250 OK"


def test_email_reaches_a_local_smtp_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    password = leakcheck.register("smtp-password-value-789", "smtp password")
    logins: list[str] = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password.decode() == password
        logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    box = Mailbox()
    port = free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        monkeypatch.setenv("ROTATOR_TEST_SMTP", password)
        channel = EmailAlertChannel(
            EmailChannel.model_validate(
                {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": port,
                    "security": "none",
                    "from": "rotator@example.org",
                    "to": ["oncall@example.org", "ops@example.org"],
                    "username": "rotator",
                    "password": "env:ROTATOR_TEST_SMTP",
                }
            )
        )
        channel.send(firing())
        assert box.event.wait(10)
        [envelope] = box.messages
        assert envelope.mail_from == "rotator@example.org"
        assert envelope.rcpt_tos == ["oncall@example.org", "ops@example.org"]
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert mail["Subject"] == f"[rotator] [WARNING] {firing().summary}"
        text = mail.get_content()
        assert "What to do: rotator authorize acme-fax" in text
        assert logins == ["rotator"]

        monkeypatch.setenv("ROTATOR_TEST_SMTP", "wrong-password-value")
        leakcheck.register("wrong-password-value", "smtp password")
        with pytest.raises(AlertChannelError, match="refused the login of 'rotator'") as caught:
            channel.send(firing())
        assert "wrong-password-value" not in str(caught.value)
    finally:
        controller.stop()


def test_email_to_nowhere_is_a_clear_error() -> None:
    channel = EmailAlertChannel(
        EmailChannel.model_validate(
            {
                "type": "email",
                "host": "127.0.0.1",
                "port": 1,
                "security": "none",
                "from": "rotator@example.org",
                "to": ["oncall@example.org"],
                "timeout": "2s",
            }
        )
    )
    with pytest.raises(AlertChannelError, match=r"cannot reach SMTP server 127\.0\.0\.1:1\b"):
        channel.send(firing())


def test_dispatcher_over_real_channels_counts_what_was_sent(
    hook: Hook, store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATOR_TEST_HOOK2", f"http://127.0.0.1:{hook.port}/hook")
    out = tmp_path / "cmd.json"
    script = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())"
    channels = build_channels(
        [
            WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK2"),
            WebhookChannel(type="webhook", url="env:ROTATOR_TEST_HOOK2", format="slack"),
            CommandChannel(type="command", argv=[sys.executable, "-c", script]),
        ]
    )
    assert [c.name for c in channels] == ["webhook-1", "webhook-2", "command"]
    counted: list[tuple[str, str]] = []
    d = Dispatcher(
        alerts=ALERTS,
        channels=channels,
        memory=StoreAlertMemory(lambda a: store),
        clock=Clock(T0),
        sleep=lambda s: None,
        on_sent=lambda c, k: counted.append((c, k)),
    )
    [sent] = d.check(state(failed=True, last_error_code="invalid_grant"), settings())
    assert [body.get("kind", body.get("text", "")[:15]) for _, body in hook.got] == [
        "dead",
        ":rotating_light",
    ]
    assert json.loads(out.read_text())["summary"] == sent.summary
    assert counted == [
        ("log", "dead"),
        ("webhook-1", "dead"),
        ("webhook-2", "dead"),
        ("command", "dead"),
    ]


class CountingMemory(MemoryAlertMemory):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self, account: str) -> tuple[dict[str, Sent], object]:
        self.loads += 1
        return super().load(account)


def test_a_healthy_account_costs_one_read_then_none() -> None:
    memory = CountingMemory()
    clock = Clock(T0)
    d = Dispatcher(alerts=ALERTS, channels=[], memory=memory, clock=clock, sleep=lambda s: None)
    for _ in range(5):
        assert d.check(state(), settings()) == []
    assert memory.loads == 1
    [fired] = d.check(state(failed=True), settings())
    [resolved] = d.check(state(), settings())
    assert (fired.status, resolved.status) == ("firing", "resolved")
    loads = memory.loads
    assert d.check(state(), settings()) == []
    assert memory.loads == loads
