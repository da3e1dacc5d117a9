"""``rotator check --online`` logs FaxMAX accounts in (a login spends nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.providers.faxmax.cipher import BUILTIN
from tests.commands.test_probe import faxmax_account, write_config
from tests.fakes.faxmax import FaxmaxEmulator
from tests.fakes.vendorhttp import running
from tests.support.proc import run_rotator


def secrets_of(vendor: FaxmaxEmulator) -> dict[str, str]:
    return {
        "FM_CODE": vendor.api_code,
        "FM_API_PASSWORD": vendor.api_password,
        "FM_PASSWORD": vendor.users[vendor.username],
    }


@pytest.mark.parametrize("cipher", sorted(BUILTIN))
def test_check_online_logs_in_with_the_configured_cipher(tmp_path: Path, cipher: str) -> None:
    with running(FaxmaxEmulator(cipher=cipher)) as vendor:
        config = write_config(tmp_path, faxmax_account(vendor, cipher=cipher))
        env = secrets_of(vendor)
        proc = run_rotator(["check", "--online", "-c", str(config)], env=env)
        methods = [r.path for r in vendor.requests]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"account fm: faxmax login OK (Core.login_token, form, {cipher})" in proc.stdout
    assert methods == ["/api/v1"]  # one login, nothing else
    assert not any(value in proc.stdout + proc.stderr for value in env.values())


def test_a_wrong_cipher_is_found_before_the_daemon_starts(tmp_path: Path) -> None:
    with running(FaxmaxEmulator(cipher="fernet")) as vendor:
        config = write_config(tmp_path, faxmax_account(vendor))  # aes-256-cbc, the default
        env = secrets_of(vendor)
        proc = run_rotator(["check", "--online", "-c", str(config)], env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("account fm:")]
    assert "faxmax login ERROR (Core.login_token, form, aes-256-cbc)" in line
    assert "Token cannot be decrypted" in line
    assert "`rotator probe fm` tries every cipher" in line
    assert not any(value in proc.stdout + proc.stderr for value in env.values())


def test_a_password_account_logs_in_with_core_login(tmp_path: Path) -> None:
    with running(FaxmaxEmulator()) as vendor:
        config = write_config(tmp_path, faxmax_account(vendor, password="env:FM_PASSWORD"))
        proc = run_rotator(["check", "--online", "-c", str(config)], env=secrets_of(vendor))
        sessions = len(vendor.sessions)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "account fm: faxmax login OK (Core.login, form)" in proc.stdout
    assert sessions == 1


def test_an_unresolved_secret_skips_the_login(tmp_path: Path) -> None:
    with running(FaxmaxEmulator()) as vendor:
        config = write_config(tmp_path, faxmax_account(vendor))
        proc = run_rotator(["check", "--online", "-c", str(config)], env={"FM_CODE": "c0de-123"})
        sent = len(vendor.requests)
    assert proc.returncode == 1
    assert "accounts.fm.api_password: ERROR" in proc.stdout
    assert "account fm: faxmax login not tried" in proc.stdout
    assert sent == 0
