"""Ciphers for FaxMAX passwordless login tokens.

FaxMAX encrypts the login JSON with the domain's API password but does not
publish the cipher, so the cipher is a per-account choice (``cipher:``):

- ``aes-256-cbc`` key = SHA-256 of the UTF-8 API password; a random 16-byte IV;
  PKCS#7 padding; the token is standard base64 of IV + ciphertext.
- ``aes-256-gcm`` the same key; a random 12-byte nonce; standard base64 of
  nonce + ciphertext + 16-byte tag.
- ``fernet`` key = URL-safe base64 of that SHA-256; the Fernet token as is.
- ``module:function`` a function ``(plaintext: bytes, api_password: str) -> str``
  found by import, for whatever the vendor turns out to use.

Each built-in has its inverse here (``decrypt``), for tests and emulators.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import re
from collections.abc import Callable

from rotator.errors import ConfigError

__all__ = ["BUILTIN", "CUSTOM", "Cipher", "decrypt", "encrypt", "importable", "load_cipher"]

#: ``(plaintext, api_password) -> token``
Cipher = Callable[[bytes, str], str]

CUSTOM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def _key(api_password: str) -> bytes:
    return hashlib.sha256(api_password.encode("utf-8")).digest()


def _aes_cbc_encrypt(plaintext: bytes, api_password: str) -> str:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher as _C
    from cryptography.hazmat.primitives.ciphers import algorithms, modes

    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = _C(algorithms.AES(_key(api_password)), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def _aes_cbc_decrypt(token: str, api_password: str) -> bytes:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher as _C
    from cryptography.hazmat.primitives.ciphers import algorithms, modes

    raw = base64.b64decode(token, validate=True)
    if len(raw) < 32 or len(raw) % 16:
        raise ValueError("not IV + whole AES blocks")
    decryptor = _C(algorithms.AES(_key(api_password)), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def _aes_gcm_encrypt(plaintext: bytes, api_password: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(_key(api_password)).encrypt(nonce, plaintext, None)
    return base64.b64encode(nonce + sealed).decode("ascii")


def _aes_gcm_decrypt(token: str, api_password: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(token, validate=True)
    if len(raw) < 12 + 16:
        raise ValueError("shorter than nonce + tag")
    return AESGCM(_key(api_password)).decrypt(raw[:12], raw[12:], None)


def _fernet_encrypt(plaintext: bytes, api_password: str) -> str:
    from cryptography.fernet import Fernet

    fernet = Fernet(base64.urlsafe_b64encode(_key(api_password)))
    return fernet.encrypt(plaintext).decode("ascii")


def _fernet_decrypt(token: str, api_password: str) -> bytes:
    from cryptography.fernet import Fernet

    fernet = Fernet(base64.urlsafe_b64encode(_key(api_password)))
    return fernet.decrypt(token.encode("ascii"))


BUILTIN: dict[str, tuple[Cipher, Callable[[str, str], bytes]]] = {
    "aes-256-cbc": (_aes_cbc_encrypt, _aes_cbc_decrypt),
    "aes-256-gcm": (_aes_gcm_encrypt, _aes_gcm_decrypt),
    "fernet": (_fernet_encrypt, _fernet_decrypt),
}


def check_name(name: str) -> str:
    """Validate a ``cipher:`` value without importing anything (config time)."""
    if name in BUILTIN or CUSTOM.fullmatch(name):
        return name
    raise ValueError(
        f"{name!r} is not a cipher; use one of {', '.join(BUILTIN)} or module:function"
    )


def load_cipher(name: str, *, path: str = "cipher") -> Cipher:
    """The encrypt function for ``name``; a custom one is imported here."""
    try:
        return importable(name)
    except ValueError as exc:
        raise ConfigError(str(exc), path=path) from None


def importable(name: str) -> Cipher:
    """The encrypt function for ``name``, or ValueError saying what would be right.

    The settings model calls it when a configuration is loaded, so a plugged-in
    cipher that cannot be imported stops ``rotator check`` (and the daemon's
    start), not the first rotation.
    """
    if name in BUILTIN:
        return BUILTIN[name][0]
    if not CUSTOM.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a cipher (use one of {', '.join(BUILTIN)} or module:function)"
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the operator's module: any failure is a config error
        why = str(exc) if isinstance(exc, ImportError) else f"it raised {type(exc).__name__}"
        raise ValueError(
            f"cannot import {module_name!r} ({why}): install it where rotator runs (its "
            f"Python path), or use one of {', '.join(BUILTIN)}"
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(
            f"{module_name} has no function {attr!r}: name a function "
            "(plaintext: bytes, api_password: str) -> str"
        )
    return _checked(function, name)


def _checked(function: Callable[..., object], name: str) -> Cipher:
    def encrypt_with(plaintext: bytes, api_password: str) -> str:
        token = function(plaintext, api_password)
        if not isinstance(token, str) or not token:
            raise TypeError(f"cipher {name} returned {type(token).__name__}, expected a str")
        return token

    return encrypt_with


def encrypt(name: str, plaintext: bytes, api_password: str) -> str:
    return load_cipher(name)(plaintext, api_password)


def decrypt(name: str, token: str, api_password: str) -> bytes:
    """The inverse of a built-in cipher; raises ValueError when the token does not decrypt."""
    from cryptography.exceptions import InvalidTag
    from cryptography.fernet import InvalidToken

    try:
        return BUILTIN[name][1](token, api_password)
    except (InvalidTag, InvalidToken, ValueError, TypeError) as exc:
        raise ValueError(f"does not decrypt with {name}: {type(exc).__name__}") from None
