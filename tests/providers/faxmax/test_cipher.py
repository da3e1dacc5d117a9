from __future__ import annotations

import base64
import hashlib
import json
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.config import load_config
from rotator.errors import ConfigError
from rotator.providers.faxmax.cipher import BUILTIN, check_name, decrypt, encrypt, load_cipher
from tests.support.proc import run_rotator

PASSWORD = "api-pw-Zt8#mL1q"


@pytest.mark.parametrize("name", sorted(BUILTIN))
@settings(max_examples=25, deadline=None)
@given(plaintext=st.binary(max_size=300), password=st.text(min_size=1, max_size=40))
def test_builtins_round_trip(name: str, plaintext: bytes, password: str) -> None:
    token = encrypt(name, plaintext, password)
    assert decrypt(name, token, password) == plaintext


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_wrong_password_or_tampering_does_not_decrypt(name: str) -> None:
    token = encrypt(name, b'{"username":"a"}', PASSWORD)
    with pytest.raises(ValueError, match=f"does not decrypt with {name}"):
        decrypt(name, token, "another password")
    with pytest.raises(ValueError):
        decrypt(name, "not base64 at all!", PASSWORD)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_each_token_is_fresh(name: str) -> None:
    assert encrypt(name, b"same", PASSWORD) != encrypt(name, b"same", PASSWORD)


def test_aes_cbc_layout_is_as_documented() -> None:
    """base64(IV(16) + AES-256-CBC(SHA-256(password)), PKCS#7) — decrypted by hand."""
    plaintext = b'{"username":"alice","exp":1,"remote_ip":"10.0.0.1"}'
    raw = base64.b64decode(encrypt("aes-256-cbc", plaintext, PASSWORD))
    key = hashlib.sha256(PASSWORD.encode()).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    assert padded[: -padded[-1]] == plaintext and 1 <= padded[-1] <= 16
    assert len(raw) == 16 + len(padded)


def test_aes_gcm_layout_is_as_documented() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(encrypt("aes-256-gcm", b"hello", PASSWORD))
    key = hashlib.sha256(PASSWORD.encode()).digest()
    assert len(raw) == 12 + 5 + 16
    assert AESGCM(key).decrypt(raw[:12], raw[12:], None) == b"hello"


def test_fernet_key_is_urlsafe_base64_of_the_digest() -> None:
    from cryptography.fernet import Fernet

    key = base64.urlsafe_b64encode(hashlib.sha256(PASSWORD.encode()).digest())
    assert Fernet(key).decrypt(encrypt("fernet", b"hello", PASSWORD).encode()) == b"hello"


@pytest.fixture
def custom_module() -> Iterator[str]:
    module = types.ModuleType("rotator_test_custom_cipher")

    def reverse_hex(plaintext: bytes, api_password: str) -> str:
        return (plaintext[::-1] + api_password.encode()).hex()

    def not_a_string(plaintext: bytes, api_password: str) -> bytes:
        return plaintext

    module.reverse_hex = reverse_hex  # type: ignore[attr-defined]
    module.not_a_string = not_a_string  # type: ignore[attr-defined]
    module.CONSTANT = 3  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_custom_cipher_is_imported_and_called(custom_module: str) -> None:
    cipher = load_cipher(f"{custom_module}:reverse_hex")
    assert cipher(b"abc", "k") == (b"cba" + b"k").hex()
    with pytest.raises(TypeError, match="expected a str"):
        load_cipher(f"{custom_module}:not_a_string")(b"abc", "k")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rot13", "not a cipher"),
        ("no_such_module_xyz:encrypt", "cannot import 'no_such_module_xyz'"),
        ("json:no_such_function", "json has no function 'no_such_function'"),
    ],
)
def test_bad_cipher_names_are_config_errors(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_cipher(name, path="accounts.fm.cipher")
    assert str(raised.value).startswith("accounts.fm.cipher: ")


def test_check_name_does_not_import() -> None:
    assert check_name("aes-256-gcm") == "aes-256-gcm"
    assert check_name("somewhere.not_imported:encrypt") == "somewhere.not_imported:encrypt"
    assert "somewhere" not in sys.modules
    with pytest.raises(ValueError, match="aes-256-cbc, aes-256-gcm, fernet"):
        check_name("aes")


def test_custom_module_constant_is_not_callable(custom_module: str) -> None:
    with pytest.raises(ConfigError, match="no function 'CONSTANT'"):
        load_cipher(f"{custom_module}:CONSTANT")
    assert json.loads(decrypt("fernet", encrypt("fernet", b"[1]", "k"), "k")) == [1]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mypkg_missing_xyz.faxmax:encrypt", "cannot import 'mypkg_missing_xyz.faxmax'"),
        ("json:no_such_function", "json has no function 'no_such_function'"),
    ],
)
def test_a_plugged_in_cipher_that_cannot_load_is_a_config_error_at_load(
    tmp_path: Path, name: str, message: str
) -> None:
    """Not only when the first rotation builds a login token: `rotator check` exits 2."""
    config = tmp_path / "rotator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "stores": {"files": {"type": "file", "directory": str(tmp_path)}},
                "accounts": {
                    "fm": {
                        "provider": "faxmax",
                        "domain": "fax.example.com",
                        "username": "svc@example.com",
                        "api_code": "env:FM_CODE",
                        "api_password": "env:FM_API_PASSWORD",
                        "remote_ip": "10.0.0.1",
                        "cipher": name,
                        "sinks": [{"store": "files", "path": "fm.json"}],
                    }
                },
            }
        )
    )
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(str(config))
    assert "accounts.fm.cipher: " in str(raised.value)
    proc = run_rotator(["check", "-c", str(config)])
    assert proc.returncode == 2, proc.stderr
    assert "accounts.fm.cipher: " in proc.stderr and message in proc.stderr
    assert "aes-256-cbc" in proc.stderr or "name a function" in proc.stderr


def test_a_plugged_in_cipher_that_imports_is_accepted(
    custom_module: str, settings_for: Callable[..., Any]
) -> None:
    name = f"{custom_module}:reverse_hex"
    settings = settings_for(
        provider="faxmax", domain="fax.example.com", username="u", password="env:P", cipher=name
    )
    assert settings.cipher == name
