"""What one job run tells the scheduler and the observers.

Inside a run every step returns a small :class:`Run` (the outcome, the state it
left, what it learned for the schedule, what publishing did); the rotator turns
it into the one :class:`RotationResult` of the run, deciding the next run with
:func:`rotator.schedule.next_run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from rotator.errors import RotatorError
from rotator.rotation.publish import Published
from rotator.schedule import Outcome, RunFacts
from rotator.state import AccountState

__all__ = ["Observer", "RotationResult", "Run"]


@dataclass(frozen=True, slots=True)
class Run:
    """How one step of a run ended (built by the steps, read once by the rotator)."""

    outcome: Outcome
    state: AccountState | None = None
    error: RotatorError | None = None
    facts: RunFacts = field(default_factory=RunFacts)
    published: Published = field(default_factory=Published)
    #: a rotation succeeded for an account whose state said failed (rotator.notify: recovered)
    revived: bool = False


@dataclass(frozen=True, slots=True)
class RotationResult:
    account: str
    result: Outcome
    next_run: datetime | None
    state: AccountState | None = None
    error: RotatorError | None = None
    duration: float = 0.0
    sinks_written: int = 0
    sinks_unchanged: int = 0
    sinks_failed: int = 0
    #: succeeded on an account that had stopped on a permanent failure
    revived: bool = False

    @property
    def ok(self) -> bool:
        return self.result.ok


class Observer(Protocol):
    """Told about every job run (metrics, alerts, notify). Must not raise; must be quick."""

    def after_rotation(self, result: RotationResult) -> None: ...
