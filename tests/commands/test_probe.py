"""``rotator probe``: what the vendor accepts, against the emulators; nothing stored or leaked."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import ssl
import tempfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.commands.probe import probe
from rotator.config import load_config
from rotator.providers.faxmax.cipher import BUILTIN
from tests.fakes.faxmax import FaxmaxEmulator
from tests.fakes.oauth2 import emulator as oauth2_emulator
from tests.fakes.vendorhttp import Reply, running
from tests.support import leakcheck
from tests.support.net import LoopbackHTTPServer, free_port
from tests.support.proc import ROOT, run_rotator


def write_config(tmp_path: Path, account: dict[str, Any], name: str = "fm") -> Path:
    raw = {
        "stores": {"files": {"type": "file", "directory": str(tmp_path / "store")}},
        "accounts": {name: {**account, "sinks": [{"store": "files", "path": f"{name}.json"}]}},
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def faxmax_account(vendor: FaxmaxEmulator | None, **extra: Any) -> dict[str, Any]:
    endpoint = vendor.endpoint if vendor else f"http://127.0.0.1:{free_port()}/api/v1"
    return {
        "provider": "faxmax",
        "domain": "fax.example.com",
        "endpoint": endpoint,
        "username": vendor.username if vendor else "svc@example.com",
        "api_code": "env:FM_CODE",
        "api_password": "env:FM_API_PASSWORD",
        "remote_ip": "10.1.2.3",
        **extra,
    }


def run_probe(config: Path, account: str = "fm") -> tuple[int, str]:
    """In-process; the output goes through the leak check here (and the suite's at the end)."""
    out = io.StringIO()
    code = probe(load_config(str(config)), account, out=out)
    directory = Path(tempfile.mkdtemp(prefix="probe-", dir=leakcheck.LOG_DIR))
    (directory / f"probe-{account}.log").write_text(out.getvalue())
    assert leakcheck.find_leaks(directory) == []
    return code, out.getvalue()


def use(monkeypatch: pytest.MonkeyPatch, vendor: FaxmaxEmulator) -> dict[str, str]:
    values = {
        "FM_CODE": vendor.api_code,
        "FM_API_PASSWORD": vendor.api_password,
        "FM_PASSWORD": vendor.users[vendor.username],
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.mark.parametrize("cipher", sorted(BUILTIN))
def test_probe_finds_the_cipher_the_vendor_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cipher: str
) -> None:
    with running(FaxmaxEmulator(cipher=cipher)) as vendor:
        use(monkeypatch, vendor)
        code, text = run_probe(write_config(tmp_path, faxmax_account(vendor)))
        logins = len(vendor.requests)
    assert code == 0, text
    lines = text.splitlines()
    worked = [line for line in lines if "  ok  " in line]
    assert len(worked) == 1 and worked[0].split()[:3] == ["form", "Core.login_token", cipher]
    assert "1 of 6 logins worked (6 not sent)" in text
    tail = text.split("logins worked", 1)[1]
    assert tail.split()[-6:] == [
        "transport:",
        "form",
        "login_method:",
        "Core.login_token",
        "cipher:",
        cipher,
    ]
    # the other ciphers were refused; a protocol error stopped its transport/method early
    assert "Token cannot be decrypted" in text
    assert "not tried" in text and "answered a protocol error" in text
    assert logins < 2 * 2 * len(BUILTIN)
    # it wrote nothing: no state, no sink, no lease
    assert not (tmp_path / "store").exists()


def test_probe_tries_the_password_and_both_transports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(FaxmaxEmulator(accept_json=True, cipher="fernet")) as vendor:
        use(monkeypatch, vendor)
        config = write_config(tmp_path, faxmax_account(vendor, password="env:FM_PASSWORD"))
        code, text = run_probe(config)
    assert code == 0, text
    worked = {tuple(line.split()[:3]) for line in text.splitlines() if "  ok  " in line}
    assert worked == {
        ("form", "Core.login", "-"),
        ("json", "Core.login", "-"),
        ("form", "Core.login_token", "fernet"),
        ("json", "Core.login_token", "fernet"),
    }
    assert "password is set, so the daemon logs in with Core.login" in text


def test_a_plugged_in_cipher_is_tried_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fm_vendor_cipher.py").write_text(
        "from rotator.providers.faxmax.cipher import encrypt as _encrypt\n\n\n"
        "def seal(plaintext: bytes, api_password: str) -> str:\n"
        "    return _encrypt('aes-256-gcm', plaintext, api_password)\n"
    )
    with running(FaxmaxEmulator(cipher="aes-256-gcm")) as vendor:
        values = use(monkeypatch, vendor)
        account = faxmax_account(vendor, cipher="fm_vendor_cipher:seal")
        config = write_config(tmp_path, account)
        proc = run_rotator(
            ["probe", "-c", str(config), "fm"],
            env={**values, "PYTHONPATH": f"{ROOT}:{tmp_path}"},
        )
    assert proc.returncode == 0, proc.stderr
    worked = [line.split()[:3] for line in proc.stdout.splitlines() if "  ok  " in line]
    assert worked == [
        ["form", "Core.login_token", "fm_vendor_cipher:seal"],
        ["form", "Core.login_token", "aes-256-gcm"],
    ]
    for value in values.values():
        assert value not in proc.stdout + proc.stderr


