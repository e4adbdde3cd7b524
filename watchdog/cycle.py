"""One poll cycle: fetch every due task → classify → evaluate rules → alert transitions → one
``cycle.completed`` summary. The cycle is the last catch for trouble with the API: a failed
poll is no evidence either way and never escapes as an exception.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog

from watchdog import alerts as alert_engine
from watchdog.alerts import Alert, AlertStatus, Policy, Transition
from watchdog.clock import Clock
from watchdog.events import log_changes, task_fields
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
    SKEW_TOLERANCE,
    TaskHistory,
    clock_offset,
    earliest_fire,
    evaluate,
    not_found_finding,
    update_history,
)
from watchdog.settings import Settings, Thresholds
from watchdog.state import Journal, TaskState, restored
from watchdog.store import Snapshot, Store

if TYPE_CHECKING:
    from watchdog.notify import Notifier


#: the rules a successful observation can judge (``task_not_found`` clears when a task is seen)
_OBSERVED_SCOPE = frozenset(Rule) - {Rule.API_UNAVAILABLE}
_NOT_FOUND_SCOPE = frozenset({Rule.TASK_NOT_FOUND})
_API_REF = TaskRef(key=API_KEY)


class Poller(Protocol):
    async def poll(self, ref: TaskRef, *, deadline: float | None = None) -> PollResult: ...


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
        self._settings = settings  # poll and api: fixed for the watcher's life
        self._store = store
        self._notifier = notifier
        self._journal = Journal()
        #: alert changes to log once they are committed (a log line must never announce an
        #: alert that a crash before the commit would forget: it would fire again, anew)
        self._unlogged: list[tuple[Sequence[Transition], TaskStatus | None]] = []
        self._poller = poller
        self._clock = clock
        self._log = log or get_logger()
        self.apply_settings(settings)
        self.tasks: dict[str, TaskState] = {}
        self.api_alerts: dict[Rule, Alert] = {}
        self._all_failed_streak = 0
        self._unknown_seen: set[str] = set()
        self._skew_logged = False
        #: (wall, monotonic) when the last cycle judged its tasks: wall-clock steps show here
        self._wall_mark: tuple[datetime, float] | None = None
        self._cycle_api_errors = 0
        self._suppress_api_errors = False
        self.cycles = 0

    def apply_settings(self, settings: Settings) -> None:
        """New rules, phases and alert policy (also on a reload); state is kept. The poll and
        API settings stay those the watcher was built with: changing them needs a restart."""
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
            self._journal.track(state.alerts, new)
            changes += resolved
        for key, ref in wanted.items():
            if key not in self.tasks:
                self.tasks[key] = TaskState(ref=ref)
        self._unlogged.append((changes, None))
        self.commit(changes, leaving)
        return changes

    # --- persistence -------------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> None:
        """Resume from the store: task history, alert state (same fingerprints and starts_at)
        and the API failure streak. Call before ``set_tasks``."""
        tasks, api_alerts = restored(
            snapshot, self._clock.now().timestamp(), self._clock.monotonic()
        )
        self.tasks.update(tasks)
        self.api_alerts.update(api_alerts)
        self._all_failed_streak = int(snapshot.meta.get("api_failed_streak", "0") or 0)

    def statuses(self) -> dict[str, TaskStatus | None]:
        return {key: state.status for key, state in self.tasks.items()}

    def commit(
        self,
        changes: Sequence[Transition],
        leaving: Mapping[str, TaskStatus | None] | None = None,
    ) -> None:
        """Write what changed, and the deliveries it causes, in one transaction."""
        journal = self._journal
        if self._store is None:
            journal.clear()
            self._log_committed()
            return
        wall = self._clock.now().timestamp()
        rows = journal.changed_rows(wall, self._clock.monotonic())
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
            alerts=list(journal.alerts.values()),
            deleted_alerts=list(journal.deleted),
            deliveries=deliveries,
            meta={"api_failed_streak": str(self._all_failed_streak)},
        )  # StoreError: the daemon stops (exit 4) without announcing what it could not keep
        journal.clear()
        self._log_committed()
        if deliveries and self._notifier is not None:
            self._notifier.wake()

    def _log_committed(self) -> None:
        unlogged, self._unlogged = self._unlogged, []
        for changes, status in unlogged:
            log_changes(self._log, changes, status)

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
        # ``done_interval`` must not slip a whole cycle because of jitter. A deferred task
        # gets no slack: its due time is the end of the server's Retry-After.
        horizon = start_mono + min(interval * 0.1, 1.0)
        due = [
            s
            for s in self.tasks.values()
            if s.due <= (start_mono if s.last_outcome == "deferred" else horizon)
        ]
        skipped = len(self.tasks) - len(due)
        self._cycle_api_errors = 0
        self._suppress_api_errors = self.api_down

        results = await self._poll_all(due, deadline=start_mono + interval)
        now = self._clock.now()
        self._follow_wall_clock(now)
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
                self._journal.touch(state)
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
                        self._journal.track(state.alerts, pruned)
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

    def _follow_wall_clock(self, now: datetime) -> None:
        """Carry our own poll times over a step of the wall clock (NTP, an operator, a VM
        resumed): when wall time since the last cycle differs from monotonic time by more
        than the skew tolerance, the moments that durations are measured from move by that
        step, so no_progress, review_overdue, [rules.for], repeat_interval and flapping keep
        measuring elapsed time, and a step neither mass-fires nor mass-resolves. (Monotonic
        time stops while a host is suspended: that time is not counted either.)"""
        mono = self._clock.monotonic()
        mark, self._wall_mark = self._wall_mark, (now, mono)
        if mark is None:
            return
        step = (now - mark[0]) - timedelta(seconds=mono - mark[1])
        if abs(step) <= SKEW_TOLERANCE:
            return
        self._log.warning("clock.jump", step_s=round(step.total_seconds(), 1), local_time=iso(now))
        for state in self.tasks.values():
            if state.history is not None:
                state.history = _shifted_history(state.history, step)
                self._journal.touch(state)
            if state.alerts:
                moved = {rule: _shifted_alert(alert, step) for rule, alert in state.alerts.items()}
                self._journal.track(state.alerts, moved)
                state.alerts = moved
        if self.api_alerts:
            moved = {rule: _shifted_alert(alert, step) for rule, alert in self.api_alerts.items()}
            self._journal.track(self.api_alerts, moved)
            self.api_alerts = moved

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
            Policy(
                repeat_interval=self._policy.repeat_interval,
                flap_threshold=0,
                hold={r: s for r, s in self._policy.hold.items() if r is Rule.API_UNAVAILABLE},
            ),
            scope=(Rule.API_UNAVAILABLE,),
        )
        self._journal.track(previous, self.api_alerts)
        self._unlogged.append((changes, None))
        return changes

    # --- one task ------------------------------------------------------------------------------

    def _apply(self, state: TaskState, result: PollResult, now: datetime) -> list[Transition]:
        frozen = self.api_down  # while the API is down, task alerts neither fire nor resolve
        self._journal.touch(state)
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
            self._log.info("task.not_found", **task_fields(state.ref))
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
                **task_fields(state.ref, status),
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
                    **task_fields(state.ref, status),
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
        if not findings and not state.alerts:
            return []  # the common healthy case: nothing to fire, nothing to resolve
        previous = state.alerts
        workspace = state.status.workspace_id if state.status is not None else None
        state.alerts, changes = alert_engine.step(
            state.alerts, findings, state.ref, now, self._policy,
            scope=scope, reason=reason, force=force, workspace_id=workspace,
        )  # fmt: skip
        self._journal.track(previous, state.alerts)
        self._unlogged.append((changes, state.status))
        return changes


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


def _shifted(moment: datetime, step: timedelta) -> datetime:
    try:
        return moment + step
    except OverflowError:  # a moment at the edge of the datetime range stays where it is
        return moment


def _shifted_history(history: TaskHistory, step: timedelta) -> TaskHistory:
    review = history.review_since
    return replace(
        history,
        progress_since=_shifted(history.progress_since, step),
        review_since=None if review is None else _shifted(review, step),
    )


def _shifted_alert(alert: Alert, step: timedelta) -> Alert:
    """The moments alert timing is measured from (not starts_at/ends_at: reported facts)."""
    pending, sent, clear = alert.pending_since, alert.last_sent_at, alert.clear_since
    return replace(
        alert,
        pending_since=None if pending is None else _shifted(pending, step),
        last_sent_at=None if sent is None else _shifted(sent, step),
        clear_since=None if clear is None else _shifted(clear, step),
        flips=tuple(_shifted(t, step) for t in alert.flips),
    )


def _task_fields_from_key(key: str | None, tasks: dict[str, TaskState]) -> dict[str, object]:
    if key is None or key not in tasks:
        return {}
    state = tasks[key]
    return task_fields(state.ref, state.status)
