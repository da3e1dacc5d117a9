"""SIGHUP with accounts in included files: every file re-read, only what changed applied.

A real daemon process against the OAuth2 emulator (tokens live 10 minutes, so an
account rotates only when it is new, changed or due): a new file adds accounts
that rotate at once; a changed account is rebuilt and the others keep their
schedule (no token call, the same next refresh); a broken file refuses the
whole reload and the daemon runs on; a removed file removes its accounts. In
process, the kept accounts are the very objects (provider instance included).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import leakcheck
from tests.support.logcapture import captured_logs
from tests.support.proc import DaemonProcess, run_rotator, wait_for

SECRET = leakcheck.register("s3cr3t-p+ss:w/rd%-reload", "client secret")


def write_main(tmp: Path) -> Path:
    secret_file = tmp / "client-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    body = [
        f"server: {{workers: 4, shutdown_grace: 5s, spool_dir: {tmp / 'spool'}}}",
        "include: [accounts.d/*.yaml]",
        "stores:",
        f"  files: {{type: file, directory: {tmp / 'out'}}}",
        f"  state: {{type: file, directory: {tmp / 'state'}}}",
        "defaults:",
        "  state: {store: state}",
        "  provider: oauth2",
        "  client_id: app",
        f"  client_secret: file:{secret_file}",
        "  retry_initial: 1s",
        "  retry_max: 2s",
        "accounts: {}",
    ]
    path = tmp / "rotator.yaml"
    path.write_text("\n".join(body) + "\n")
    return path


def write_accounts(tmp: Path, file: str, url: str, names: dict[str, str]) -> Path:
    """``names``: account -> extra YAML keys in flow style (``""`` for none)."""
    lines = ["accounts:"]
    for name, extra in names.items():
        keys = f"token_url: {url}, sinks: [{{store: files, path: {name}.token, format: token}}]"
        lines.append(f"  {name}: {{{keys}{', ' + extra if extra else ''}}}")
    path = tmp / "accounts.d" / file
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def seed(config: Path, account: str, server: OAuth2Emulator) -> None:
    proc = run_rotator(["import", "-c", str(config), account], stdin=server.issue_grant("app"))
    assert proc.returncode == 0, proc.stderr


def refreshes(server: OAuth2Emulator) -> dict[str, int]:
    """Token calls per account (grants issued in seed order, one per account)."""
    return {grant.grant_id: grant.refreshes for grant in server.grants.values()}


def next_refresh(config: Path) -> dict[str, Any]:
    proc = run_rotator(["status", "-c", str(config), "--json"])
    assert proc.returncode == 0, proc.stderr
    return {row["account"]: row["next_refresh_at"] for row in json.loads(proc.stdout)["accounts"]}


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    found = []
    for line in daemon.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == name:
            found.append(record)
    return found


def test_sighup_applies_only_what_changed_in_included_files(tmp_path: Path) -> None:
    with emulator(clients={"app": SECRET}, access_ttl=600.0) as server:
        config = write_main(tmp_path)
        write_accounts(tmp_path, "team-a.yaml", server.url, {"a1": "", "a2": ""})
        for name in ("a1", "a2"):
            seed(config, name, server)
        with DaemonProcess(config) as daemon:
            daemon.wait_log('"event": "rotated"', count=2)

            # a new file: its accounts are added and rotate at once
            write_accounts(tmp_path, "team-b.yaml", server.url, {"b1": ""})
            seed(config, "b1", server)
            before = refreshes(server)
            daemon.signal(signal.SIGHUP)
            daemon.wait_log('"event": "reloaded"')
            wait_for((tmp_path / "out" / "b1.token").exists, 15, what="b1 published")
            assert events(daemon, "reloaded")[-1]["added"] == ["b1"]
            schedule = next_refresh(config)
            calls = refreshes(server)
            assert sum(calls.values()) == sum(before.values()) + 1

            # one account changed: it is rebuilt; the others keep their schedule
            write_accounts(tmp_path, "team-a.yaml", server.url, {"a1": "jitter: 0.2", "a2": ""})
            daemon.signal(signal.SIGHUP)
            daemon.wait_log('"event": "reloaded"', count=2)
            reloaded = events(daemon, "reloaded")[-1]
            assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == ([], [], ["a1"])
            after = next_refresh(config)
            assert {n: after[n] for n in ("a2", "b1")} == {n: schedule[n] for n in ("a2", "b1")}

            # a broken file refuses the whole reload: the running accounts stay
            broken = write_accounts(tmp_path, "team-b.yaml", server.url, {"b1": ""})
            broken.write_text(broken.read_text() + "stores: {}\n")
            write_accounts(tmp_path, "team-c.yaml", server.url, {"c1": ""})
            daemon.signal(signal.SIGHUP)
            daemon.wait_log("reload refused")
            refused = events(daemon, "reload refused; keeping the running configuration")[-1]
            assert refused["error"].startswith("accounts.d/team-b.yaml: stores: ")
            assert "(line 3)" in refused["error"]
            assert daemon.proc.poll() is None
            (tmp_path / "accounts.d" / "team-c.yaml").unlink()

            # a removed file removes its accounts
            broken.unlink()
            daemon.signal(signal.SIGHUP)
            daemon.wait_log('"event": "reloaded"', count=3)
            reloaded = events(daemon, "reloaded")[-1]
            assert (reloaded["added"], reloaded["removed"]) == ([], ["b1"])
            assert reloaded["accounts"] == 2
            assert daemon.stop() == 0
        # unchanged accounts made no token call after the first reload
        final = refreshes(server)
        assert sum(final.values()) - sum(calls.values()) <= 1  # a1, changed, may refresh
        assert server.reuse_detected == 0
        for grant in server.grants.values():
            assert not grant.revoked


def test_reload_keeps_unchanged_accounts_as_they_run(tmp_path: Path) -> None:
    """In process: the kept accounts are the running objects, provider instance and all."""
    from rotator.service.app import build_daemon

    with emulator(clients={"app": SECRET}, access_ttl=600.0) as server:
        config = write_main(tmp_path)
        write_accounts(tmp_path, "team-a.yaml", server.url, {"a1": "", "a2": ""})
        daemon = build_daemon(str(config))
        daemon.start()
        try:
            running = dict(daemon.accounts)
            write_accounts(tmp_path, "team-a.yaml", server.url, {"a1": "jitter: 0.3", "a2": ""})
            write_accounts(tmp_path, "team-b.yaml", server.url, {"b1": ""})
            assert daemon.reload()
            assert daemon.accounts["a2"] is running["a2"]
            assert daemon.accounts["a2"].provider is running["a2"].provider
            assert daemon.accounts["a1"] is not running["a1"]
            assert daemon.accounts["a1"].settings.jitter == 0.3
            assert list(daemon.accounts) == ["a1", "a2", "b1"]
            assert daemon.config.included == ("accounts.d/team-a.yaml", "accounts.d/team-b.yaml")
            # a store changed: every account on it is rebuilt (with the new store object)
            main = config.read_text().replace(f"directory: {tmp_path / 'out'}", "directory: /tmp/x")
            config.write_text(main)
            assert daemon.reload()
            assert daemon.accounts["a2"] is not running["a2"]
            assert daemon.accounts["a2"].sinks[0][0] is daemon.stores["files"]
        finally:
            daemon.stop()


def test_an_include_glob_matching_nothing_is_logged_at_start(tmp_path: Path) -> None:

    from rotator.service.app import build_daemon

    config = write_main(tmp_path)
    config.write_text(config.read_text().replace("[accounts.d/*.yaml]", "[teams/*.yaml]"))
    daemon = build_daemon(str(config))
    with captured_logs() as logs:
        daemon.start()
        daemon.stop()
    [warning] = [e for e in logs if e["event"] == "include pattern matches no file"]
    assert warning["pattern"] == "teams/*.yaml"
    assert warning["log_level"] == "warning"
