"""rotator/rotation/spooldir.py: the daemon and every one-off command share one spool,
or the command refuses before a refresh token is spent."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rotator.errors import ConfigError
from rotator.rotation.spooldir import SpoolPlace, spool_dir, spool_place
from tests.support import leakcheck

#: how a one-off command can be started, as the environment it then has; the daemon's
#: unit (StateDirectory=rotator) always has STATE_DIRECTORY=/var/lib/rotator
HOME = "/var/lib/rotator"  # the service user's home (systemd/rotator.sysusers)
STARTS: dict[str, tuple[dict[str, str], str | None]] = {
    # environment -> the spool it gets, or None: refused
    "systemd-run -p StateDirectory=rotator": (
        {"INVOCATION_ID": "1f", "HOME": HOME, "STATE_DIRECTORY": HOME},
        f"{HOME}/spool",
    ),
    "systemd-run without StateDirectory=": ({"INVOCATION_ID": "1f", "HOME": HOME}, None),
    "sudo -u rotator": ({"SUDO_UID": "1000", "HOME": HOME}, None),
    "kubectl exec (the pod's env)": ({"STATE_DIRECTORY": HOME, "HOME": "/"}, f"{HOME}/spool"),
    "a user's own shell": ({"HOME": "/home/op"}, "/home/op/.local/state/rotator/spool"),
    "a user's own shell with XDG_STATE_HOME": (
        {"HOME": "/home/op", "XDG_STATE_HOME": "/home/op/st"},
        "/home/op/st/rotator/spool",
    ),
}


@pytest.mark.parametrize("start", sorted(STARTS))
@pytest.mark.parametrize("uid", [0, 997])  # root, and a service's system user
def test_every_process_spools_where_the_daemon_looks_or_refuses(start: str, uid: int) -> None:
    environ, expected = STARTS[start]
    # server.spool_dir wins wherever the command runs: the shipped config sets it
    assert spool_dir(Path("/srv/spool"), environ, uid) == Path("/srv/spool")
    # a person's own account is never refused (a desktop may leak INVOCATION_ID)
    assert spool_dir(None, environ, 1000) == spool_place(None, environ, 1000).directory
    if expected is not None:
        assert spool_dir(None, environ, uid) == Path(expected)
        assert spool_place(None, environ, uid).directory == Path(expected)
        return
    with pytest.raises(ConfigError) as refused:
        spool_dir(None, environ, uid)
    with pytest.raises(ConfigError):
        spool_place(None, environ, uid)  # one resolution: no way around the refusal
    message = str(refused.value)
    # names both paths and both fixes
    assert message.startswith("server.spool_dir: ")
    assert f"{HOME}/.local/state/rotator/spool" in message
    assert "$STATE_DIRECTORY/spool (the shipped unit: /var/lib/rotator/spool)" in message
    assert "set server.spool_dir" in message and "-p StateDirectory=rotator" in message


def test_the_spool_place_says_what_chose_it() -> None:
    env = {"STATE_DIRECTORY": "/a:/b", "HOME": "/h"}
    assert spool_place(Path("/x"), env, 0) == SpoolPlace(Path("/x"), "server.spool_dir")
    assert spool_place(None, env, 0) == SpoolPlace(Path("/a/spool"), "$STATE_DIRECTORY")
    assert spool_place(None, {"HOME": "/h"}, 0) == SpoolPlace(
        Path("/h/.local/state/rotator/spool"), "per-user"
    )


def _one_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPOOL_CMD_SECRET", leakcheck.register("spool-cmd-secret-5d1e", "secret"))
    path = tmp_path / "rotator.yaml"
    path.write_text(
        f"stores: {{files: {{type: file, directory: {tmp_path / 'store'}}}}}\n"
        "accounts:\n"
        "  idp-api:\n"
        "    provider: oauth2\n"
        "    token_url: http://127.0.0.1:9/token\n"
        "    client_id: svc\n"
        "    client_secret: env:SPOOL_CMD_SECRET\n"
        "    sinks: [{store: files, path: idp.json}]\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("command", ["refresh", "import"])
def test_commands_that_spool_refuse_before_touching_anything(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`systemd-run -p User=rotator rotator refresh` without StateDirectory=: exit 2."""
    from rotator.cli import main

    config = _one_account(tmp_path, monkeypatch)
    for name in ("STATE_DIRECTORY", "XDG_STATE_HOME", "SUDO_UID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    monkeypatch.setattr("os.geteuid", lambda: 997)  # the service's system user
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("sys.stdin", io.StringIO("seeded-refresh-token-9c2f\n"))
    assert main([command, "-c", str(config), "idp-api"]) == 2
    err = capsys.readouterr().err
    assert "server.spool_dir" in err and str(tmp_path / "home" / ".local") in err
    # nothing was written: no spool made where no daemon looks, no lease, no state
    assert not (tmp_path / "home").exists()
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))
    # the same command with the daemon's spool named in the configuration goes on
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "lib"))
    monkeypatch.setattr("sys.stdin", io.StringIO("seeded-refresh-token-9c2f\n"))
    main([command, "-c", str(config), "idp-api"])
    assert (tmp_path / "lib" / "spool" / "spool.key").exists()


@pytest.mark.parametrize("start", sorted(STARTS))
@pytest.mark.parametrize("configured", [False, True])
def test_the_daemon_and_a_command_open_one_spool_or_the_command_is_refused(
    start: str,
    configured: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The daemon (``rotator run``) and a one-off command resolve the spool through one
    function: the same directory, or the command's refusal (exit 2, before anything
    starts) where the daemon's spool is one no command would find."""
    from rotator.commands.common import open_rotator
    from rotator.config import load_config
    from rotator.service.app import open_spool

    path = _one_account(tmp_path, monkeypatch)
    if configured:
        path.write_text(f"server: {{spool_dir: {tmp_path / 'spool'}}}\n" + path.read_text())
    environ, expected = STARTS[start]
    for name in ("STATE_DIRECTORY", "XDG_STATE_HOME", "SUDO_UID", "INVOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():  # the start's paths, under tmp_path
        here = value.replace(HOME, str(tmp_path / "lib")).replace("/home/op", str(tmp_path))
        monkeypatch.setenv(name, here)
    monkeypatch.setattr("os.geteuid", lambda: 997)  # the service's system user
    config = load_config(str(path))
    if expected is None and not configured:
        with pytest.raises(ConfigError) as by_command:
            open_rotator(config)
        assert "set server.spool_dir" in str(by_command.value)
        # the daemon is not refused (a unit that ran before an upgrade still runs): its
        # spool is its own, where it resolves, and it says no one-off will find it
        place = spool_place(config.server.spool_dir, daemon=True)
        assert place.source == "per-user" and place.unshared
        assert open_spool(config, daemon=True).directory == place.directory
        return
    command = open_rotator(config)
    try:
        assert command.spool is not None
        assert open_spool(config).directory == command.spool.directory
        if configured:
            assert command.spool.directory == tmp_path / "spool"
    finally:
        command.http.close()
