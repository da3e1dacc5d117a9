"""The daemon's one CPU: the least busy allowed CPU, chosen again every interval, and
every real thread of the process moved there (and back) with ``sched_setaffinity``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.service import cpus
from rotator.service.cpus import JITTER, MARGIN, OneCpu, allowed_cpus, read_busy
from rotator.service.workers import Workers
from tests.fakes.oauth2 import emulator
from tests.service.test_daemon import SECRET, seed, write_config
from tests.support.proc import DaemonProcess

TICK = os.sysconf("SC_CLK_TCK")


class Machine:
    """A fake clock and CPU counters: each step adds seconds of other work per CPU."""

    def __init__(self, count: int) -> None:
        self.now = 100.0
        self.busy = dict.fromkeys(range(count), 0.0)
        self.own = 0.0
        self.broken = False
        self.placed: dict[int, set[int]] = {}

    def read(self) -> dict[int, float]:
        if self.broken:
            raise OSError("no /proc/stat")
        return dict(self.busy)

    def step(self, seconds: float, work: dict[int, float], own_on: int | None = None) -> None:
        """``seconds`` pass; ``work``: each CPU's busy share from others; ``own_on``: the
        workers kept that CPU fully busy too (their time shows in both counters)."""
        self.now += seconds
        for cpu, share in work.items():
            self.busy[cpu] += share * seconds
        if own_on is not None:
            self.busy[own_on] += seconds
            self.own += seconds

    def one(self, allowed: list[int] | None = None) -> Chooser:
        return Chooser(
            allowed if allowed is not None else list(self.busy),
            busy=self.read,
            own=lambda: self.own,
            clock=lambda: self.now,
            tasks=lambda: [1, 2, 3],
            place=self.place,
            interval=5.0,
            jitter=0.0,
            first=0,
        )

    def place(self, task: int, cpus: Iterable[int]) -> None:
        self.placed[task] = set(cpus)


class Chooser(OneCpu):
    """A OneCpu whose answer is read back after each look."""

    def current(self) -> int | None:
        self.tick()
        return self.cpu


def test_read_busy_counts_all_but_idle_and_iowait(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  400 0 200 9000 100 0 0 0 0 0\n"
        f"cpu0 100 10 50 4000 {TICK} 5 5 30 0 0\n"
        "cpu1 300 0 150 5000 0 0 0 0\n"
        "intr 12345 0 0\n"
        "ctxt 999\n"
        "cpu7 1 1 1 1 1 1 1 1\n"  # not a per-CPU line in this position: ignored
    )
    busy = read_busy(str(stat))
    assert busy == {0: (100 + 10 + 50 + 5 + 5 + 30) / TICK, 1: 450 / TICK}


def test_read_busy_knows_every_allowed_cpu_of_this_machine() -> None:
    busy = read_busy()
    assert allowed_cpus() <= set(busy)
    assert all(seconds >= 0 for seconds in busy.values())


def test_the_least_busy_allowed_cpu_is_chosen_and_kept_within_the_margin() -> None:
    machine = Machine(4)
    pin = machine.one(allowed=[1, 2, 3])  # CPU 0 is idle but not the process's
    machine.step(5, {0: 0.0, 1: 0.9, 2: 0.3, 3: 0.5})
    assert pin.current() == 2
    # CPU 3 idler than 2, but by less than the margin: the workers stay; before the
    # interval is over nothing is looked at
    near = {1: 0.9, 2: 0.3, 3: 0.3 - MARGIN / 2}
    machine.step(1, near)
    assert pin.current() == 2
    machine.step(4, near)
    assert pin.current() == 2
    # by more than the margin: they move
    machine.step(5, {1: 0.9, 2: 0.6, 3: 0.1})
    assert pin.current() == 3


def test_the_workers_own_time_does_not_chase_them_off_their_cpu() -> None:
    machine = Machine(2)
    pin = machine.one()
    machine.step(5, {0: 0.2, 1: 0.5})
    assert pin.current() == 0
    # the workers keep CPU 0 fully busy; a neighbour keeps CPU 1 half busy
    for _ in range(4):
        machine.step(5, {1: 0.5}, own_on=0)
        assert pin.current() == 0
    # the neighbour moves onto the workers' CPU: they leave it
    machine.step(5, {0: 0.8}, own_on=0)
    assert pin.current() == 1


def test_one_allowed_cpu_or_no_counters_turn_it_off() -> None:
    assert not Machine(1).one().enabled
    machine = Machine(2)
    machine.broken = True
    assert not machine.one().enabled
    # counters gone later: the workers go back to every CPU (None), for good
    machine = Machine(2)
    pin = machine.one()
    machine.step(5, {0: 0.1})
    assert pin.current() == 1
    machine.broken = True
    machine.step(5, {})
    assert pin.current() is None
    assert not pin.enabled
    machine.broken = False
    machine.step(5, {1: 1.0})
    assert pin.current() is None


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=6),
    data=st.data(),
)
def test_a_move_is_always_to_an_allowed_cpu_clearly_less_busy(
    count: int, data: st.DataObject
) -> None:
    machine = Machine(count + 1)  # one CPU more than the process may use
    allowed = sorted(data.draw(st.sets(st.integers(0, count), min_size=2, max_size=count)))
    pin = machine.one(allowed)
    before: int | None = None
    for _ in range(data.draw(st.integers(1, 12))):
        seconds = data.draw(st.sampled_from([5.0, 7.5, 30.0]))  # each step a whole interval
        work = {cpu: data.draw(st.floats(0, 1, allow_nan=False)) for cpu in range(count + 1)}
        own = data.draw(st.booleans())
        machine.step(seconds, work, own_on=before if own and before is not None else None)
        chosen = pin.current()
        assert chosen in allowed
        if before is not None and chosen != before:
            others = {cpu: work[cpu] * seconds for cpu in allowed}
            # the workers' own time was subtracted from their CPU only
            assert others[chosen] < others[before] - MARGIN * seconds + 1e-9
        before = chosen


def test_ties_depend_on_the_process_and_looks_are_spread_in_time() -> None:
    """Rotators sharing a host (replicas) do not all pick the same idle CPU, nor look
    again at the same moment."""
    picks: set[int] = set()
    for first in range(4):
        machine = Machine(4)
        pin = OneCpu(
            list(machine.busy),
            busy=machine.read,
            own=lambda: 0.0,
            clock=lambda machine=machine: machine.now,  # type: ignore[misc]
            tasks=lambda: [],
            place=machine.place,
            first=first,
        )
        machine.step(5, {})
        pin.tick()
        picks.add(pin.cpu if pin.cpu is not None else -1)
    assert picks == {0, 1, 2, 3}
    machine = Machine(2)
    pin = OneCpu([0, 1], busy=machine.read, clock=lambda: machine.now, tasks=lambda: [])
    dues = set()
    for _ in range(20):
        machine.step(10, {})
        pin.tick()
        dues.add(round(pin._due - machine.now, 6))
    assert len(dues) > 1
    assert all(5 * (1 - JITTER) <= due <= 5 * (1 + JITTER) for due in dues)


def test_every_thread_is_put_on_the_chosen_cpu_and_the_placing_follows_the_choice() -> None:
    machine = Machine(2)
    pin = machine.one()
    machine.step(5, {0: 0.5, 1: 0.1})
    assert pin.current() == 1
    assert machine.placed == {1: {1}, 2: {1}, 3: {1}}
    machine.step(5, {0: 0.0, 1: 0.9})
    assert pin.current() == 0
    assert machine.placed == {1: {0}, 2: {0}, 3: {0}}
    pin.release()
    assert machine.placed == {1: {0, 1}, 2: {0, 1}, 3: {0, 1}}
    machine.step(5, {0: 1.0})
    assert pin.current() is None  # released: no more choices
    assert machine.placed == {1: {0, 1}, 2: {0, 1}, 3: {0, 1}}


def _affinities() -> dict[int, str]:
    """Every thread of this process: its allowed CPUs as the kernel lists them."""
    found: dict[int, str] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        listed = next(line for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
        found[int(task.name)] = listed.split(":", 1)[1].strip()
    return found


def _listed(cpus: Iterable[int]) -> str:
    """As the kernel lists a set of CPUs (``0-1``, ``3``)."""
    ordered = sorted(cpus)
    runs: list[str] = []
    first = last = ordered[0]
    for cpu in ordered[1:]:
        if cpu == last + 1:
            last = cpu
            continue
        runs.append(f"{first}-{last}" if last > first else str(first))
        first = last = cpu
    runs.append(f"{first}-{last}" if last > first else str(first))
    return ",".join(runs)


def test_real_threads_all_go_to_the_one_cpu_new_ones_follow_and_all_come_back() -> None:
    allowed = allowed_cpus()
    pool = Workers(3, thread_name_prefix="test-cpus", single_cpu=True)
    pin = pool.cpu or OneCpu()
    try:
        seen = [pool.submit(lambda: os.sched_getaffinity(0)).result(10) for _ in range(6)]
        during = _affinities()
        started: list[set[int]] = []
        late = threading.Thread(target=lambda: started.append(os.sched_getaffinity(0)))
        late.start()
        late.join()
    finally:
        pool.shutdown(wait=True)  # gives the CPUs back
    after = _affinities()
    assert set(after.values()) == {_listed(allowed)}  # every thread back on every CPU
    if len(allowed) < 2:  # a one-CPU machine: nothing to choose, nothing moved
        assert not pin.enabled
        assert all(found == allowed for found in seen)
        return
    chosen = next(cpu for cpu in allowed if str(cpu) == during[os.getpid()])
    assert set(during.values()) == {str(chosen)}  # every thread, the main one too
    assert all(found == {chosen} for found in seen)
    assert started == [{chosen}]  # a thread started later inherits its parent's CPU


def test_a_cpu_that_left_the_set_sends_every_thread_back_to_what_the_kernel_allows() -> None:
    allowed = sorted(allowed_cpus())
    ghost = 4095  # a CPU no machine here has: the kernel refuses it
    counters = {cpu: 0.0 for cpu in allowed} | {ghost: 0.0}
    pin = OneCpu([*allowed, ghost], busy=lambda: dict(counters))
    for cpu in allowed:
        counters[cpu] += 1000.0  # every real CPU far busier than the ghost
    try:
        pin.tick()
        assert pin.cpu is None
        assert pin.allowed == allowed  # looked at again
        assert set(_affinities().values()) == {_listed(allowed)}
    finally:
        pin.release()


def _narrowed_threads(pid: int) -> tuple[set[int], int]:
    """The daemon's threads each on one CPU, and how many threads it has."""
    narrowed: set[int] = set()
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        listed = next(line for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
        cpus_listed = listed.split(":", 1)[1].strip()
        if cpus_listed.isdigit():
            narrowed.add(int(task.name))
    return narrowed, len(tasks)


@pytest.mark.parametrize("pinned", [True, False])
def test_the_daemon_puts_its_workers_on_one_cpu_unless_told_not_to(
    tmp_path: Path, pinned: bool
) -> None:
    allowed = allowed_cpus()
    with emulator(clients={"app": SECRET}, access_ttl=2.0) as server:
        config = write_config(tmp_path, server.url, accounts=("alpha", "beta"))
        if not pinned:
            text = config.read_text().replace(
                "server: {workers: 4,", "server: {single_cpu: false, workers: 4,"
            )
            config.write_text(text)
        for name in ("alpha", "beta"):
            seed(config, name, server)
        with DaemonProcess(config) as daemon:
            daemon.wait_log('"event": "rotated"', count=4)
            narrowed, threads = _narrowed_threads(daemon.pid)
            assert daemon.stop() == 0
    assert threads > 4
    if pinned and len(allowed) > 1:
        assert len(narrowed) == threads  # every thread, the main one too, on one CPU
    else:
        assert narrowed == set() or len(allowed) == 1


def test_the_module_documents_its_knob() -> None:
    assert "single_cpu: false" in (cpus.__doc__ or "")
