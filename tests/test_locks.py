"""NamedLocks: one holder per name at a time, and no entry left once nobody holds one."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.locks import NamedLocks


@settings(max_examples=25, deadline=None)
@given(
    names=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=40),
    threads=st.integers(min_value=2, max_value=8),
)
def test_one_holder_per_name_and_an_empty_table_after(names: list[str], threads: int) -> None:
    """Any mix of names over any number of threads: never two holders of one name
    at once, and every entry is gone when the last holder leaves."""
    locks = NamedLocks()
    inside: dict[str, int] = {}
    most: dict[str, int] = {}
    guard = threading.Lock()
    barrier = threading.Barrier(threads)

    def work(offset: int) -> None:
        barrier.wait()
        for name in names[offset:] + names[:offset]:
            with locks(name):
                with guard:
                    inside[name] = inside.get(name, 0) + 1
                    most[name] = max(most.get(name, 0), inside[name])
                time.sleep(0)  # let another thread try the same name
                with guard:
                    inside[name] -= 1

    workers = [threading.Thread(target=work, args=(i % len(names),)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert set(most) == set(names)
    assert all(count == 1 for count in most.values()), most
    assert len(locks) == 0


def test_a_waiter_gets_the_name_when_its_holder_leaves() -> None:
    locks = NamedLocks()
    order: list[str] = []
    entered = threading.Event()

    def second() -> None:
        entered.wait()
        with locks("acct"):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with locks("acct"):
        entered.set()
        deadline = time.monotonic() + 5
        while locks._entries["acct"].users < 2:
            assert time.monotonic() < deadline, "the second thread never waited"
            time.sleep(0.001)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]
    assert len(locks) == 0


def test_other_names_do_not_wait() -> None:
    locks = NamedLocks()
    with locks("a"):
        done = threading.Event()

        def other() -> None:
            with locks("b"):
                done.set()

        threading.Thread(target=other).start()
        assert done.wait(5), "a holder of 'a' kept 'b' waiting"
        assert len(locks) == 1


def test_an_error_inside_releases_the_name() -> None:
    locks = NamedLocks()
    with pytest.raises(RuntimeError), locks("a"):
        raise RuntimeError("boom")
    assert len(locks) == 0
    with locks("a"):  # free again
        pass
