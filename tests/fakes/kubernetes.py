"""A Kubernetes API server that does one thing: TokenReview.

OpenBao's Kubernetes auth method verifies a pod's service account JWT by
POSTing it to ``/apis/authentication.k8s.io/v1/tokenreviews`` on the cluster's
API server, authenticated with the reviewer's own JWT. This emulator answers
that call the way the API server does
(https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-review-v1/):
``201`` with ``status.authenticated`` true and the service account's user for a
token it issued, ``authenticated: false`` for any other token, ``401`` when the
reviewer's bearer token is wrong. It records every review it was asked for.

:func:`service_account_jwt` makes a JWT with the claims OpenBao reads before it
asks for the review (namespace, service account name and uid).
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import secrets
import threading
from typing import Any

from tests.support import leakcheck
from tests.support.net import LoopbackHTTPServer

__all__ = ["FakeKubernetes", "service_account_jwt"]


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def service_account_jwt(namespace: str, name: str, uid: str) -> str:
    claims = {
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "jti": secrets.token_hex(8),
    }
    signature = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    jwt = f"{_b64({'alg': 'RS256', 'kid': 'fake'})}.{_b64(claims)}.{signature}"
    return leakcheck.register(jwt, "kubernetes service account jwt")


def _self_signed_ca() -> str:
    """OpenBao wants a CA certificate for the API server even over plain http."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kubernetes-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class FakeKubernetes:
    """``with FakeKubernetes() as k8s:`` — ``k8s.url``, ``k8s.ca_pem``,
    ``k8s.reviewer_jwt``; :meth:`issue` makes a service account token it vouches for."""

    def __init__(self) -> None:
        self.ca_pem = _self_signed_ca()
        self.reviewer_jwt = service_account_jwt("kube-system", "token-reviewer", "uid-reviewer")
        self.issued: dict[str, tuple[str, str, str]] = {}
        self.reviews: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    self._answer(404, {"kind": "Status", "status": "Failure", "code": 404})
                    return
                if self.headers.get("Authorization") != f"Bearer {fake.reviewer_jwt}":
                    self._answer(401, {"kind": "Status", "status": "Failure", "code": 401})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                token = str((body.get("spec") or {}).get("token") or "")
                with fake._lock:
                    fake.reviews.append(body)
                    who = fake.issued.get(token)
                status: dict[str, Any] = {"authenticated": False}
                if who is not None:
                    namespace, name, uid = who
                    status = {
                        "authenticated": True,
                        "user": {
                            "username": f"system:serviceaccount:{namespace}:{name}",
                            "uid": uid,
                            "groups": ["system:serviceaccounts"],
                        },
                    }
                self._answer(
                    201,
                    {
                        "kind": "TokenReview",
                        "apiVersion": "authentication.k8s.io/v1",
                        "spec": {"token": ""},
                        "status": status,
                    },
                )

            def _answer(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._http = LoopbackHTTPServer(Handler)
        self.url = self._http.url

    def issue(self, namespace: str, name: str) -> str:
        uid = f"uid-{secrets.token_hex(4)}"
        jwt = service_account_jwt(namespace, name, uid)
        with self._lock:
            self.issued[jwt] = (namespace, name, uid)
        return jwt

    def __enter__(self) -> FakeKubernetes:
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.stop()
