"""Pure alert state transitions: findings + the previous state of a task's alerts → new state
and the changes to report (fire, repeat, resolve, flapping).

No I/O, no clock, no logging: ``now`` is a parameter, states are frozen records.

Life of one alert (one fingerprint = one (task key, rule)):

    (none) ──finding──▶ PENDING ──held for [rules.for]──▶ FIRING ──cleared──▶ RESOLVED
                 └────────── no hold ─────────────────────▲   │  ▲
                                                               │  └─ repeat every repeat_interval
    more than flap_threshold firing→resolved flips within flap_window: the alert is marked
    flapping and held FIRING until its condition has stayed clear for flap_window.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from watchdog.models import Finding, Rule, Severity, TaskRef, fingerprint


class AlertStatus(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Change(StrEnum):
    FIRED = "fired"
    REPEATED = "repeated"
    RESOLVED = "resolved"
    FLAPPING = "flapping"


@dataclass(frozen=True, slots=True)
class Alert:
    """The state of one (task, rule) alert."""

    fingerprint: str
    key: str
    rule: Rule
    severity: Severity
    status: AlertStatus
    summary: str
    evidence: Mapping[str, Any]
    task_id: int | None = None
    external_id: str | None = None
    pending_since: datetime | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    #: when a firing notification was last due (start or repeat)
    last_sent_at: datetime | None = None
    #: firing→resolved flips still inside the flap window
    flips: tuple[datetime, ...] = ()
    flapping: bool = False
    #: while flapping: since when the condition has stayed clear
    clear_since: datetime | None = None
    #: the task's workspace when the alert fired: a label that must not change afterwards
    workspace_id: int | None = None

    @property
    def firing(self) -> bool:
        return self.status is AlertStatus.FIRING


@dataclass(frozen=True, slots=True)
class Transition:
    """A change worth reporting; ``reason`` is set on RESOLVED (cleared/finished/unwatched)."""

    change: Change
    alert: Alert
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """The ``[alerts]`` and ``[rules.for]`` settings, in seconds (0 disables)."""

    repeat_interval: float = 4 * 3600.0
    flap_threshold: int = 4
    flap_window: float = 3600.0
    hold: Mapping[Rule, float] = field(default_factory=dict)


def step(
    current: Mapping[Rule, Alert],
    findings: Sequence[Finding],
    ref: TaskRef,
    now: datetime,
    policy: Policy,
    *,
    scope: Collection[Rule] | None = None,
    reason: str = "cleared",
    force: bool = False,
    workspace_id: int | None = None,
) -> tuple[dict[Rule, Alert], list[Transition]]:
    """Apply one evaluation of a task.

    ``scope`` is the set of rules this evaluation could observe (None: every rule); a rule in
    scope without a finding has cleared, a rule outside it keeps its state. ``force`` resolves
    cleared alerts at once, flapping or not (a finished or unwatched task).
    """
    found = {f.rule: f for f in findings}
    new: dict[Rule, Alert] = dict(current)
    changes: list[Transition] = []
    rules: Iterable[Rule] = set(current) | set(found) if scope is None else set(scope) | set(found)
    for rule in sorted(rules):
        prev = current.get(rule)
        finding = found.get(rule)
        alert: Alert | None
        if finding is not None:
            alert, change = _holding(prev, finding, ref, now, policy, workspace_id)
        elif prev is not None:
            alert, change = _cleared(prev, now, policy, reason=reason, force=force)
        else:
            continue
        if alert is None:
            new.pop(rule, None)
        else:
            new[rule] = alert
        if change is not None:
            changes.append(change)
    return new, changes


def resolve_all(
    current: Mapping[Rule, Alert], now: datetime, reason: str
) -> tuple[dict[Rule, Alert], list[Transition]]:
    """Resolve every firing alert of a task (unwatched), flapping or not; drop pending ones."""
    new: dict[Rule, Alert] = {}
    changes: list[Transition] = []
    for rule, alert in current.items():
        if alert.status is AlertStatus.FIRING:
            resolved = _resolved(alert, now)
            new[rule] = resolved
            changes.append(Transition(Change.RESOLVED, resolved, reason))
        elif alert.status is AlertStatus.RESOLVED:
            new[rule] = alert
    return new, changes


def prune(current: Mapping[Rule, Alert], now: datetime, policy: Policy) -> dict[Rule, Alert]:
    """Forget resolved alerts whose flips have all left the flap window (bounded memory)."""
    window = _span(policy.flap_window)
    kept: dict[Rule, Alert] = {}
    for rule, alert in current.items():
        if alert.status is AlertStatus.RESOLVED:
            flips = tuple(t for t in alert.flips if now - t < window)
            if not flips:
                continue
            kept[rule] = replace(alert, flips=flips)
        else:
            kept[rule] = alert
    return kept


# --- the two cases -----------------------------------------------------------------------


def _holding(  # noqa: PLR0917 (a private helper of step)
    prev: Alert | None,
    finding: Finding,
    ref: TaskRef,
    now: datetime,
    policy: Policy,
    workspace_id: int | None,
) -> tuple[Alert, Transition | None]:
    if prev is not None and prev.status is AlertStatus.FIRING:
        alert = replace(
            prev,
            severity=finding.severity,
            summary=finding.summary,
            evidence=finding.evidence,
            clear_since=None,
        )
        due = prev.last_sent_at is None or (
            policy.repeat_interval > 0 and now - prev.last_sent_at >= _span(policy.repeat_interval)
        )
        if due:
            alert = replace(alert, last_sent_at=now)
            return alert, Transition(Change.REPEATED, alert)
        return alert, None

    hold = policy.hold.get(finding.rule, 0.0)
    if prev is not None and prev.status is AlertStatus.PENDING and prev.pending_since:
        pending_since = prev.pending_since
    else:
        pending_since = now
    flips = prev.flips if prev is not None else ()
    base = Alert(
        fingerprint=fingerprint(ref.key, finding.rule),
        key=ref.key,
        rule=finding.rule,
        severity=finding.severity,
        status=AlertStatus.PENDING,
        summary=finding.summary,
        evidence=finding.evidence,
        task_id=ref.task_id,
        external_id=ref.external_id,
        pending_since=pending_since,
        flips=flips,
        workspace_id=workspace_id,
    )
    if hold > 0 and now - pending_since < _span(hold):
        return base, None
    fired = replace(
        base,
        status=AlertStatus.FIRING,
        pending_since=None,
        starts_at=now,
        ends_at=None,
        last_sent_at=now,
    )
    return fired, Transition(Change.FIRED, fired)


def _cleared(
    prev: Alert, now: datetime, policy: Policy, *, reason: str, force: bool
) -> tuple[Alert | None, Transition | None]:
    if prev.status is AlertStatus.PENDING:
        # The condition did not hold long enough to fire: forget it, keep flip history.
        if prev.flips:
            return replace(prev, status=AlertStatus.RESOLVED, pending_since=None), None
        return None, None
    if prev.status is AlertStatus.RESOLVED:
        return prev, None
    if force:
        resolved = _resolved(prev, now)
        return resolved, Transition(Change.RESOLVED, resolved, reason)
    window = _span(policy.flap_window)
    if prev.flapping:
        if prev.clear_since is None:
            return replace(prev, clear_since=now), None
        if now - prev.clear_since >= window:
            resolved = _resolved(prev, now)
            return resolved, Transition(Change.RESOLVED, resolved, reason)
        return prev, None
    flips = (*(t for t in prev.flips if now - t < window), now)
    if policy.flap_threshold > 0 and len(flips) > policy.flap_threshold:
        flapping = replace(prev, flips=flips, flapping=True, clear_since=now)
        return flapping, Transition(Change.FLAPPING, flapping)
    resolved = _resolved(replace(prev, flips=flips), now)
    return resolved, Transition(Change.RESOLVED, resolved, reason)


def _span(seconds: float) -> timedelta:
    """A policy duration; one past timedelta's range (~2.7 million years) means forever."""
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        return timedelta.max


def _resolved(alert: Alert, now: datetime) -> Alert:
    return replace(
        alert,
        status=AlertStatus.RESOLVED,
        ends_at=now,
        flapping=False,
        clear_since=None,
        pending_since=None,
    )
