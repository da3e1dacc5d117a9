"""The sandbox token endpoint: behaviour that is its own, not the OAuth2 emulation's."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tests.fakes.oauth2 import emulator
from tests.support.proc import wait_for


def test_a_client_gone_mid_reply_prints_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    # A killed daemon leaves its call behind; the reply finds the socket reset.
    # That is routine for a sandbox and must not print a traceback per call.
    with emulator(delay=0.3) as server:
        host, port = server.url.split("//", 1)[1].split("/", 1)[0].split(":")
        body = b"grant_type=refresh_token&refresh_token=x"
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /oauth/token HTTP/1.1\r\nHost: sandbox\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_for(lambda: server.in_flight == 1, 5, what="the call to be in flight")
            # close with RST, as a killed process's socket does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        wait_for(lambda: server.in_flight == 0, 5, what="the call to end")
        time.sleep(0.1)
    assert server.token_calls == 1
    assert "Traceback" not in capfd.readouterr().err
