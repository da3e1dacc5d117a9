"""The systemd unit, checked by systemd's own tools.

`systemd-analyze verify` loads the unit as PID 1 would and reports every bad
setting. It also insists that each Exec*= binary exists; /opt/rotator/bin/rotator
does not on a build machine, so verify runs on a copy of the unit in which that
one path points at a stand-in executable (the test asserts nothing else
changed). `systemd-analyze security --offline=true` rates the sandbox; the
README states the score and this test holds the unit to <= 1.5.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rotator.config import load_config
from rotator.secrets import parse_ref
from tests.support import leakcheck
from tests.support.proc import run_rotator

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
UNIT = SYSTEMD / "rotator.service"
BINARY = "/opt/rotator/bin/rotator"
MAX_EXPOSURE = 1.5

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(text: str) -> list[tuple[str, str]]:
    """(key, value) pairs of a unit file, in order; comments and sections dropped."""
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        pairs.append((key.strip(), value.strip()))
    return pairs


def strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def values(key: str) -> list[str]:
    return [v for k, v in directives(UNIT.read_text(encoding="utf-8")) if k == key]


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )


@pytest.fixture
def unit_with_stand_in(tmp_path: Path) -> Path:
    """A copy of the unit whose rotator binary exists: a script in tmp_path."""
    stand_in = tmp_path / "bin" / "rotator"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stand_in.chmod(0o755)
    original = UNIT.read_text(encoding="utf-8")
    assert original.count(BINARY) == 3  # ExecStartPre, ExecStart, the checking ExecReload
    copy = tmp_path / "rotator.service"
    copy.write_text(original.replace(BINARY, str(stand_in)), encoding="utf-8")
    changed = [
        (a, b)
        for a, b in zip(original.splitlines(), copy.read_text().splitlines(), strict=True)
        if a != b
    ]
    assert all(a.replace(BINARY, str(stand_in)) == b for a, b in changed)
    return copy


@needs_analyze
def test_verify_is_clean(unit_with_stand_in: Path, tmp_path: Path) -> None:
    result = analyze("verify", "--man=no", str(unit_with_stand_in), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    complaints = [line for line in result.stderr.splitlines() if "rotator" in line]
    assert complaints == []


DROP_IN = SYSTEMD / "encrypted-credentials.conf"


@pytest.fixture
def unit_with_drop_in(unit_with_stand_in: Path) -> Path:
    """The stand-in copy plus the encrypted-credentials drop-in, as installed."""
    drop_ins = unit_with_stand_in.parent / "rotator.service.d"
    drop_ins.mkdir()
    shutil.copy(DROP_IN, drop_ins / "credentials.conf")
    return unit_with_stand_in


@needs_analyze
def test_encrypted_credentials_drop_in_verifies_and_keeps_the_score(
    unit_with_drop_in: Path, tmp_path: Path
) -> None:
    result = analyze("verify", "--man=no", str(unit_with_drop_in), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "rotator" in line] == []
    result = analyze(
        "security", "--offline=true", "--no-pager", str(unit_with_drop_in), cwd=tmp_path
    )
    match = re.search(r"Overall exposure level for rotator\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE
    assert f"exposure {exposure} with it" in (ROOT / "docs" / "deployment.md").read_text(
        encoding="utf-8"
    )
    # It swaps the whole list: the same names, now decrypted.
    pairs = directives(DROP_IN.read_text(encoding="utf-8"))
    assert pairs[0] == ("LoadCredential", "")
    assert [v for k, v in pairs if k == "LoadCredentialEncrypted"] == values("LoadCredential")


@needs_analyze
def test_verify_of_the_shipped_unit_only_misses_the_binary(tmp_path: Path) -> None:
    """Why the stand-in exists: verify's one complaint is the uninstalled binary."""
    result = analyze("verify", "--man=no", str(UNIT), cwd=tmp_path)
    complaints = {line for line in result.stderr.splitlines() if "rotator" in line}
    assert complaints <= {
        f"rotator.service: Command {BINARY} is not executable: No such file or directory"
    }


