"""Secret values and secret references (rotator/secrets.py)."""

from __future__ import annotations

import copy
import logging
import os
import pickle
import re
from pathlib import Path

import pytest

from rotator.errors import SecretRefError
from rotator.secrets import Secret, SecretRef, parse_ref, resolve
from tests.support import leakcheck

VALUE = leakcheck.register("s3cr3t-value-8d1e2f", "client secret")


def test_secret_never_prints_itself() -> None:
    secret = Secret(VALUE)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        "%s" % secret,  # noqa: UP031 (the old formatting must hide it too)
        "{}".format(secret),  # noqa: UP032
        str(ValueError(secret)),
        repr(ValueError(secret)),
        str([secret]),
        str({"k": secret}),
    ]
    for text in shown:
        assert VALUE not in text
        assert "***" in text
    assert secret.reveal() == VALUE


def test_secret_is_not_picklable_or_copyable() -> None:
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(Secret(VALUE))
    with pytest.raises(TypeError, match="not picklable"):
        copy.deepcopy(Secret(VALUE))


def test_secret_compares_by_value_and_wants_a_string() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + "x")
    assert Secret(VALUE) != VALUE  # a Secret is never equal to a plain string
    assert len({Secret(VALUE), Secret(VALUE)}) == 1
    assert not Secret("")
    with pytest.raises(TypeError, match="wants a str, got bytes"):
        Secret(b"raw")  # type: ignore[arg-type]


def test_secret_in_a_log_line_prints_stars(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("using %s", Secret(VALUE))
    assert "using ***" in caplog.text
    assert VALUE not in caplog.text


# -- parse_ref ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("env:IDP_SECRET", SecretRef("env", "IDP_SECRET")),
        ("file:/etc/rotator/secret", SecretRef("file", "/etc/rotator/secret")),
        ("cred:idp-secret", SecretRef("cred", "idp-secret")),
    ],
)
def test_parse_ref(text: str, ref: SecretRef) -> None:
    assert parse_ref(text) == ref
    assert str(parse_ref(text)) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("hunter2", "must be a secret reference: env:NAME, file:/absolute/path or cred:NAME"),
        ("vault:secret/x", "must be a secret reference"),
        ("env:", "must be a secret reference"),
        ("", "must be a secret reference"),
        ("file:relative/path", "file: reference needs an absolute path, got 'relative/path'"),
        ("env:A/B", "env: reference needs a plain name"),
        ("cred:../etc/shadow", "cred: reference needs a plain name"),
        ("env: NAME", "env: reference needs a plain name"),
        ("cred:..", "cred: reference needs a plain name"),
        ("cred:.", "cred: reference needs a plain name"),
        ("env:A=B", "env: reference needs a plain name"),
        ("env:NAME\n", "env: reference must not contain control characters"),
        ("file:/etc/secret\n", "file: reference must not contain control characters"),
        ("file:/etc/se\x00cret", "file: reference must not contain control characters"),
        ("cred:idp\u2028", "cred: reference must not contain control characters"),
    ],
)
def test_parse_ref_refusals(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_ref(text)
    assert fragment in str(caught.value)


# -- resolve -----------------------------------------------------------------------------


def test_env_reference() -> None:
    assert resolve(SecretRef("env", "X"), {"X": VALUE}).reveal() == VALUE


def test_env_unset_and_empty() -> None:
    with pytest.raises(SecretRefError, match="env:X: environment variable X is not set"):
        resolve(SecretRef("env", "X"), {})
    with pytest.raises(SecretRefError, match="env:X: environment variable X is empty"):
        resolve(SecretRef("env", "X"), {"X": ""})


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_TEST_SECRET", VALUE)
    assert resolve(SecretRef("env", "ROTATOR_TEST_SECRET")).reveal() == VALUE


def test_file_reference_strips_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(VALUE + "\r\n")
    path.chmod(0o600)
    assert resolve(SecretRef("file", str(path))).reveal() == VALUE
    path.write_text(VALUE + " \n\n")
    assert resolve(SecretRef("file", str(path))).reveal() == VALUE + " \n"


def test_file_missing_empty_and_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(
        SecretRefError, match=re.escape(f"file:{missing}: file {missing} does not exist")
    ):
        resolve(SecretRef("file", str(missing)))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(SecretRefError, match=re.escape(f"file {empty} is empty")):
        resolve(SecretRef("file", str(empty)))
    with pytest.raises(SecretRefError, match=r"cannot read .*IsADirectoryError"):
        resolve(SecretRef("file", str(tmp_path)))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    binary.chmod(0o600)
    with pytest.raises(SecretRefError, match="UnicodeDecodeError"):
        resolve(SecretRef("file", str(binary)))


def test_cred_reference(tmp_path: Path) -> None:
    (tmp_path / "idp").write_text(VALUE)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert resolve(SecretRef("cred", "idp"), env).reveal() == VALUE
    with pytest.raises(SecretRefError, match=r"cred:other: file .*other does not exist"):
        resolve(SecretRef("cred", "other"), env)


def test_cred_without_credentials_directory() -> None:
    with pytest.raises(SecretRefError) as caught:
        resolve(SecretRef("cred", "idp"), {})
    assert "cred:idp: $CREDENTIALS_DIRECTORY is not set" in str(caught.value)
    assert "LoadCredential=" in str(caught.value)


def test_group_readable_file_warns_with_the_path_not_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "loose-secret"
    path.write_text(VALUE)
    os.chmod(path, 0o640)
    with caplog.at_level(logging.WARNING):
        assert resolve(SecretRef("file", str(path))).reveal() == VALUE
    assert "secret file readable by other users" in caplog.text
    assert str(path) in caplog.text
    assert f"chmod 600 {path}" in caplog.text
    assert VALUE not in caplog.text
    # Once per path, not on every rotation.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resolve(SecretRef("file", str(path)))
    assert "readable by other users" not in caplog.text


def test_private_file_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tight-secret"
    path.write_text(VALUE)
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING):
        resolve(SecretRef("file", str(path)))
    assert "readable by other users" not in caplog.text


def test_a_refused_reference_is_quoted_cut_short() -> None:
    with pytest.raises(ValueError) as caught:
        parse_ref("file:" + "x" * 100_000)
    assert len(str(caught.value)) < 200
