"""Partitioned replicas: who owns which account, and which jobs move when the group changes.

The pure parts (the change between two shares, the shares of a ring) are tested
with hypothesis; :class:`Replica` against a real ``redis-server`` (started on a
free loopback port, stopped by PID), each replica stepped by hand so a test
decides when the group is looked at; the daemon's gate and job moves on a real
daemon's scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.config.models import CoordinationSettings
from rotator.service.coordination import Change, Replica, move_jobs, repartition, share_of
from rotator.service.coordination_backend import check_backend, connect
from tests.support.servers import RedisServer

NAMES = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=8)


# -- pure ------------------------------------------------------------------------------


@given(before=st.frozensets(NAMES), after=st.frozensets(NAMES))
def test_a_change_turns_the_old_share_into_the_new_one(
    before: frozenset[str], after: frozenset[str]
) -> None:
    change = repartition(before, after)
    assert (before - change.lost) | change.gained == after
    assert not change.gained & change.lost
    assert change.gained.isdisjoint(before) and change.lost <= before
    assert bool(change) == (before != after)


@settings(max_examples=50, deadline=None)
@given(
    members=st.lists(st.binary(min_size=1, max_size=6), min_size=2, max_size=5, unique=True),
    accounts=st.frozensets(NAMES, min_size=1, max_size=200),
    gone=st.integers(min_value=0, max_value=4),
)
def test_shares_cover_every_account_once_and_a_departure_moves_only_its_share(
    members: list[bytes], accounts: frozenset[str], gone: int
) -> None:
    """The ring's shares are disjoint and cover the accounts; when a member leaves,
    the others keep what they had and split only the departed member's share."""
    from tooz.hashring import HashRing

    def shares(ring: HashRing, who: list[bytes]) -> dict[bytes, frozenset[str]]:
        return {
            m: share_of(accounts, lambda name, m=m: m in ring.get_nodes(name.encode())) for m in who
        }

    ring = HashRing(members)
    before = shares(ring, members)
    assert sum(len(s) for s in before.values()) == len(accounts)
    assert frozenset().union(*before.values()) == accounts
    departed = members[gone % len(members)]
    ring.remove_node(departed)
    survivors = [m for m in members if m != departed]
    after = shares(ring, survivors)
    assert frozenset().union(*after.values()) == accounts
    for member in survivors:
        change = repartition(before[member], after[member])
        assert change.lost == frozenset(), "a survivor lost accounts to a departure"
        assert change.gained <= before[departed]


# -- a replica against a real Redis ----------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def coordination(url: str, group: str, **extra: str) -> CoordinationSettings:
    return CoordinationSettings.model_validate(
        {"url": url, "group": group, "membership_timeout": "3s", "watch_interval": "1s", **extra}
    )


ACCOUNTS = tuple(f"acct-{i}" for i in range(600))


def replicas(
    url: str, group: str, count: int, accounts: list[str], clock: Clock | None = None
) -> tuple[list[Replica], list[list[Change]]]:
    seen: list[list[Change]] = [[] for _ in range(count)]
    made = [
        Replica(
            coordination(url, group),
            accounts=lambda: accounts,
            on_change=seen[i].append,
            monotonic=clock or time.monotonic,
        )
        for i in range(count)
    ]
    return made, seen


def settle(*members: Replica) -> None:
    """Each joins, then each sees the whole group twice in a row and takes its share."""
    for _ in range(3):
        for replica in members:
            replica.step()


def test_three_replicas_share_the_accounts_and_take_over_a_dead_ones(
    redis: RedisServer,
) -> None:
    accounts = list(ACCOUNTS)
    alive, seen = replicas(redis.url, "takeover", 3, accounts)
    try:
        for replica in alive:
            replica.step()
            assert replica.owned == frozenset(), "a share from a group seen once"
        for replica in alive:
            replica.step()  # the first ones to join now see the later ones: still no share
        assert [bool(r.owned) for r in alive] == [False, False, True]
        for replica in alive:
            replica.step()  # the same group, seen twice by everyone: each takes its share
        shares = [r.owned for r in alive]
        assert [len(r.members) for r in alive] == [3, 3, 3]
        assert sum(map(len, shares)) == len(accounts)
        assert frozenset().union(*shares) == frozenset(accounts)
        assert all(len(accounts) / 6 < len(s) < len(accounts) / 2 for s in shares), [
            len(s) for s in shares
        ]
        # a dead replica: its heart stops, it never leaves; tooz drops it after the timeout
        dead = alive.pop()
        dead._coordinator.heart.stop()
        time.sleep(3.3)
        for replica in alive:
            change = replica.step()
            assert change.lost == frozenset()
            assert change.gained <= dead.owned
        assert frozenset().union(*(r.owned for r in alive)) == frozenset(accounts)
        assert sum(len(r.owned) for r in alive) == len(accounts)
        assert all(len(r.members) == 2 for r in alive)
        # nothing changed: no change, no call
        calls = [len(s) for s in seen]
        for replica in alive:
            assert not replica.step()
        assert [len(s) for s in seen] == calls
    finally:
        for replica in [*alive, dead]:
            replica.stop()


