"""A renewed grant that crosses a threshold again is alerted again.

After a renewal the level remembered for an alert must come down to the renewed
grant's: keeping the old, higher one silences the next crossing (until a daily
reminder, if any). Checked on the two stories an operator lives through, and as
a property over any mix of time passing and renewals.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as hs

from rotator.alerts.dispatch import Dispatcher, MemoryAlertMemory, StoreAlertMemory
from rotator.alerts.rules import Alert, Kind, evaluate
from rotator.backends.file import FileStore
from rotator.config.models import AlertsSettings
from rotator.state import AccountState
from tests.support.alertkit import T0, Clock, Recorder, dispatcher, settings, state

# --- a renewed grant is alerted again when it crosses a threshold again --------------


WARNED_7D = "refresh token of acme-fax expires in 7 days"
WARNED_3D = "refresh token of acme-fax expires in 3 days"


def _new_alerts(sent: list[Alert]) -> list[str]:
    return [a.summary.split(" (")[0] for a in sent if a.status == "firing" and not a.repeat]


def test_a_renewal_resolves_and_the_renewed_grant_warns_again_at_7_days(store: FileStore) -> None:
    clock, rec = Clock(T0), Recorder()
    d = dispatcher(store, clock, rec)
    grant = state(refresh_expires_at=T0 + timedelta(days=7))
    assert _new_alerts(d.check(grant, settings())) == [WARNED_7D]
    clock.advance(hours=1)
    grant = replace(grant, refresh_expires_at=clock.now + timedelta(days=30))  # renewed
    [resolved] = d.check(grant, settings())
    assert resolved.status == "resolved"
    clock.now = grant.refresh_expires_at - timedelta(days=7)  # 23 days later
    assert _new_alerts(d.check(grant, settings())) == [WARNED_7D]


def test_a_renewal_inside_a_threshold_lowers_the_level_so_the_next_crossing_is_told(
    store: FileStore,
) -> None:
    """3 days left (told), renewed to 5 days (still inside 7d: no resolution, nothing to
    tell), 2 days later 3 days are left again: a new alert, not silence until a reminder."""
    clock, rec = Clock(T0), Recorder()
    d = Dispatcher(
        alerts=AlertsSettings(repeat=timedelta(days=60)),
        channels=[rec],
        memory=StoreAlertMemory(lambda a: store),
        clock=clock,
    )
    grant = state(refresh_expires_at=T0 + timedelta(days=3))
    assert _new_alerts(d.check(grant, settings())) == [WARNED_3D]
    clock.advance(hours=1)
    grant = replace(grant, refresh_expires_at=clock.now + timedelta(days=5))
    assert d.check(grant, settings()) == []
    clock.advance(days=2)
    assert _new_alerts(d.check(grant, settings())) == [WARNED_3D]
    # and a restarted daemon remembers the level it was told last, not the renewal's
    assert dispatcher(store, clock, rec).check(grant, settings()) == []


def _level(sent_for: Dispatcher, grant: AccountState) -> int:
    conditions = evaluate(grant, settings(), sent_for.alerts, sent_for.clock())
    return max((c.level for c in conditions if c.kind is Kind.REFRESH_TOKEN_EXPIRY), default=0)


_STEPS = hs.lists(
    hs.one_of(
        hs.tuples(hs.just("wait"), hs.floats(min_value=0.5, max_value=24 * 9)),
        hs.tuples(hs.just("renew"), hs.floats(min_value=0.0, max_value=24 * 40)),
    ),
    min_size=1,
    max_size=25,
)


@hypothesis_settings(max_examples=150, deadline=None)
@given(first=hs.floats(min_value=0.0, max_value=24 * 40), steps=_STEPS)
def test_every_crossing_is_told_once_whatever_the_renewals(
    first: float, steps: list[tuple[str, float]]
) -> None:
    """Checked after every step (time passing, or a renewal to a new end), a new alert goes
    out exactly when the grant is in a worse band than at the previous check, and a
    resolution exactly when it left the last band; no reminder falls in this span."""
    clock = Clock(T0)
    d = Dispatcher(
        alerts=AlertsSettings(repeat=timedelta(days=3650)),
        channels=[Recorder()],
        memory=MemoryAlertMemory(),
        clock=clock,
    )
    grant = state(refresh_expires_at=T0 + timedelta(hours=first))
    before = 0
    for what, hours in [("check", 0.0), *steps]:
        if what == "wait":
            clock.advance(hours=hours)
        elif what == "renew":
            grant = replace(grant, refresh_expires_at=clock.now + timedelta(hours=hours))
        sent = d.check(grant, settings())
        now = _level(d, grant)
        assert (bool(_new_alerts(sent)), any(a.status == "resolved" for a in sent)) == (
            now > before,
            before > 0 and now == 0,
        ), f"level {before} -> {now}"
        before = now
