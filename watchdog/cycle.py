"""One poll cycle: fetch every due task → classify → evaluate rules → alert transitions → one
``cycle.completed`` summary. The cycle is the last catch for trouble with the API: a failed
poll is no evidence either way and never escapes as an exception.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog

from watchdog import alerts as alert_engine
from watchdog.alerts import Alert, AlertStatus, Change, Policy, Transition
from watchdog.clock import Clock
from watchdog.logs import Logger, get_logger
from watchdog.models import (
    API_KEY,
    DEFAULT_SEVERITY,
    ApiErrorInfo,
    Deferred,
    Finding,
    NotFound,
    Observed,
    Phase,
    PollFailed,
    PollResult,
    Rule,
    TaskRef,
    TaskStatus,
    iso,
)
from watchdog.phases import PhaseTable, classify
from watchdog.rules import (
    TaskHistory,
    clock_offset,
    earliest_fire,
    evaluate,
    not_found_finding,
    restore_history,
    update_history,
)
from watchdog.settings import Settings, Thresholds
from watchdog.store import Snapshot, Store, TaskRow

if TYPE_CHECKING:
    from watchdog.notify import Notifier

_NEVER = -1.0  # next_poll_at of a done task that is never polled again (done_interval = 0)

#: the rules a successful observation can judge (``task_not_found`` clears when a task is seen)
_OBSERVED_SCOPE = frozenset(Rule) - {Rule.API_UNAVAILABLE}
_NOT_FOUND_SCOPE = frozenset({Rule.TASK_NOT_FOUND})
_API_REF = TaskRef(key=API_KEY)


class Poller(Protocol):
    async def poll(self, ref: TaskRef, *, deadline: float | None = None) -> PollResult: ...


@dataclass(slots=True)
class TaskState:
    """What the watchdog knows about one watched task."""

    ref: TaskRef
    status: TaskStatus | None = None
    phase: Phase | None = None
    history: TaskHistory | None = None
    polled_at: datetime | None = None
    not_found_streak: int = 0
    #: monotonic time before which the task is not polled (done, deferred)
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


@dataclass(frozen=True, slots=True)
class CycleReport:
    cycle_id: str
    started_at: datetime
    polled: int
    failed: int
    skipped: int
    stuck: int
    duration_s: float
    api_errors: int
    api_unavailable: bool
    auth_rejected: bool
    transitions: Sequence[Transition] = ()
    #: polls by outcome: observed, not_found, failed, deferred
    outcomes: Mapping[str, int] = field(default_factory=dict)


class Watcher:
    """Owns the watched set and its state; ``run_cycle`` is one poll cycle."""

    def __init__(
        self,
        settings: Settings,
        poller: Poller,
        clock: Clock,
        *,
        log: Logger | None = None,
        store: Store | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._notifier = notifier
        self._dirty_alerts: dict[str, Alert] = {}
        self._deleted_alerts: set[str] = set()
        self._touched: dict[str, TaskState] = {}
        self._poller = poller
        self._clock = clock
        self._log = log or get_logger()
        self.apply_settings(settings)
        self.tasks: dict[str, TaskState] = {}
        self.api_alerts: dict[Rule, Alert] = {}
        self._all_failed_streak = 0
        self._unknown_seen: set[str] = set()
        self._skew_logged = False
        self._cycle_api_errors = 0
        self._suppress_api_errors = False
        self.cycles = 0

    def apply_settings(self, settings: Settings) -> None:
        """A reload: new rules, phases and alert policy; state is kept."""
        self._settings = settings
        self._table = PhaseTable.build(settings.phases)
        self._thresholds = Thresholds.from_settings(settings.rules)
        self._policy = Policy(
            repeat_interval=settings.alerts.repeat_interval,
            flap_threshold=settings.alerts.flap_threshold,
            flap_window=settings.alerts.flap_window,
            hold=dict(settings.rules.for_),
        )

    # --- the watched set -------------------------------------------------------------------

    def set_tasks(self, refs: Iterable[TaskRef]) -> list[Transition]:
        """Replace the watched set; tasks that stay keep their state, leavers resolve."""
        wanted = {ref.key: ref for ref in refs}
        now = self._clock.now()
        changes: list[Transition] = []
        leaving: dict[str, TaskStatus | None] = {}
        for key in [k for k in self.tasks if k not in wanted]:
            state = self.tasks.pop(key)
            leaving[key] = state.status
            new, resolved = alert_engine.resolve_all(state.alerts, now, "unwatched")
            self._track(state.alerts, new)
            changes += resolved
        for key, ref in wanted.items():
            if key not in self.tasks:
                self.tasks[key] = TaskState(ref=ref)
        self._report(changes)
        self.commit(changes, leaving)
        return changes

    # --- persistence -------------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> None:
        """Resume from the store: task history, alert state (same fingerprints and starts_at)
        and the API failure streak. Call before ``set_tasks``."""
        wall = self._clock.now().timestamp()
        mono = self._clock.monotonic()
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
            elif row.next_poll_at == _NEVER:
                state.due = math.inf
            else:
                state.due = mono + (row.next_poll_at - wall)
            if row.not_found_streak:
                state.last_outcome = "not_found"
            elif row.status is not None:
                state.last_outcome = "observed"
            state.saved = row
            self.tasks[key] = state
        for alert in snapshot.alerts:
            if alert.key == API_KEY:
                self.api_alerts[alert.rule] = alert
                continue
            owner = self.tasks.get(alert.key)
            if owner is None:
                try:
                    owner = self.tasks[alert.key] = TaskState(ref=TaskRef.from_key(alert.key))
                except ValueError:
                    continue
            owner.alerts[alert.rule] = alert
        self._all_failed_streak = int(snapshot.meta.get("api_failed_streak", "0") or 0)

    def _row(self, state: TaskState, wall: float, mono: float) -> TaskRow:
        if state.due == 0.0 or state.due <= mono:
            next_poll: float | None = None
        elif math.isinf(state.due):
            next_poll = _NEVER
        else:
            next_poll = wall + (state.due - mono)
        history = state.history
        return TaskRow(
            key=state.ref.key,
            status=state.status,
            phase=state.phase,
            progress_since=history.progress_since if history is not None else None,
            review_since=history.review_since if history is not None else None,
            not_found_streak=state.not_found_streak,
            finished=state.finished,
            next_poll_at=next_poll,
        )

    def _track(self, old: Mapping[Rule, Alert], new: Mapping[Rule, Alert]) -> None:
        """Remember which alerts changed (frozen records: a change is a new object)."""
        for rule, alert in new.items():
            if old.get(rule) is not alert:
                self._dirty_alerts[alert.fingerprint] = alert
                self._deleted_alerts.discard(alert.fingerprint)
        for rule, alert in old.items():
            if rule not in new:
                self._deleted_alerts.add(alert.fingerprint)
                self._dirty_alerts.pop(alert.fingerprint, None)

    def statuses(self) -> dict[str, TaskStatus | None]:
        return {key: state.status for key, state in self.tasks.items()}

    def commit(
        self,
        changes: Sequence[Transition],
        leaving: Mapping[str, TaskStatus | None] | None = None,
    ) -> None:
        """Write what changed, and the deliveries it causes, in one transaction."""
        if self._store is None:
            self._touched.clear()
            return
        wall_now = self._clock.now()
        wall = wall_now.timestamp()
        mono = self._clock.monotonic()
        rows = []
        for state in self._touched.values():
            row = self._row(state, wall, mono)
            if row != state.saved:
                rows.append(row)
                state.saved = row
        deliveries = []
        if self._notifier is not None and changes:
            statuses = dict(leaving or {})
            for change in changes:
                if change.alert.key in self.tasks:
                    statuses[change.alert.key] = self.tasks[change.alert.key].status
            deliveries = self._notifier.plan(changes, statuses)
        self._store.save(
            now=wall,
            tasks=rows,
            alerts=list(self._dirty_alerts.values()),
            deleted_alerts=list(self._deleted_alerts),
            deliveries=deliveries,
            meta={"api_failed_streak": str(self._all_failed_streak)},
        )
        self._touched.clear()
        self._dirty_alerts.clear()
        self._deleted_alerts.clear()
        if deliveries and self._notifier is not None:
            self._notifier.wake()

    @property
    def api_down(self) -> bool:
        alert = self.api_alerts.get(Rule.API_UNAVAILABLE)
        return alert is not None and alert.firing

    def on_api_error(self, info: ApiErrorInfo) -> None:
        """The client's error hook: count every failed attempt, log unless the API is down."""
        self._cycle_api_errors += 1
        if self._suppress_api_errors:
            return
        self._log.warning(
            "api.error",
            status=info.status,
            error=info.error,
            attempt=info.attempt,
            will_retry=info.will_retry,
            endpoint=info.endpoint,
            message=info.message,
            **_task_fields_from_key(info.task_key, self.tasks),
        )

    # --- one cycle ---------------------------------------------------------------------------

    async def run_cycle(self) -> CycleReport:
        cycle_id = uuid.uuid4().hex[:12]
        structlog.contextvars.bind_contextvars(cycle_id=cycle_id)
        try:
            return await self._run_cycle(cycle_id)
        finally:
            structlog.contextvars.unbind_contextvars("cycle_id")

    async def _run_cycle(self, cycle_id: str) -> CycleReport:
        started_at = self._clock.now()
        started = time.perf_counter()
        start_mono = self._clock.monotonic()
        interval = self._settings.poll.interval
        # A due time within a small slack of the cycle counts as due: a task every
        # ``done_interval`` must not slip a whole cycle because of jitter.
        horizon = start_mono + min(interval * 0.1, 1.0)
        due = [s for s in self.tasks.values() if s.due <= horizon]
        skipped = len(self.tasks) - len(due)
        self._cycle_api_errors = 0
        self._suppress_api_errors = self.api_down

        results = await self._poll_all(due, deadline=start_mono + interval)
        now = self._clock.now()
        changes: list[Transition] = []
        changes += self._judge_api(results, now)
        polled = failed = 0
        auth_rejected = False
        outcomes = {"observed": 0, "not_found": 0, "failed": 0, "deferred": 0}
        for state, result in zip(due, results, strict=True):
            if isinstance(result, Observed | NotFound):
                polled += 1
                outcomes["observed" if isinstance(result, Observed) else "not_found"] += 1
            elif isinstance(result, Deferred):
                skipped += 1
                outcomes["deferred"] += 1
                state.due = result.until
                state.last_outcome = "deferred"
                self._touched[state.ref.key] = state
                continue
            else:
                failed += 1
                outcomes["failed"] += 1
                auth_rejected = auth_rejected or result.auth
            changes += self._apply(state, result, now)
        if not self.api_down:
            for state in due:
                if state.alerts:
                    pruned = alert_engine.prune(state.alerts, now, self._policy)
                    if len(pruned) != len(state.alerts):
                        self._track(state.alerts, pruned)
                    state.alerts = pruned
        self.commit(changes)

        stuck = sum(1 for s in self.tasks.values() if s.firing())
        duration = time.perf_counter() - started
        self.cycles += 1
        self._log.info(
            "cycle.completed",
            polled=polled,
            failed=failed,
            skipped=skipped,
            stuck=stuck,
            duration_s=round(duration, 3),
            tasks=len(self.tasks),
            api_errors=self._cycle_api_errors,
        )
        return CycleReport(
            cycle_id=cycle_id,
            started_at=started_at,
            polled=polled,
            failed=failed,
            skipped=skipped,
            stuck=stuck,
            duration_s=duration,
            api_errors=self._cycle_api_errors,
            api_unavailable=self.api_down,
            auth_rejected=auth_rejected,
            transitions=changes,
            outcomes=outcomes,
        )

    async def _poll_all(self, due: list[TaskState], *, deadline: float) -> list[PollResult]:
        """Poll with at most ``concurrency`` workers; results in the order of ``due``."""
        results: list[PollResult | None] = [None] * len(due)
        work: Iterator[tuple[int, TaskState]] = iter(enumerate(due))

        async def worker() -> None:
            for index, state in work:
                results[index] = await self._poller.poll(state.ref, deadline=deadline)

        workers = min(self._settings.api.concurrency, len(due))
        async with asyncio.TaskGroup() as group:
            for n in range(workers):
                group.create_task(worker(), name=f"poll-worker-{n}")
        return [r for r in results if r is not None]  # every slot is filled by now

    # --- the API as a whole --------------------------------------------------------------------

    def _judge_api(self, results: Sequence[PollResult], now: datetime) -> list[Transition]:
        if not results:
            return []  # a cycle that sent no request neither counts nor breaks the streak
        healthy = any(_api_answered(r) for r in results)
        rejected = [r for r in results if isinstance(r, PollFailed) and r.auth]
        if healthy:
            self._all_failed_streak = 0
            finding = None
        else:
            self._all_failed_streak += 1
            finding = _api_finding(rejected, len(results), self._all_failed_streak)
        if finding is None and not healthy:
            return []  # one bad cycle is not yet an outage; nothing resolves either
        findings = [finding] if finding is not None else []
        previous = self.api_alerts
        self.api_alerts, changes = alert_engine.step(
            self.api_alerts,
            findings,
            _API_REF,
            now,
            Policy(repeat_interval=self._policy.repeat_interval, flap_threshold=0),
            scope=(Rule.API_UNAVAILABLE,),
        )
        self._track(previous, self.api_alerts)
        self._report(changes)
        return changes

    # --- one task ------------------------------------------------------------------------------

    def _apply(self, state: TaskState, result: PollResult, now: datetime) -> list[Transition]:
        frozen = self.api_down  # while the API is down, task alerts neither fire nor resolve
        self._touched[state.ref.key] = state
        if isinstance(result, PollFailed | Deferred):
            state.last_outcome = "failed"
            return []
        state.polled_at = now
        state.due = 0.0
        if isinstance(result, NotFound):
            return self._not_found(state, now, frozen)
        return self._observed(state, result, now, frozen)

    def _not_found(self, state: TaskState, now: datetime, frozen: bool) -> list[Transition]:
        state.not_found_streak += 1
        state.last_outcome = "not_found"
        if state.not_found_streak == 1:
            self._log.info("task.not_found", **_task_fields(state.ref))
        finding = not_found_finding(state.ref, state.not_found_streak)
        if frozen:
            return []
        return self._step(state, [finding] if finding else [], now, scope=_NOT_FOUND_SCOPE)

    def _observed(
        self, state: TaskState, result: Observed, now: datetime, frozen: bool
    ) -> list[Transition]:
        status = result.status
        state.not_found_streak = 0
        state.last_outcome = "observed"
        verdict = classify(status, self._table)
        if verdict.unknown is not None and verdict.unknown not in self._unknown_seen:
            self._unknown_seen.add(verdict.unknown)
            self._log.warning(
                "task.unknown_status",
                **_task_fields(state.ref, status),
                status=verdict.unknown,
                task_status=status.task_status,
                task_status_text=status.task_status_text,
                assumed_phase=verdict.phase.value,
            )
        phase = verdict.phase
        state.status = status
        state.phase = phase
        state.history = update_history(state.history, status, phase, now)
        offset = clock_offset(result.server_date, now)
        if offset and not self._skew_logged:
            self._skew_logged = True
            self._log.warning(
                "clock.skew",
                offset_s=round(offset.total_seconds(), 1),
                server_date=iso(result.server_date),
                local_time=iso(now),
            )
        if phase is Phase.DONE:
            done_interval = self._settings.poll.done_interval
            state.due = (
                self._clock.monotonic() + done_interval if done_interval > 0 else float("inf")
            )
            if not state.finished:
                state.finished = True
                self._log.info(
                    "task.finished",
                    **_task_fields(state.ref, status),
                    task_status=status.task_status,
                    task_status_text=status.task_status_text,
                )
        else:
            state.finished = False
        if frozen:
            return []
        findings = evaluate(state.ref, status, phase, state.history, self._thresholds, now, offset)
        reason = "finished" if phase is Phase.DONE else "cleared"
        changes = self._step(
            state, findings, now, scope=_OBSERVED_SCOPE, reason=reason, force=reason != "cleared"
        )
        if phase is not Phase.DONE and self._settings.poll.max_interval > 0:
            state.due = self._adaptive_due(state, verdict.unknown is not None, offset, now)
        return changes

    def _adaptive_due(
        self, state: TaskState, unknown: bool, offset: timedelta, now: datetime
    ) -> float:
        """Adaptive polling: a healthy task is polled again just before the earliest moment a
        rule could fire for it, and at least every ``max_interval``; a task with an alert
        (firing or pending), a failed one or one in an unknown status every interval."""
        interval = self._settings.poll.interval
        if unknown or any(a.status is not AlertStatus.RESOLVED for a in state.alerts.values()):
            return 0.0
        status, phase, history = state.status, state.phase, state.history
        if status is None or history is None or phase is None or phase is Phase.FAILED:
            return 0.0
        wait = self._settings.poll.max_interval
        fire_at = earliest_fire(status, phase, history, self._thresholds, offset)
        if fire_at is not None:
            wait = min(wait, (fire_at - now).total_seconds() - interval)
        if wait <= interval:
            return 0.0
        return self._clock.monotonic() + wait

    def _step(
        self,
        state: TaskState,
        findings: Sequence[Finding],
        now: datetime,
        *,
        scope: frozenset[Rule],
        reason: str = "cleared",
        force: bool = False,
    ) -> list[Transition]:
        previous = state.alerts
        workspace = state.status.workspace_id if state.status is not None else None
        state.alerts, changes = alert_engine.step(
            state.alerts, findings, state.ref, now, self._policy,
            scope=scope, reason=reason, force=force, workspace_id=workspace,
        )  # fmt: skip
        self._track(previous, state.alerts)
        self._report(changes, state.status)
        return changes

    # --- reporting -----------------------------------------------------------------------------

    def _report(self, changes: Sequence[Transition], status: TaskStatus | None = None) -> None:
        for change in changes:
            alert = change.alert
            fields = {
                "rule": alert.rule.value,
                "severity": alert.severity.label,
                "fingerprint": alert.fingerprint,
            }
            if alert.key == API_KEY:
                if change.change is Change.FIRED:
                    self._log.error(
                        "api.unavailable", **fields, summary=alert.summary, evidence=alert.evidence
                    )
                elif change.change is Change.RESOLVED:
                    self._log.info("api.recovered", **fields)
                continue
            task: dict[str, object] = {"task_id": alert.task_id, "external_id": alert.external_id}
            if status is not None:
                task = _task_fields_for(alert, status)
            if change.change is Change.FIRED:
                self._log.warning(
                    "task.stuck",
                    **task,
                    **fields,
                    summary=alert.summary,
                    evidence=alert.evidence,
                    starts_at=iso(alert.starts_at),
                )
            elif change.change is Change.RESOLVED:
                self._log.info(
                    "task.recovered",
                    **task,
                    **fields,
                    reason=change.reason,
                    starts_at=iso(alert.starts_at),
                    ends_at=iso(alert.ends_at),
                )
            elif change.change is Change.FLAPPING:
                self._log.warning(
                    "alert.flapping",
                    **task,
                    **fields,
                    flips=len(alert.flips),
                    summary=alert.summary,
                )