class _Read:
    def __init__(self, value: object) -> None:
        self.value = value

    def get(self, timeout: float | None = None) -> object:
        return self.value


def interleaved(coordinator: Any, meanwhile: Callable[[], None]) -> Any:
    """A real tooz coordinator whose first membership read is followed at once by
    ``meanwhile`` (another replica joins or leaves at the worst moment of this one's join)."""
    read = coordinator.get_members
    pending = [meanwhile]

    def get_members(group: bytes) -> _Read:
        members = read(group).get()
        if pending:
            pending.pop()()
        return _Read(members)

    coordinator.get_members = get_members  # the instance's: tooz's own calls come here too
    return coordinator


@pytest.mark.parametrize("other", ["joins", "leaves"])
def test_a_member_that_comes_or_goes_during_a_join_is_seen_on_the_next_look(
    redis: RedisServer, other: str
) -> None:
    """tooz's partitioner reads the members, then reads them again as the baseline of its
    join/leave watch: a member that came or went between the two reads was never seen
    (replicas started together under load missed one another for good). Each look reads
    the whole membership."""
    accounts = list(ACCOUNTS[:300])
    group = f"interleaved-{other}"
    (second,), _ = replicas(redis.url, group, 1, accounts)
    if other == "leaves":
        settle(second)
    meanwhile = second.step if other == "joins" else second.stop
    first = Replica(
        coordination(redis.url, group),
        accounts=lambda: accounts,
        on_change=lambda change: None,
        connect=lambda settings, member: interleaved(connect(settings, member), meanwhile),
    )
    try:
        if other == "joins":
            settle(first, second)
            assert first.members == second.members == {first.member, second.member}
            assert first.owned.isdisjoint(second.owned)
            assert first.owned | second.owned == frozenset(accounts)
        else:
            settle(first)
            assert first.members == {first.member}
            assert first.owned == frozenset(accounts), "accounts left to a member that left"
    finally:
        first.stop()
        second.stop()


def test_a_replica_that_leaves_hands_its_share_over_at_once(redis: RedisServer) -> None:
    accounts = list(ACCOUNTS[:200])
    (first, second), _ = replicas(redis.url, "leave", 2, accounts)
    try:
        settle(first, second)
        assert len(first.owned) + len(second.owned) == len(accounts)
        had = second.owned
        second.stop()  # a SIGTERM: leaves the group, no timeout to wait for
        change = first.step()
        assert change.gained == had and change.lost == frozenset()
        assert first.owned == frozenset(accounts)
    finally:
        first.stop()


def test_accounts_added_by_a_reload_are_shared_on_the_next_look(redis: RedisServer) -> None:
    accounts = list(ACCOUNTS[:100])
    (first, second), _ = replicas(redis.url, "reload", 2, accounts)
    try:
        settle(first, second)
        accounts += [f"new-{i}" for i in range(100)]
        del accounts[:10]
        changes = [first.step(), second.step()]
        gained = changes[0].gained | changes[1].gained
        lost = changes[0].lost | changes[1].lost
        assert gained == {f"new-{i}" for i in range(100)}
        assert lost == {f"acct-{i}" for i in range(10)}
        assert first.owned | second.owned == frozenset(accounts)
    finally:
        first.stop()
        second.stop()