def test_a_dead_endpoint_exits_1_with_a_clear_table(tmp_path: Path) -> None:
    config = write_config(tmp_path, faxmax_account(None, password="env:FM_PASSWORD"))
    env = {"FM_CODE": "code-Dead-0001", "FM_API_PASSWORD": "pw-Dead-0002", "FM_PASSWORD": "x"}
    proc = run_rotator(["probe", "-c", str(config), "fm"], env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "endpoint http://127.0.0.1:" in out and "cannot connect" in out
    rows = [line for line in out.splitlines() if "the endpoint is unreachable" in line]
    assert len(rows) == 2 * (1 + 2 * len(BUILTIN))  # every combination, none sent
    assert all("not tried" in row for row in rows)
    assert "nothing worked" in out
    assert "code-Dead-0001" not in out + proc.stderr


def test_vendor_text_that_echoes_a_secret_is_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(FaxmaxEmulator()) as vendor:
        values = use(monkeypatch, vendor)
        echo = f"code {vendor.api_code} with key {vendor.api_password} is wrong"
        vendor.fail_next(
            Reply(200, {"jsonrpc": "2.0", "error": {"code": 7, "message": echo}, "id": 1}), 20
        )
        code, text = run_probe(write_config(tmp_path, faxmax_account(vendor)))
    assert code == 1
    assert "code *** with key *** is wrong" in text
    for value in values.values():
        assert value not in text


def test_nothing_worked_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running(FaxmaxEmulator()) as vendor:
        use(monkeypatch, vendor)
        monkeypatch.setenv("FM_CODE", leakcheck.register("code-wrong-4242", "api code"))
        code, text = run_probe(write_config(tmp_path, faxmax_account(vendor)))
    assert code == 1
    assert "Wrong API code" in text and "nothing worked" in text


# --- the OAuth2 vendors: what can be checked without spending a grant ---------------------------


def test_client_credentials_one_harmless_token_call(tmp_path: Path) -> None:
    secret = leakcheck.register("probe-client-secret-77Aa", "client secret")
    with oauth2_emulator(clients={"svc": secret}) as idp:
        account = {
            "provider": "oauth2",
            "token_url": idp.url,
            "grant": "client_credentials",
            "client_id": "svc",
            "client_secret": "env:PROBE_SECRET",
        }
        config = write_config(tmp_path, account, name="idp")
        proc = run_rotator(["probe", "-c", str(config), "idp"], env={"PROBE_SECRET": secret})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "token endpoint" in proc.stdout and "(plain HTTP, no TLS)" in proc.stdout
    assert "client_credentials grant" in proc.stdout and "dropped, not stored" in proc.stdout
    assert not (tmp_path / "store").exists()


def test_a_refresh_token_grant_is_never_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_SECRET", leakcheck.register("probe-secret-Qq19", "client secret"))
    with oauth2_emulator(clients={"svc": "probe-secret-Qq19"}) as idp:
        account = {
            "provider": "oauth2",
            "token_url": idp.url,
            "client_id": "svc",
            "client_secret": "env:PROBE_SECRET",
        }
        code, text = run_probe(write_config(tmp_path, account, name="idp"), "idp")
        assert idp.token_calls == 0
    assert code == 0, text
    (row,) = [line for line in text.splitlines() if line.startswith("refresh_token grant")]
    assert row.split()[2:4] == ["not", "tried"]
    assert "it would spend the stored refresh token" in row


def test_faxplus_prints_the_authorize_url(tmp_path: Path) -> None:
    account = {
        "provider": "faxplus",
        "client_id": "APIK-probe-1",
        "client_secret": "env:FP_SECRET",
        "enhanced_security": False,
        "redirect_uri": "https://rotator.example.com/oauth/callback",
        "token_url": f"http://127.0.0.1:{free_port()}/token",
        "api_base": f"http://127.0.0.1:{free_port()}/v3",
    }
    config = write_config(tmp_path, account, name="fp")
    proc = run_rotator(["probe", "-c", str(config), "fp"], env={"FP_SECRET": "fp-secret-XY12"})
    assert proc.returncode == 1  # the token endpoint does not answer
    assert "authorize URL" in proc.stdout
    assert "client_id=APIK-probe-1" in proc.stdout and "scope=all" in proc.stdout
    assert "it would spend the stored refresh token" in proc.stdout
    assert "API (no token sent)" in proc.stdout
    assert "/v3/accounts/self: cannot connect" in proc.stdout


# --- TLS: a certificate or hostname the client refuses is named ---------------------------------


def _certificate(tmp_path: Path, names: list[str]) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Any(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("names", "trust", "named"),
    [
        (["127.0.0.1"], False, "self-signed certificate"),
        (["elsewhere.test"], True, "mismatch"),
        (["127.0.0.1"], True, ""),
    ],
)
def test_tls_failures_are_named(tmp_path: Path, names: list[str], trust: bool, named: str) -> None:
    cert_file, key_file = _certificate(tmp_path, names)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = LoopbackHTTPServer(_Any, name="tls")
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    account: dict[str, Any] = {
        "provider": "bifit",
        "username": "79990001122",
        "token_url": f"https://127.0.0.1:{server.port}/token",
    }
    if trust:
        account["ca_bundle"] = str(cert_file)
    with server:
        code, text = run_probe(write_config(tmp_path, account, name="kassa"), "kassa")
    if named:
        assert code == 1, text
        assert "TLS: the certificate was refused" in text and named in text
    else:
        assert code == 0, text
        assert "answered HTTP 405 (TLS verified)" in text
    (row,) = [line for line in text.splitlines() if line.startswith("password grant")]
    assert "not tried" in row


def test_an_unresolved_secret_reference_stops_the_probe_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(FaxmaxEmulator()) as vendor:
        use(monkeypatch, vendor)
        monkeypatch.delenv("FM_API_PASSWORD")
        code, text = run_probe(write_config(tmp_path, faxmax_account(vendor)))
        sent = len(vendor.requests)
    assert code == 1 and sent == 0
    assert "accounts.fm.api_password: ERROR" in text and "FM_API_PASSWORD" in text
    assert "nothing was sent" in text


def test_a_personal_access_token_is_read_checked_and_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.faxplus import FaxPlusEmulator

    with running(FaxPlusEmulator()) as vendor:
        token = vendor.personal_access_token()
        monkeypatch.setenv("FP_PAT", token)
        account = {
            "provider": "faxplus-pat",
            "token": "env:FP_PAT",
            "expires_at": "2099-01-01T00:00:00Z",
            "api_base": vendor.api_base,
        }
        code, text = run_probe(write_config(tmp_path, account, name="pat"), "pat")
        vendor.revoke_all()
        refused, refused_text = run_probe(write_config(tmp_path, account, name="pat"), "pat")
    assert code == 0, text
    (row,) = [line for line in text.splitlines() if line.startswith("token at /accounts/self")]
    assert "ok" in row.split() and "expires 2099-01-01T00:00:00Z" in row
    assert refused == 1 and "refused" in refused_text
    assert token not in text + refused_text