def _api_answered(result: PollResult) -> bool:
    """An answer with neither 401/403 nor 5xx proves the API is up (a 200 with junk too)."""
    if isinstance(result, Observed | NotFound):
        return True
    if isinstance(result, PollFailed):
        return result.api_ok
    return result.status is not None and result.status < 500 and result.status not in (401, 403)


def _api_finding(rejected: list[PollFailed], requests: int, streak: int) -> Finding | None:
    severity = DEFAULT_SEVERITY[Rule.API_UNAVAILABLE]
    if rejected:
        status = rejected[0].status
        return Finding(
            Rule.API_UNAVAILABLE,
            severity,
            f"the SmartDocumentor API rejects our credentials (HTTP {status or 'token refused'})",
            {
                "observed": {"status": status, "error": rejected[0].error},
                "threshold": {"auth_rejected": True},
                "computed": "a status request answered 401/403 (after a fresh token)",
            },
        )
    if streak >= 2:
        return Finding(
            Rule.API_UNAVAILABLE,
            severity,
            f"every status request failed for {streak} consecutive cycles",
            {
                "observed": {"consecutive_failed_cycles": streak, "requests_last_cycle": requests},
                "threshold": {"consecutive_failed_cycles": 2},
                "computed": "cycles in which every status request failed",
            },
        )
    return None


def _task_fields(ref: TaskRef, status: TaskStatus | None = None) -> dict[str, object]:
    task_id = ref.task_id if ref.task_id is not None else (status.task_id if status else None)
    external = (
        ref.external_id if ref.external_id is not None else (status.external_id if status else None)
    )
    return {"task_id": task_id, "external_id": external}


def _task_fields_for(alert: Alert, status: TaskStatus) -> dict[str, object]:
    return {
        "task_id": alert.task_id if alert.task_id is not None else status.task_id,
        "external_id": alert.external_id if alert.external_id is not None else status.external_id,
    }


def _task_fields_from_key(key: str | None, tasks: dict[str, TaskState]) -> dict[str, object]:
    if key is None or key not in tasks:
        return {}
    state = tasks[key]
    return _task_fields(state.ref, state.status)