def test_an_outage_keeps_the_share_then_the_replica_joins_again(tmp_path: Path) -> None:
    """The backend goes away: the replica keeps scheduling its share and says it is
    not ready once the membership timeout has passed; when the backend is back,
    the group has forgotten it (a fresh Redis here), and it joins again."""
    clock = Clock()
    accounts = list(ACCOUNTS[:50])
    with RedisServer() as server:
        (replica,), _ = replicas(server.url, "outage", 1, accounts, clock)
        try:
            replica.step()
            replica.step()
            assert replica.readiness()[0]
            assert replica.owned == frozenset(accounts)
            server.stop()
            with pytest.raises(Exception, match=r"(?i)connect"):
                replica.step()
            assert replica.owned == frozenset(accounts), "the share was dropped"
            assert replica.readiness()[0], "not ready before the membership timeout"
            clock.now += 3.5
            ready, reason = replica.readiness()
            assert not ready and "unreachable" in reason and "50 accounts" in reason
            server.start()
            replica.step()
            assert replica.readiness()[0]
            assert replica.members == {replica.member}
            assert replica.owned == frozenset(accounts)
        finally:
            replica.stop()


def test_a_replica_not_yet_in_the_group_is_not_ready_and_owns_nothing() -> None:
    replica = Replica(
        coordination("redis://127.0.0.1:9", "never"), accounts=lambda: ACCOUNTS, on_change=print
    )
    assert replica.readiness() == (False, "not yet in the coordination group")
    assert not replica.owns(ACCOUNTS[0])


def test_check_online_reads_the_group_and_joins_nothing(redis: RedisServer) -> None:
    (member,), _ = replicas(redis.url, "checked", 1, list(ACCOUNTS[:5]))
    try:
        member.step()
        ok, said = check_backend(coordination(redis.url, "checked"))
        assert ok and "group 'checked' has 1 members" in said
        ok, said = check_backend(coordination(redis.url, "empty"))
        assert ok and "has 0 members" in said
        member.step()
        assert member.members == {member.member}, "the check joined the group"
    finally:
        member.stop()
    from tests.support.net import free_port

    ok, said = check_backend(coordination(f"redis://127.0.0.1:{free_port()}", "x"))
    assert not ok and said.startswith("redis backend unreachable: ")


def test_a_password_in_a_referenced_url_never_reaches_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support import leakcheck
    from tests.support.net import free_port

    password = leakcheck.register("redis-pw-Qx81zz", "redis password")
    monkeypatch.setenv("ROTATOR_TEST_REDIS", f"redis://:{password}@127.0.0.1:{free_port()}")
    ok, said = check_backend(coordination("env:ROTATOR_TEST_REDIS", "x"))
    assert not ok
    assert password not in said


# -- the daemon's side: the gate and the moved jobs -------------------------------------


def test_the_daemon_schedules_only_what_it_owns_and_moves_jobs_on_a_change(
    tmp_path: Path,
) -> None:
    from rotator.service.app import build_daemon
    from tests.service.test_daemon import write_config
    from tests.support.net import wait_until

    config = write_config(tmp_path, "http://127.0.0.1:9/token", accounts=("alpha", "beta"))
    daemon = build_daemon(str(config))
    owned = {"alpha"}
    daemon.owns = owned.__contains__
    daemon.start()
    scheduler = daemon.scheduler
    later = datetime.now(UTC) + timedelta(hours=1)
    try:
        daemon._schedule("alpha", later)
        daemon._schedule("beta", later)
        assert scheduler.get_job("alpha") is not None
        assert scheduler.get_job("beta") is None, "a job for an account owned elsewhere"
        # the group changes: beta comes here, alpha goes
        owned.clear()
        owned.add("beta")
        plan = move_jobs(daemon, repartition({"alpha"}, {"beta"}))
        assert scheduler.get_job("alpha") is None
        # beta's first run goes through the start's plan (its order and spreading:
        # test_coordination_takeover.py), then schedules its next run
        assert plan is not None
        wait_until(plan.finished.is_set, what="beta looked at")
        wait_until(lambda: scheduler.get_job("beta") is not None, what="beta's next run")
        assert move_jobs(daemon, repartition({"beta"}, {"beta"})) is None  # nothing gained
        # a rotation of alpha still in flight finishes without scheduling another
        daemon._job("alpha")
        assert scheduler.get_job("alpha") is None
    finally:
        daemon.stop("test")


