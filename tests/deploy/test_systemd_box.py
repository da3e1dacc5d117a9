"""The repository's unit under a real systemd (tests/support/box.py), on a minimal host.

One box per module, booted from a cached debootstrap minbase rootfs without
procps (no /bin/kill), and the tests run in file order as an operator's day
would go: install rotator with docker/install.sh and the box's python3, then
docs/deployment.md's systemd steps 2-5 run as printed (their shell blocks, marked
``deploy/...``; the unit, sysusers and tmpfiles files unchanged; credentials in
/etc/credstore), start, rotate against an HTTPS emulator on the host's
loopback, reload, a broken reload, a watchdog restart, stop, a one-off
`rotator refresh` whose state write fails replayed from the daemon's spool,
encrypted credentials by the shipped drop-in, and the journal. The only test-specific
settings are a drop-in with a short watchdog for the watchdog test, and the
example config's vendor URLs pointed at the emulator.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import docs, leakcheck
from tests.support.box import Box, BoxUnavailable
from tests.support.net import free_port, wait_until
from tests.support.rootfs import rootfs_or_skip
from tests.support.tls import TLSEmulator, make_ca

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
UNIT = "rotator.service"
CONFIG = "/etc/rotator/rotator.yaml"
CA_IN_BOX = "/etc/rotator/emulator-ca.pem"
CLIENTS = {"rotator-idp": "idp-client-secret", "rotator-crm": "crm-client-secret"}
_RUN_AS = ("systemd-run", "--quiet", "--pipe", "--wait", "--collect", "-p", "User=rotator")
_STATE_DIRECTORY = ("-p", "StateDirectory=rotator", "-p", "StateDirectoryMode=0750")
_CREDENTIALS = (
    *("-p", "LoadCredential=idp-client-secret", "-p", "LoadCredential=crm-client-secret"),
    *("-p", "LoadCredential=alert-webhook-url", "/opt/rotator/bin/rotator"),
)


def as_service_from_docs() -> tuple[str, ...]:
    """docs/deployment.md, step 5: the ``rotator-as-service`` function's command as printed
    (without ``sudo``; the box runs as root), so the helper a reader copies is the one the
    box proves: one-off commands as the service runs them (its user, its credentials, its
    state directory: $STATE_DIRECTORY as the daemon has it)."""
    text = docs.block("deploy/enable-and-seed").text
    body = text.split("rotator-as-service() {", 1)[1].split("\n}", 1)[0]
    words = shlex.split(body.replace("\\\n", " "))
    assert words[0] == "sudo" and words[-1] == "$@", words
    return tuple(words[1:-1])


AS_SERVICE = as_service_from_docs()
#: the helper as the README had it before, without the state directory: the shipped
#: config's server.spool_dir still sends its grants to the daemon's spool
AS_SERVICE_BARE = (*_RUN_AS, *_CREDENTIALS)

_timings: dict[str, float] = {}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def emulator(certificates: tuple[Path, Path, Path]) -> Iterator[TLSEmulator]:
    known = {
        client: leakcheck.register(f"{name}-{secrets.token_urlsafe(12)}", "credential")
        for client, name in CLIENTS.items()
    }
    server = TLSEmulator(certificates[1], certificates[2], clients=known)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    started = time.monotonic()
    cached = rootfs_or_skip()
    _timings["rootfs"] = time.monotonic() - started
    with Box(cached) as booted:
        _timings["boot"] = time.monotonic() - started - _timings["rootfs"]
        try:
            booted.install_rotator()
        except BoxUnavailable as exc:
            pytest.skip(str(exc))
        _timings["install"] = time.monotonic() - started - _timings["rootfs"] - _timings["boot"]
        yield booted


def config(emulator: TLSEmulator, listen: str, *, with_crm: bool) -> str:
    """systemd/rotator.yaml with its vendor URLs on the emulator (and crm-api optional)."""
    text = (SYSTEMD / "rotator.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["server"]["listen"] = listen
    for account in data["accounts"].values():
        account["token_url"] = emulator.url
        account["ca_bundle"] = CA_IN_BOX
    if not with_crm:
        del data["accounts"]["crm-api"]
    return yaml.safe_dump(data, sort_keys=False)


def run_step(
    box: Box,
    name: str,
    replacements: dict[str, str] | None = None,
    *,
    until: str | None = None,
    input: str | None = None,
) -> None:
    """The shell block marked ``<!-- test: NAME -->`` in docs/deployment.md, run in the box
    as printed: from /tmp/src (where the repository's ``systemd/`` is), as root, so
    ``sudo`` is dropped (the box has none); ``until`` ends it before that line (the rest is
    run by the test in its own time); ``replacements`` as :func:`docs.substitute`."""
    text = docs.block(name).text
    if until is not None:
        assert until in text, f"{name} no longer holds {until!r}"
        text = text.split(until, 1)[0]
    if replacements:
        text = docs.substitute(text, replacements)
    script = re.sub(r"(^|\|\s*|&&\s*)sudo\s+", r"\1", text, flags=re.MULTILINE)
    box.run("bash", "-euo", "pipefail", "-c", f"cd /tmp/src\n{script}", input=input)


@pytest.fixture(scope="module")
def listen() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def installed(
    box: Box, emulator: TLSEmulator, certificates: tuple[Path, Path, Path], listen: str
) -> Box:
    """docs/deployment.md's systemd steps 2-5 in the box, run as printed (:func:`run_step`)
    with the repository's files as they are; the edit of step 3 is the test's config."""
    for path in SYSTEMD.iterdir():
        box.write(f"/tmp/src/systemd/{path.name}", path.read_text(encoding="utf-8"))
    box.run("useradd", "--system", "--no-create-home", "myapp")  # step 2's example consumer
    run_step(box, "deploy/user-and-directories")
    box.write("/tmp/src/edited.yaml", config(emulator, listen, with_crm=False))
    box.write(CA_IN_BOX, certificates[0].read_text(encoding="utf-8"))
    run_step(
        box,
        "deploy/configuration",
        {
            # the reader's edit, made: the test's config (vendor URLs on the emulator)
            "sudoedit /etc/rotator/rotator.yaml": "install -m 0640 -o root -g rotator "
            "/tmp/src/edited.yaml /etc/rotator/rotator.yaml",
            # the box has no sudo: runuser is root's way to run a command as a user
            "sudo -u rotator": "runuser -u rotator --",
        },
    )
    run_step(box, "deploy/credentials", input=emulator.clients["rotator-idp"] + "\n")
    webhook = leakcheck.register(
        f"http://127.0.0.1:{free_port()}/hook/{secrets.token_urlsafe(12)}", "webhook URL"
    )
    # the other credentials "the same way" as step 4's
    for name, value in (("crm-client-secret", emulator.clients["rotator-crm"]),):
        box.write(f"/etc/credstore/{name}", value, mode=0o600)
    box.write("/etc/credstore/alert-webhook-url", webhook, mode=0o600)
    # step 5 up to the start, which each test makes itself (timed, or after seeding)
    run_step(box, "deploy/enable-and-seed", until="sudo systemctl enable --now rotator")
    return box


def journal(box: Box, *args: str) -> str:
    return box.run("journalctl", "--no-pager", "-u", UNIT, *args).stdout


def journal_with(box: Box, *needles: str) -> str:
    """The unit's journal (messages only) once it holds every needle.

    journald takes a process's output a moment after the process wrote it, and
    `systemctl reload` returns once the signal is sent, before the daemon acts.
    """

    def holds() -> str:
        text = journal(box, "-o", "cat")
        return text if all(needle in text for needle in needles) else ""

    return wait_until(holds, timeout=15, what=f"{needles} in the journal of {UNIT}")


def main_pid(box: Box) -> int:
    return int(box.show(UNIT, "MainPID")["MainPID"])


def test_the_box_is_a_minimal_host_without_procps(box: Box) -> None:
    state = box.run("systemctl", "is-system-running", check=False).stdout.strip()
    assert state == "running", box.systemctl("--failed").stdout
    for path in ("/bin/kill", "/usr/bin/kill", "/bin/ps"):
        assert not box.path(path).exists(), path
    assert box.run("dpkg-query", "-W", "procps", check=False).returncode != 0


def test_start_reaches_active_running_through_notify(installed: Box, emulator: TLSEmulator) -> None:
    box = installed
    # README step 5: seed the refresh token as the service would run it
    refresh = emulator.issue_grant("rotator-idp")
    box.run(*AS_SERVICE, "import", "idp-api", input=refresh)
    started = time.monotonic()
    box.systemctl("start", UNIT)  # returns once READY=1 arrived (Type=notify)
    _timings["start"] = time.monotonic() - started
    shown = box.show(
        UNIT, "Type", "ActiveState", "SubState", "Result", "ExecStartPre", "StatusText"
    )
    assert shown["Type"] == "notify"
    assert (shown["ActiveState"], shown["SubState"], shown["Result"]) == (
        "active",
        "running",
        "success",
    )
    assert "code=exited ; status=0 }" in shown["ExecStartPre"]  # the check ran, passed
    journal_with(box, "configuration OK")
    status = box.systemctl("status", UNIT, check=False).stdout
    assert f'Status: "{shown["StatusText"]}"' in status
    assert "account" in shown["StatusText"]


def test_tokens_rotate_under_the_full_sandbox(
    installed: Box, emulator: TLSEmulator, listen: str
) -> None:
    box = installed
    token_file = box.path("/var/lib/rotator/tokens/idp-api.json")
    wait_until(token_file.exists, timeout=30, what="the idp-api token to be published")
    published = json.loads(token_file.read_text(encoding="utf-8"))
    assert emulator.access_valid(published["access_token"])
    # The refresh token was spent and its successor stored: the grant moved on, once.
    [grant] = emulator.grants.values()
    assert len(grant.spent) == 1
    state = box.path("/var/lib/rotator/state/idp-api")
    assert grant.current_refresh in state.read_text(encoding="utf-8")
    assert state.stat().st_mode & 0o777 == 0o600
    assert state.parent.stat().st_mode & 0o777 == 0o700
    # The spool (AES-GCM by cryptography) took the grant first, then let it go; a spool
    # that failed would only be logged, and the rotation go on.
    spool = box.path("/var/lib/rotator/spool")
    assert sorted(p.name for p in spool.iterdir()) == ["spool.key"]
    assert "could not spool" not in journal(box, "-o", "cat")
    # The sandbox was in force on the process that did it.
    pid = main_pid(box)
    status = dict(
        line.split(":\t", 1)
        for line in box.run("cat", f"/proc/{pid}/status").stdout.splitlines()
        if ":\t" in line
    )
    rotator_uid = box.run("id", "-u", "rotator").stdout.strip()
    assert status["Uid"].split()[0] == rotator_uid
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # SystemCallFilter=, MemoryDenyWriteExecute=, ...
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    limits = box.run("cat", f"/proc/{pid}/limits").stdout
    # LimitCORE=0 (the daemon sets it too)
    assert re.search(r"(?m)^Max core file size\s+0\s+0\s", limits)
    # PrivateUsers=yes: a user namespace that maps root and rotator only, not the identity
    uid_map = [line.split() for line in box.run("cat", f"/proc/{pid}/uid_map").stdout.splitlines()]
    assert sorted(uid_map) == sorted([["0", "0", "1"], [rotator_uid, rotator_uid, "1"]])
    # The metrics listener answers on the shared loopback.
    metrics = httpx.get(f"http://{listen}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'account="idp-api"' in metrics.text
    # ...with the process described, as the unit's comment on ProcSubset= promises
    for family in ("process_resident_memory_bytes", "process_open_fds", "python_gc_objects"):
        assert f"\n{family}" in metrics.text, family
    assert httpx.get(f"http://{listen}/readyz", timeout=10).status_code == 200


def test_load_credential_reaches_cred_name(installed: Box, emulator: TLSEmulator) -> None:
    """The client secrets exist only in /etc/credstore; the emulator took them from the daemon."""
    box = installed
    pid = main_pid(box)
    environ = box.run("cat", f"/proc/{pid}/environ").stdout.split("\0")
    assert f"CREDENTIALS_DIRECTORY=/run/credentials/{UNIT}" in environ
    listed = box.run("ls", f"/run/credentials/{UNIT}").stdout.split()
    assert listed == ["alert-webhook-url", "crm-client-secret", "idp-client-secret"]
    # ...and the rotation before this test, which the emulator answers only for the
    # client secret that exists nowhere but in /etc/credstore/idp-client-secret.
    assert emulator.token_calls >= 1
    assert box.path("/var/lib/rotator/tokens/idp-api.json").exists()


def test_reload_applies_a_changed_config(
    installed: Box, emulator: TLSEmulator, listen: str
) -> None:
    box = installed
    pid = main_pid(box)
    box.write("/tmp/src/rotator.yaml", config(emulator, listen, with_crm=True))
    box.run("install", "-m", "0640", "-o", "root", "-g", "rotator", "/tmp/src/rotator.yaml", CONFIG)
    box.systemctl("reload", UNIT)
    assert main_pid(box) == pid
    wait_until(
        box.path("/var/lib/rotator/tokens/crm-api.env").exists,
        timeout=30,
        what="crm-api, added by the reload, to publish",
    )
    text = journal_with(box, '"event": "reloaded"')
    reloaded = [json.loads(line) for line in text.splitlines() if '"reloaded"' in line]
    assert [event["added"] for event in reloaded] == [["crm-api"]]


def test_a_broken_config_is_refused_by_the_reload_check(installed: Box) -> None:
    box = installed
    pid = main_pid(box)
    good = box.path(CONFIG).read_text(encoding="utf-8")
    box.path(CONFIG).write_text(
        good.replace("grant: client_credentials", "grant: client_credential")
    )
    try:
        refused = box.systemctl("reload", UNIT, check=False)
        assert refused.returncode != 0
        # the check's refusal names what was wrong, and systemd says the reload failed
        text = journal_with(box, "'client_credential'", "Reload failed for rotator.service")
        assert text.count('"reloaded"') == 1  # the daemon was never signalled
        shown = box.show(UNIT, "ActiveState", "SubState", "MainPID")
        assert (shown["ActiveState"], shown["SubState"]) == ("active", "running")
        assert int(shown["MainPID"]) == pid
    finally:
        box.path(CONFIG).write_text(good)


def test_the_watchdog_restarts_a_stopped_daemon(installed: Box) -> None:
    box = installed
    box.write(
        f"/etc/systemd/system/{UNIT}.d/test-watchdog.conf",
        "[Service]\nWatchdogSec=2s\nRestartSec=1s\n",
    )
    box.systemctl("daemon-reload")
    box.systemctl("restart", UNIT)
    pid = main_pid(box)
    before = int(box.show(UNIT, "NRestarts")["NRestarts"])
    started = time.monotonic()
    box.systemctl("kill", "--signal=SIGSTOP", "--kill-who=main", UNIT)

    def restarted() -> bool:
        shown = box.show(UNIT, "NRestarts", "MainPID", "SubState")
        return (
            int(shown["NRestarts"]) > before
            and shown["SubState"] == "running"
            and int(shown["MainPID"]) != pid
        )

    wait_until(restarted, timeout=30, what="systemd to restart the stuck daemon")
    _timings["watchdog restart"] = time.monotonic() - started
    text = journal_with(box, "Watchdog timeout", "code=killed, status=6/ABRT")
    assert "code=dumped" not in text  # LimitCORE=0: SIGABRT leaves no core of the secrets
    box.path(f"/etc/systemd/system/{UNIT}.d/test-watchdog.conf").unlink()
    box.systemctl("daemon-reload")


def test_stop_is_clean(installed: Box) -> None:
    box = installed
    # At debug level systemd logs how the main process ended (exit 0 vs killed by SIGTERM).
    box.run("systemd-analyze", "set-log-level", "debug")
    started = time.monotonic()
    try:
        box.systemctl("stop", UNIT)
    finally:
        _timings["stop"] = time.monotonic() - started
        box.run("systemd-analyze", "set-log-level", "info")
    shown = box.show(UNIT, "ActiveState", "Result")
    assert shown == {"ActiveState": "inactive", "Result": "success"}
    text = journal_with(box, '"event": "stopped"', "Deactivated successfully")
    last_stop = text[text.rindex("Stopping rotator.service") :]
    assert f"{UNIT}: Main process exited, code=exited, status=0/SUCCESS" in last_stop
    assert f"{UNIT}: Deactivated successfully." in last_stop
    assert '"event": "stopped"' in last_stop and '"clean": true' in last_stop


def test_a_one_off_refresh_whose_state_write_fails_is_replayed_by_the_daemon(
    installed: Box, emulator: TLSEmulator
) -> None:
    """Rule 1 across processes: the daemon replays what a one-off command spooled.

    The daemon is stopped (the test before). A `rotator refresh` started the way the
    README's helper used to start it (no StateDirectory=, so no $STATE_DIRECTORY)
    spends the refresh token, and the state store refuses the write from the moment
    the vendor answers. The new grant must be in the daemon's spool, and the daemon's
    next start must land it: it never presents the spent token (the emulator revokes
    a grant whose spent token comes back).
    """
    box = installed
    [grant] = emulator.grants.values()
    reused, revoked = emulator.grace_reuses, emulator.reuse_detected
    state_dir = box.path("/var/lib/rotator/state")
    spool = box.path("/var/lib/rotator/spool")
    issued: list[str] = []

    def refuse_state_writes(value: str, kind: str) -> None:
        if kind == "refresh":  # the vendor's answer: from now on the state store refuses
            issued.append(value)
            state_dir.chmod(0o500)

    emulator.on_issue = refuse_state_writes
    try:
        done = box.run(*AS_SERVICE_BARE, "refresh", "idp-api", check=False)
    finally:
        emulator.on_issue = None
        state_dir.chmod(0o700)
    assert done.returncode == 1, done.stderr
    [new_refresh] = issued
    assert grant.current_refresh == new_refresh  # spent: the old token is dead now
    assert new_refresh not in state_dir.joinpath("idp-api").read_text(encoding="utf-8")
    assert len(list(spool.glob("*.grant"))) == 1  # in the daemon's spool...
    assert not box.path("/var/lib/rotator/.local").exists()  # ...and nowhere else
    box.systemctl("start", UNIT)
    journal_with(box, "replaying a rotated grant that had not reached the state store")
    wait_until(
        lambda: grant.current_refresh in state_dir.joinpath("idp-api").read_text(encoding="utf-8"),
        timeout=30,
        what="the spooled grant to land in the state store",
    )
    assert sorted(p.name for p in spool.iterdir()) == ["spool.key"]
    assert not grant.revoked
    assert (emulator.grace_reuses, emulator.reuse_detected) == (reused, revoked)
    box.systemctl("stop", UNIT)


def test_a_one_off_command_refuses_a_spool_the_daemon_never_reads(installed: Box) -> None:
    """Without server.spool_dir, a command started without the state directory would
    spool to ~rotator/.local/state: it refuses (exit 2) and names both paths."""
    box = installed
    config_text = box.path(CONFIG).read_text(encoding="utf-8")
    data = yaml.safe_load(config_text)
    del data["server"]["spool_dir"]
    box.write("/tmp/src/no-spool-dir.yaml", yaml.safe_dump(data, sort_keys=False))
    other = "/etc/rotator/no-spool-dir.yaml"
    box.run(
        "install", "-m", "0640", "-o", "root", "-g", "rotator", "/tmp/src/no-spool-dir.yaml", other
    )
    try:
        refused = box.run(*AS_SERVICE_BARE, "refresh", "-c", other, "idp-api", check=False)
        assert refused.returncode == 2
        assert "/var/lib/rotator/.local/state/rotator/spool" in refused.stderr
        assert "/var/lib/rotator/spool" in refused.stderr
        assert not box.path("/var/lib/rotator/.local").exists()
        # the README's helper gives it the daemon's $STATE_DIRECTORY, so the same spool
        box.run(*AS_SERVICE, "refresh", "-c", other, "idp-api")
        assert not box.path("/var/lib/rotator/.local").exists()
    finally:
        box.path(other).unlink()
    assert box.path("/var/lib/rotator").stat().st_mode & 0o777 == 0o750


def test_encrypted_credentials_reach_cred_name_through_the_drop_in(
    installed: Box, emulator: TLSEmulator
) -> None:
    """README step 4, encrypted: systemd-creds, and systemd/encrypted-credentials.conf as is."""
    box = installed
    names = sorted(p.name for p in box.path("/etc/credstore").iterdir())
    # as printed for idp-client-secret (the drop-in installed with it), the others the same way
    run_step(box, "deploy/credentials-encrypted", input=emulator.clients["rotator-idp"] + "\n")
    for name in names:
        if name != "idp-client-secret":
            box.run(
                "sh",
                "-c",
                f"systemd-creds encrypt --name={name} - /etc/credstore.encrypted/{name} "
                f"< /etc/credstore/{name}",
            )
    for name in names:
        box.path(f"/etc/credstore/{name}").unlink()
    box.systemctl("daemon-reload")
    try:
        box.systemctl("start", UNIT)
        directory = box.path(f"/run/credentials/{UNIT}")
        assert sorted(p.name for p in directory.iterdir()) == names
        for client, name in CLIENTS.items():
            assert (directory / name).read_text(encoding="utf-8") == emulator.clients[client]
        assert box.show(UNIT, "SubState")["SubState"] == "running"
    finally:
        box.systemctl("stop", UNIT)
    assert box.show(UNIT, "Result")["Result"] == "success"


def test_the_journal_holds_json_lines_and_no_secret(installed: Box) -> None:
    box = installed
    entries = [json.loads(line) for line in journal(box, "-o", "json").splitlines()]
    daemon = [e for e in entries if " run -c " in e.get("_CMDLINE", "")]
    assert len(daemon) > 5
    for entry in daemon:
        record = json.loads(entry["MESSAGE"])
        assert {"event", "level", "timestamp"} <= record.keys()
        assert record["level"] not in ("error", "critical"), record  # nothing went wrong
    # Every field of every entry, where the suite's leak check scans it again at the end.
    copy = leakcheck.LOG_DIR / f"systemd-box-{secrets.token_hex(4)}"
    copy.mkdir()
    (copy / "journal.log").write_text(journal(box, "-o", "verbose"), encoding="utf-8")
    assert leakcheck.find_leaks(copy) == []
    print("box timings:", ", ".join(f"{k} {v:.1f}s" for k, v in _timings.items()))