@needs_analyze
def test_security_exposure_is_at_most_1_5(tmp_path: Path) -> None:
    result = analyze(
        "security",
        "--offline=true",
        "--no-pager",
        f"--threshold={int(MAX_EXPOSURE * 10)}",
        str(UNIT),
        cwd=tmp_path,
    )
    match = re.search(r"Overall exposure level for rotator\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE
    # --threshold makes the tool itself fail above 1.5
    assert result.returncode == 0, result.stderr
    # Keep the README's statement of the score true.
    readme = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert f"exposure level {exposure}" in readme


def test_unit_has_the_service_contract() -> None:
    assert values("Type") == ["notify"]
    assert values("Restart") == ["on-failure"]
    assert values("ExecStart") == [f"{BINARY} run -c /etc/rotator/rotator.yaml"]
    # no /bin/kill (procps): a minimal host has only the shell's kill
    assert values("ExecReload")[-1] == "/bin/sh -c 'kill -HUP ${MAINPID}'"
    assert values("StateDirectory") == ["rotator"]
    assert values("ConfigurationDirectory") == ["rotator"]
    assert values("User") == ["rotator"]
    [watchdog] = values("WatchdogSec")
    assert re.fullmatch(r"\d+s", watchdog) and int(watchdog[:-1]) >= 10
    assert values("RestrictAddressFamilies") == ["AF_INET AF_INET6 AF_UNIX"]
    assert values("ProtectSystem") == ["strict"]
    assert values("NoNewPrivileges") == ["yes"]
    assert values("CapabilityBoundingSet") == [""]
    # the watchdog's SIGABRT must not write the daemon's secrets to a core file
    assert values("LimitCORE") == ["0"]


def test_example_config_fits_the_unit() -> None:
    example = SYSTEMD / "rotator.yaml"
    config = load_config(str(example))
    assert config.server.listen is not None
    assert config.server.listen.startswith("127.0.0.1:")
    # ProtectSystem=strict leaves only StateDirectory= writable.
    for name, store in config.stores.items():
        if store.type == "file":
            assert store.directory.is_relative_to("/var/lib/rotator"), name
    # The spool is named, and is the unit's $STATE_DIRECTORY/spool: one-off commands
    # started without the unit's environment keep grants where the daemon replays them.
    [state_directory] = values("StateDirectory")
    assert config.server.spool_dir == Path("/var/lib") / state_directory / "spool"
    # Every cred: reference is loaded by a LoadCredential= line of the unit.
    loaded = set(values("LoadCredential")) | set(values("LoadCredentialEncrypted"))
    refs = {
        parse_ref(text).target
        for text in strings(yaml.safe_load(example.read_text(encoding="utf-8")))
        if text.startswith("cred:")
    }
    assert refs
    assert refs <= loaded, f"no LoadCredential= for {sorted(refs - loaded)}"


SYSUSERS = shutil.which("systemd-sysusers")
TMPFILES = shutil.which("systemd-tmpfiles")


@pytest.mark.skipif(SYSUSERS is None or TMPFILES is None, reason="systemd tools not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles needs root to chown")
def test_sysusers_and_tmpfiles_create_the_user_and_directories(tmp_path: Path) -> None:
    """Applied to an empty root directory, not to this machine."""
    assert SYSUSERS is not None and TMPFILES is not None
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [SYSUSERS, f"--root={tmp_path}", str(SYSTEMD / "rotator.sysusers")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = (tmp_path / "etc" / "passwd").read_text(encoding="utf-8")
    entry = next(line for line in passwd.splitlines() if line.startswith("rotator:"))
    uid = int(entry.split(":")[2])
    assert 0 < uid < 1000
    assert entry.endswith(":/var/lib/rotator:/usr/sbin/nologin")
    subprocess.run(
        [TMPFILES, f"--root={tmp_path}", "--create", str(SYSTEMD / "rotator.tmpfiles")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for sub in ("var/lib/rotator", "var/lib/rotator/tokens"):
        info = (tmp_path / sub).stat()
        assert info.st_uid == uid
        assert info.st_mode & 0o777 == 0o750


def test_example_config_resolves_credentials_as_the_unit_provides_them(tmp_path: Path) -> None:
    """`rotator check --online` with $CREDENTIALS_DIRECTORY laid out as LoadCredential= does.

    The file stores' directories move from /var/lib/rotator to a temporary
    directory; everything else is the shipped example.
    """
    config = yaml.safe_load((SYSTEMD / "rotator.yaml").read_text(encoding="utf-8"))
    for store in config["stores"].values():
        relative = Path(store["directory"]).relative_to("/var/lib/rotator")
        store["directory"] = str(tmp_path / "state-directory" / relative)
        (tmp_path / "state-directory" / relative).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    names = values("LoadCredential")
    for name in names:
        secret = leakcheck.register(f"{name}-value-from-the-credstore", "credential")
        (credentials / name).write_text(secret, encoding="utf-8")
        (credentials / name).chmod(0o400)
    result = run_rotator(
        ["check", "--online", "-c", str(path)], env={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"secret references: {len(names)} of {len(names)} resolve" in result.stdout
    # Without the credentials (LoadCredential= found no file) the check names what is missing.
    (credentials / names[0]).unlink()
    result = run_rotator(
        ["check", "--online", "-c", str(path)], env={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    assert result.returncode == 1
    assert f"cred:{names[0]}" in result.stdout


def test_stop_timeout_outlasts_the_shutdown_grace() -> None:
    """SIGKILL must not cut rotations the daemon is still allowed to finish."""
    from rotator.config.fields import parse_duration

    config = load_config(str(SYSTEMD / "rotator.yaml"))
    [stop] = values("TimeoutStopSec")
    assert parse_duration(stop) > config.server.shutdown_grace + parse_duration("10s")