def test_without_coordination_tooz_is_never_imported(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.service.test_daemon import write_config

    config = write_config(tmp_path, "http://127.0.0.1:9/token")
    code = (
        "import sys\n"
        "from rotator.cli import main\n"
        "from rotator.service.app import build_daemon\n"
        f"build_daemon({str(config)!r})\n"
        "print('loaded:', *(m for m in ('tooz', 'redis', 'rotator.service.coordination')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["loaded:"]


def test_a_replica_daemon_says_its_share_in_readyz_and_metrics(
    tmp_path: Path, redis: RedisServer
) -> None:
    """The wiring of ``rotator run``: the replica joins on start, schedules its
    share, answers /readyz with its place in the group, exports its metrics,
    and leaves the group on stop."""
    import httpx

    from rotator.service.app import build_service
    from tests.service.test_daemon import write_config
    from tests.support.net import free_port, wait_until

    port = free_port()
    config = write_config(tmp_path, "http://127.0.0.1:9/token", accounts=("alpha", "beta"))
    text = config.read_text().replace(
        "server: {",
        f"server: {{listen: '127.0.0.1:{port}', coordination: {{url: '{redis.url}', "
        "group: wired, membership_timeout: 3s, watch_interval: 0.2s}, ",
        1,
    )
    config.write_text(text)
    service = build_service(str(config))
    daemon = service.daemon
    daemon.start()
    try:
        wait_until(lambda: daemon.owns("alpha") and daemon.owns("beta"), what="the share")
        assert daemon.rotator.lease_every_grant, "a replica must lease every grant"
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert "one of 1 replicas, 2 accounts" in ready.text
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "rotator_replica_members 1.0" in metrics
        assert "rotator_replica_owned_accounts 2.0" in metrics
        assert "rotator_replica_coordination_up 1.0" in metrics
    finally:
        daemon.stop("test")
    (watcher,), _ = replicas(redis.url, "wired", 1, ["alpha"])
    try:
        watcher.step()
        assert watcher.members == {watcher.member}, "the stopped replica is still in the group"
    finally:
        watcher.stop()


def test_rotator_check_online_says_whether_the_backend_answers(
    tmp_path: Path, redis: RedisServer
) -> None:
    from tests.service.test_daemon import write_config
    from tests.support.net import free_port
    from tests.support.proc import run_rotator

    config = write_config(tmp_path, "http://127.0.0.1:9/token", accounts=())
    body = config.read_text()
    for url, code, said in (
        (redis.url, 0, "coordination: OK redis backend answers; group 'online' has 0 members"),
        (f"redis://127.0.0.1:{free_port()}", 1, "coordination: ERROR redis backend unreachable"),
    ):
        config.write_text(
            body.replace(
                "server: {",
                f"server: {{coordination: {{url: '{url}', group: online, "
                "membership_timeout: 3s}, ",
                1,
            )
        )
        done = run_rotator(["check", "-c", str(config), "--online"])
        assert done.returncode == code, done.stdout + done.stderr
        assert said in done.stdout


@pytest.mark.parametrize(
    ("coordination", "complaint"),
    [
        (
            "{url: 'redis://:pw-Zq7761@redis:6379'}",
            "server.coordination.url: must be a tooz backend URL such as "
            "redis://127.0.0.1:6379; a URL with a password goes in a reference",
        ),
        ("{url: 'redis://redis:6379?password=pw-Zq7761'}", "goes in a reference"),
        ("{url: 'ftp://redis:6379'}", "'ftp' is not a coordination backend; use one of"),
        ("{url: 'file:relative'}", "file: reference needs an absolute path"),
        (
            "{url: 'redis://r:6379', watch_interval: 30s}",
            "watch_interval must be shorter than membership_timeout",
        ),
        ("{url: 'redis://r:6379', group: 'a b'}", "server.coordination.group"),
        ("{url: 'redis://r:6379', membership: 3s}", "membership"),
    ],
)
def test_bad_coordination_settings_are_refused_with_the_fix(
    tmp_path: Path, coordination: str, complaint: str
) -> None:
    from rotator.config import load_config
    from rotator.errors import ConfigError

    path = tmp_path / "rotator.yaml"
    path.write_text(f"server: {{coordination: {coordination}}}\naccounts: {{}}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(str(path))
    assert complaint in str(refused.value)
    assert "pw-Zq7761" not in str(refused.value)


def test_a_coordination_url_may_be_a_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rotator.config import load_config
    from rotator.service.coordination_backend import backend_url

    monkeypatch.setenv("ROTATOR_TEST_COORDINATION", "redis://:pw@redis:6379\n")
    path = tmp_path / "rotator.yaml"
    path.write_text("server: {coordination: {url: 'env:ROTATOR_TEST_COORDINATION'}}\n")
    settings = load_config(str(path)).server.coordination
    assert settings is not None
    assert backend_url(settings) == "redis://:pw@redis:6379"
    assert "pw" not in repr(settings)
