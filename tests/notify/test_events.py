"""Which events a job run makes, and their ids. Pure: no I/O."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from rotator.notify import events_of, reauthorized
from rotator.rotation.result import RotationResult
from rotator.schedule import Outcome
from rotator.secrets import Secret
from rotator.state import AccountState
from tests.notify.kit import T0, TOKEN, settings


def state(**kw: object) -> AccountState:
    base: dict[str, object] = {
        "account": "acme",
        "provider": "oauth2",
        "access_token": Secret(TOKEN),
        "issued_at": T0,
        "expires_at": T0 + timedelta(hours=1),
    }
    base.update(kw)
    return AccountState(**base)  # type: ignore[arg-type]


def result(outcome: Outcome = Outcome.SUCCESS, **kw: object) -> RotationResult:
    fields: dict[str, object] = {"state": state()}
    fields.update(kw)
    return RotationResult("acme", outcome, None, **fields)  # type: ignore[arg-type]


def kinds(run: RotationResult) -> list[str]:
    return [e.type for e in events_of(run, settings(), T0)]


def test_rotated_only_when_a_sink_took_a_new_token() -> None:
    assert kinds(result(sinks_written=1)) == ["rotated"]
    assert kinds(result(sinks_unchanged=2)) == []
    assert kinds(result(Outcome.NOT_DUE, sinks_written=1)) == ["rotated"]  # a sink caught up
    assert kinds(result(Outcome.NOT_DUE, sinks_unchanged=1)) == []


def test_failed_only_for_the_run_that_stopped_the_account() -> None:
    stopped = state(failed=True, consecutive_failures=1, last_error_code="invalid_client")
    assert kinds(result(Outcome.PERMANENT, state=stopped)) == ["failed"]
    assert kinds(result(Outcome.FAILED, state=stopped)) == []  # found stopped: nothing new
    assert kinds(result(Outcome.TRANSIENT, state=state(consecutive_failures=3))) == []


def test_recovered_follows_a_revived_rotation_after_rotated() -> None:
    assert kinds(result(sinks_written=1, revived=True)) == ["rotated", "recovered"]


@given(
    written=st.integers(0, 3),
    revived=st.booleans(),
    outcome=st.sampled_from(list(Outcome)),
    failed=st.booleans(),
    seconds=st.integers(0, 10**6),
)
def test_ids_are_the_same_on_every_replica_and_never_show_the_token(
    written: int, revived: bool, outcome: Outcome, failed: bool, seconds: int
) -> None:
    """Class test: any run makes events whose ids depend on what happened, not on when it
    was noticed, and whose payload and id hold no token."""
    run = result(
        outcome,
        sinks_written=written,
        revived=revived,
        state=state(issued_at=T0 + timedelta(seconds=seconds), failed=failed),
    )
    here = events_of(run, settings(), T0)
    there = events_of(run, settings(), T0 + timedelta(seconds=7))
    assert [e.id for e in here] == [e.id for e in there]
    assert len({e.id for e in here}) == len(here)
    for e in here:
        assert e.id.startswith("msg_") and TOKEN not in e.id
        assert TOKEN not in json.dumps(e.payload("replica")) and TOKEN not in repr(e)


def test_a_new_token_makes_a_new_id() -> None:
    first = events_of(result(sinks_written=1), settings(), T0)[0]
    again = events_of(result(sinks_written=1), settings(), T0)[0]
    other = result(sinks_written=1, state=state(access_token=Secret("at-other-token-1234")))
    assert first.id == again.id != events_of(other, settings(), T0)[0].id


def test_a_second_failure_after_a_reload_is_a_new_event() -> None:
    one = state(failed=True, consecutive_failures=1, last_error_code="invalid_client")
    two = state(failed=True, consecutive_failures=2, last_error_code="invalid_client")
    ids = {events_of(result(Outcome.PERMANENT, state=s), settings(), T0)[0].id for s in (one, two)}
    assert len(ids) == 2


def test_reauthorized_carries_no_token_and_differs_per_grant() -> None:
    a = reauthorized(state(), settings(), T0, "rt-first-grant-123")
    b = reauthorized(state(), settings(), T0, "rt-second-grant-456")
    assert a.type == "reauthorized" and a.token is None and a.id != b.id
