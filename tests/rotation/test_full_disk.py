"""A full disk never costs the grant: `rotator refresh` on a small tmpfs.

The spool and the state live on a tmpfs of a few hundred KiB, filled to the last
byte by a filler file. Room for the new grant is reserved before the vendor is
asked, so:

- a disk already full: the vendor is not asked, the refresh token is not spent,
  and the command says there is no room in the spool directory;
- a disk that fills up while the vendor answers: the answer goes into the
  reserved blocks (no new space), the state write fails, and the command exits
  with the new grant kept in the spool; once space is freed it lands.

Mounting needs root (CAP_SYS_ADMIN); elsewhere the tests skip, saying why.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator import cli, waits
from rotator.config import load_config
from rotator.rotation.accounts import Account, build_accounts
from rotator.rotation.spool import Spool
from rotator.secrets import Secret
from rotator.service.app import open_stores
from rotator.state import AccountState
from tests.fakes.oauth2 import OAuth2Emulator
from tests.support import leakcheck

CLIENT_ID = "disk"
SECRET = leakcheck.register("full-disk-secret-9a8b7c", "client secret")


def mounted(mount: Path) -> None:
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount(8) here: cannot make a small tmpfs to fill")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {done.stderr.strip()}")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """The small disk of the spool (and of the state, unless ``state_disk`` is used)."""
    mounted(tmp_path / "disk")
    try:
        yield tmp_path / "disk"
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "disk")], check=False)


@pytest.fixture
def state_disk(tmp_path: Path, disk: Path) -> Iterator[Path]:
    """A second small disk, for the state store."""
    mounted(tmp_path / "state-disk")
    try:
        yield tmp_path / "state-disk"
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "state-disk")], check=False)


class FillingVendor(OAuth2Emulator):
    """A vendor whose answer arrives as the disks run full (the ``fill`` files)."""

    fill: tuple[Path, ...] = ()

    def _issue(self, *args: Any, **kwargs: Any) -> None:
        for filler in self.fill:
            fill_up(filler)
        super()._issue(*args, **kwargs)


def fill_up(filler: Path) -> None:
    """Write until the filesystem has no byte left."""
    with filler.open("ab", buffering=0) as handle:
        for size in (64 * 1024, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert os.statvfs(filler.parent).f_bavail == 0


@pytest.fixture
def vendor() -> Iterator[FillingVendor]:
    server = FillingVendor(clients={CLIENT_ID: SECRET}, access_ttl=600)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def setup(
    tmp_path: Path, disk: Path, vendor: FillingVendor, state_disk: Path | None = None
) -> tuple[Path, str]:
    """A configuration with the spool (and the state) on a small disk; a seeded grant."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    config = tmp_path / "rotator.yaml"
    config.write_text(
        "\n".join(
            [
                f"server: {{spool_dir: {disk / 'spool'}}}",
                "stores:",
                f"  state: {{type: file, directory: {(state_disk or disk) / 'state'}}}",
                f"  out: {{type: file, directory: {tmp_path / 'out'}}}",
                "defaults: {state: {store: state}}",
                "accounts:",
                "  acct:",
                "    provider: oauth2",
                f"    token_url: {vendor.url}",
                f"    client_id: {CLIENT_ID}",
                f"    client_secret: file:{secret}",
                "    sinks: [{store: out, path: acct.token, format: token}]",
            ]
        )
        + "\n"
    )
    refresh = vendor.issue_grant(CLIENT_ID)
    state = AccountState(account="acct", provider="oauth2", refresh_token=Secret(refresh))
    account = _account(config)
    account.state_store.write(account.state_path, state.to_record(), expected_version=None)
    Spool.open(disk / "spool")  # its key file, while there is room
    return config, refresh


def _account(config: Path) -> Account:
    loaded = load_config(str(config))
    return build_accounts(loaded, open_stores(loaded))["acct"]


def stored(config: Path) -> AccountState:
    state, _ = _account(config).read_state()
    return state


def spooled(disk: Path) -> list[str]:
    spool = Spool.open(disk / "spool")
    return [entry.record["refresh_token"] for entry in spool.entries()]


@pytest.fixture(autouse=True)
def no_sleeping() -> Iterator[None]:
    waits.set_testing()
    yield
    waits.set_testing(False)


def test_a_full_disk_keeps_the_vendor_from_being_asked(
    tmp_path: Path, disk: Path, vendor: FillingVendor, capsys: pytest.CaptureFixture[str]
) -> None:
    config, refresh = setup(tmp_path, disk, vendor)
    fill_up(disk / "filler")
    code = cli.main(["refresh", "-c", str(config), "acct"])
    assert code == cli.EXIT_FAILURE
    assert vendor.token_calls == 0  # the refresh token was not spent
    err = capsys.readouterr().err
    assert "no room to keep the new grant" in err and str(disk / "spool") in err
    assert stored(config).refresh_token == Secret(refresh)
    grant = vendor.grant_for(refresh)
    assert grant is not None and grant.current_refresh == refresh
    assert not list((disk / "spool").glob("*.reserve"))
    # room again: the same command rotates
    (disk / "filler").unlink()
    assert cli.main(["refresh", "-c", str(config), "acct"]) == cli.EXIT_OK
    assert grant.refreshes == 1
    assert stored(config).refresh_token == Secret(grant.current_refresh)


def test_a_disk_that_fills_during_the_vendor_call_still_lands_the_grant(
    tmp_path: Path, disk: Path, vendor: FillingVendor
) -> None:
    """Spool and state on one disk: writing the answer into its reservation gives
    back the unused part of it, and the state write fits there."""
    config, refresh = setup(tmp_path, disk, vendor)
    vendor.fill = (disk / "filler",)
    assert cli.main(["refresh", "-c", str(config), "acct"]) == cli.EXIT_OK
    vendor.fill = ()
    grant = vendor.grant_for(refresh)
    assert grant is not None and grant.refreshes == 1
    assert stored(config).refresh_token == Secret(grant.current_refresh)
    assert spooled(disk) == []


def test_disks_that_fill_during_the_vendor_call_keep_the_new_grant(
    tmp_path: Path,
    disk: Path,
    state_disk: Path,
    vendor: FillingVendor,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The state on a disk of its own, both full when the answer comes: the state
    write fails, and the answer is kept in the blocks reserved before the call."""
    config, refresh = setup(tmp_path, disk, vendor, state_disk)
    vendor.fill = (disk / "filler", state_disk / "filler")
    code = cli.main(["refresh", "-c", str(config), "acct"])
    vendor.fill = ()
    assert code == cli.EXIT_FAILURE  # the state write failed: the disk is full
    assert "kept in memory and in the spool" in capsys.readouterr().err
    assert vendor.token_calls == 1
    grant = vendor.grant_for(refresh)
    assert grant is not None and grant.refreshes == 1
    # the command gave up nothing: the only copy of the new grant is in the spool
    assert stored(config).refresh_token == Secret(refresh)
    assert spooled(disk) == [grant.current_refresh]
    # room again: the next command lands it first (no second vendor call for it)
    (disk / "filler").unlink()
    (state_disk / "filler").unlink()
    assert cli.main(["refresh", "-c", str(config), "acct"]) == cli.EXIT_OK
    assert grant.refreshes == 2  # landed, then the asked-for rotation from it
    assert vendor.reuse_detected == 0 and not grant.revoked
    assert stored(config).refresh_token == Secret(grant.current_refresh)
    assert spooled(disk) == []
