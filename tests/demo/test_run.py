"""``rotator demo`` as a newcomer runs it: it starts quickly, rotates, and its enhanced-security
account's expiry alert is printed in the terminal with a console link on localhost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from rotator.demo.alerts import describe_alert
from tests.support.browser import DemoProcess

pytestmark = pytest.mark.timeout(120)


def test_the_demo_starts_quickly_and_prints_the_walled_accounts_alert(tmp_path: Path) -> None:
    started = time.monotonic()
    demo = DemoProcess(tmp_path / "demo")
    try:
        console = demo.wait_output(r"console: (http://127\.0\.0\.1:\d+)/", timeout=30).group(1)
        alert = demo.wait_output(r"demo: ALERT \(critical\) refresh token of demo-fax [^\n]*")
        assert "expires in 4 minutes" in alert.group(0) or "expires in 5 minutes" in alert.group(0)
        assert time.monotonic() - started < 20, "the demo's alert must come within seconds"
        assert httpx.get(f"{console}/healthz", timeout=5).status_code == 200
        demo.wait_output(r'"account": "demo-refresh"[^\n]*"event": "rotated"')
        state = json.loads(next((tmp_path / "demo" / "state").rglob("demo-fax*")).read_text())
        assert "authorized_at" in json.dumps(state)
    finally:
        demo.register_secrets()
        assert demo.stop() == 0


def test_an_alert_is_printed_with_its_link_and_a_resolved_one_plainly() -> None:
    firing = {
        "status": "firing",
        "severity": "critical",
        "summary": "refresh token of fp expires in 3 days\x1b[2J",
        "reauthorize_url": "http://127.0.0.1:9464/authorize/fp?sig=x",
    }
    lines = describe_alert(firing)
    assert lines[0] == (
        "rotator demo: ALERT (critical) refresh token of fp expires in 3 days\\x1b[2J"
    )
    assert lines[1].endswith("http://127.0.0.1:9464/authorize/fp?sig=x")
    assert describe_alert({"status": "resolved", "summary": "fp recovered"}) == [
        "rotator demo: RESOLVED fp recovered"
    ]
