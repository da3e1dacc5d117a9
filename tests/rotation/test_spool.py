from __future__ import annotations

import os
from pathlib import Path

import pytest

from rotator.errors import ConfigError
from rotator.rotation.spool import Spool
from tests.support import leakcheck


def test_round_trip_is_encrypted_and_private(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "spool")
    secret = leakcheck.register("refresh-spool-secret-value-1", "refresh token")
    spool.put("k1", "acme", "state/acme", {"refresh_token": secret, "issued_at": "x"})
    blob = (tmp_path / "spool" / "k1.grant").read_bytes()
    assert secret.encode() not in blob
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "spool" / "k1.grant").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "spool" / "spool.key").stat().st_mode & 0o777 == 0o600
    again = Spool.open(tmp_path / "spool")  # the key file is reused
    entry = again.get("k1")
    assert entry is not None and entry.record["refresh_token"] == secret
    assert [e.account for e in again.entries()] == ["acme"]
    again.remove("k1")
    assert again.get("k1") is None and list(again.entries()) == []


def test_wrong_key_or_damage_leaves_the_entry_in_place(tmp_path: Path) -> None:
    Spool.open(tmp_path, "first-key").put("k1", "acme", "state/acme", {"a": "b"})
    assert Spool.open(tmp_path, "other-key").get("k1") is None
    assert (tmp_path / "k1.grant").exists()
    (tmp_path / "k2.grant").write_bytes(b"garbage")
    assert Spool.open(tmp_path, "first-key").get("k2") is None
    assert Spool.open(tmp_path, "first-key").get("k1") is not None


def test_entry_key_depends_on_store_and_path() -> None:
    a = Spool.entry_key('{"directory": "/a"}', "state/x")
    assert a == Spool.entry_key('{"directory": "/a"}', "state/x")
    assert a != Spool.entry_key('{"directory": "/b"}', "state/x")
    assert a != Spool.entry_key('{"directory": "/a"}', "state/y")
    assert os.sep not in a


def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    Spool.open(tmp_path)
    (tmp_path / "spool.key").write_bytes(b"not base64 at all!\n")
    with pytest.raises(ConfigError, match=r"spool\.key is damaged .*32 bytes in base64"):
        Spool.open(tmp_path)
    (tmp_path / "spool.key").write_bytes(b"c2hvcnQ=\n")  # valid base64, 5 bytes
    with pytest.raises(ConfigError, match="restore it, or remove it"):
        Spool.open(tmp_path)


def test_an_unreadable_or_malformed_entry_never_stops_the_others(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    spool.put("a" * 32, "acct", "state/acct", {"refresh_token": "r1"})
    # a directory where an entry should be: reading it fails with EISDIR
    (tmp_path / f"{'0' * 32}.grant").mkdir()
    # sealed with the right key, but not an entry's shape
    blob = spool._seal("b" * 32, "acct", "state/acct", {"refresh_token": "r2"}, None)
    nonce = blob[4:16]
    wrong = b"RSP1" + nonce + spool._aead.encrypt(nonce, b'["not", "an", "entry"]', b"b" * 32)
    (tmp_path / f"{'b' * 32}.grant").write_bytes(wrong)
    assert [entry.key for entry in spool.entries()] == ["a" * 32]
