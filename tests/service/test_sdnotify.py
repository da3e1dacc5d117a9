from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.service.sdnotify import Notifier, Watchdog


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_outside_systemd_everything_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("1 account") is False
    assert notifier.watchdog_interval is None
    assert Watchdog(notifier, lambda: True).start() is False


def test_ready_status_reloading_stopping(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("12 accounts, 0 failing")
    assert received(sock) == {"READY": "1", "STATUS": "12 accounts, 0 failing"}
    assert notifier.status("12 accounts, 1 failing")
    assert received(sock) == {"STATUS": "12 accounts, 1 failing"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    message = received(sock)
    assert message["RELOADING"] == "1"
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(message["MONOTONIC_USEC"]) <= after
    assert notifier.stopping()
    assert received(sock) == {"STOPPING": "1"}


def test_abstract_namespace_socket() -> None:
    name = f"rotator-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == {"READY": "1"}


def test_a_vanished_socket_never_raises(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.ready() is False
    assert notifier.stopping() is False


def test_watchdog_pings_at_half_the_interval_while_alive(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(env)
    assert notifier.watchdog_interval == pytest.approx(0.2)
    alive = [True]
    pauses: list[float] = []

    def pause(stop: threading.Event, seconds: float) -> bool:
        pauses.append(seconds)
        return stop.wait(seconds)

    dog = Watchdog(notifier, lambda: alive[0], pause=pause)
    assert dog.start()
    try:
        for _ in range(3):
            assert received(sock) == {"WATCHDOG": "1"}
        # the first ping at once, then one every half interval
        assert pauses[:2] == [pytest.approx(0.1)] * 2
        alive[0] = False
        sock.settimeout(0.2)  # flush a ping already in flight, then expect silence
        try:
            while True:
                sock.recv(4096)
        except TimeoutError:
            pass
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        dog.stop()


def test_watchdog_for_another_pid_is_ignored(notify_socket: tuple[socket.socket, str]) -> None:
    _, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval is None
