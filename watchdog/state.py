"""What the watchdog remembers about each task, and the bridge between that memory and the
store: rows to write (only what changed) and the state restored from a snapshot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from watchdog.alerts import Alert, AlertStatus
from watchdog.models import API_KEY, Phase, Rule, TaskRef, TaskStatus
from watchdog.rules import TaskHistory, restore_history
from watchdog.store import Snapshot, TaskRow

NEVER = -1.0  # next_poll_at of a done task that is never polled again (done_interval = 0)


@dataclass(slots=True)
class TaskState:
    """What the watchdog knows about one watched task."""

    ref: TaskRef
    status: TaskStatus | None = None
    phase: Phase | None = None
    history: TaskHistory | None = None
    polled_at: datetime | None = None
    not_found_streak: int = 0
    #: monotonic time before which the task is not polled (done, deferred, adaptive)
    due: float = 0.0
    finished: bool = False
    last_outcome: str = "pending"  # observed | not_found | failed | deferred | pending
    alerts: dict[Rule, Alert] = field(default_factory=dict)
    #: the row as last written to the store (to write only what changed)
    saved: TaskRow | None = None

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.status is AlertStatus.FIRING]

    @property
    def phase_name(self) -> str:
        if self.last_outcome == "not_found":
            return "not_found"
        return self.phase.value if self.phase is not None else "unknown"

    def row(self, wall: float, mono: float) -> TaskRow:
        """The persisted part; the monotonic due time becomes wall time."""
        if self.due == 0.0 or self.due <= mono:
            next_poll: float | None = None
        elif math.isinf(self.due):
            next_poll = NEVER
        else:
            next_poll = wall + (self.due - mono)
        history = self.history
        return TaskRow(
            key=self.ref.key,
            status=self.status,
            phase=self.phase,
            progress_since=history.progress_since if history is not None else None,
            review_since=history.review_since if history is not None else None,
            not_found_streak=self.not_found_streak,
            finished=self.finished,
            next_poll_at=next_poll,
        )


def restored(
    snapshot: Snapshot, wall: float, mono: float
) -> tuple[dict[str, TaskState], dict[Rule, Alert]]:
    """Task states and the API alerts as the snapshot saved them (same fingerprints and
    starts_at; ``no_progress`` clocks keep running)."""
    tasks: dict[str, TaskState] = {}
    for key, row in snapshot.tasks.items():
        try:
            ref = TaskRef.from_key(key)
        except ValueError:
            continue
        state = TaskState(ref=ref, status=row.status, phase=row.phase)
        if row.status is not None and row.progress_since is not None:
            state.history = restore_history(row.status, row.progress_since, row.review_since)
        state.not_found_streak = row.not_found_streak
        state.finished = row.finished
        if row.next_poll_at is None:
            state.due = 0.0
        elif row.next_poll_at == NEVER:
            state.due = math.inf
        else:
            state.due = mono + (row.next_poll_at - wall)
        if row.not_found_streak:
            state.last_outcome = "not_found"
        elif row.status is not None:
            state.last_outcome = "observed"
        state.saved = row
        tasks[key] = state
    api_alerts: dict[Rule, Alert] = {}
    for alert in snapshot.alerts:
        if alert.key == API_KEY:
            api_alerts[alert.rule] = alert
            continue
        owner = tasks.get(alert.key)
        if owner is None:
            try:
                owner = tasks[alert.key] = TaskState(ref=TaskRef.from_key(alert.key))
            except ValueError:
                continue
        owner.alerts[alert.rule] = alert
    return tasks, api_alerts


class Journal:
    """What changed since the last commit: touched tasks, changed and deleted alerts."""

    def __init__(self) -> None:
        self.touched: dict[str, TaskState] = {}
        self.alerts: dict[str, Alert] = {}
        self.deleted: set[str] = set()

    def touch(self, state: TaskState) -> None:
        self.touched[state.ref.key] = state

    def track(self, old: Mapping[Rule, Alert], new: Mapping[Rule, Alert]) -> None:
        """Remember which alerts changed (frozen records: a change is a new object)."""
        for rule, alert in new.items():
            if old.get(rule) is not alert:
                self.alerts[alert.fingerprint] = alert
                self.deleted.discard(alert.fingerprint)
        for rule, alert in old.items():
            if rule not in new:
                self.deleted.add(alert.fingerprint)
                self.alerts.pop(alert.fingerprint, None)

    def changed_rows(self, wall: float, mono: float) -> list[TaskRow]:
        """Rows of touched tasks that differ from what was last saved."""
        rows = []
        for state in self.touched.values():
            row = state.row(wall, mono)
            if row != state.saved:
                rows.append(row)
                state.saved = row
        return rows

    def clear(self) -> None:
        self.touched.clear()
        self.alerts.clear()
        self.deleted.clear()
