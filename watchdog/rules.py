"""The rules engine (pure): (status, phase, history, thresholds, now) -> findings.

No I/O, no clock reads, no logging: every input is a parameter, so the rules are tested with
tables of literal values. ``evaluate`` runs for every observed task on every cycle, so it only
compares numbers on the healthy path; summaries and evidence are built only when a rule fires.

Ages of the API's timestamps (``createdOn``, ``preProcessingStartedOn``) are measured on the
server's clock, ``(now + offset) - timestamp``, where ``offset`` comes from ``clock_offset``;
a negative age counts as 0. ``no_progress`` and ``review_overdue`` compare our own poll times
with our own ``now``, so no offset applies to them. A threshold of 0 disables its rule, and a
rule fires only when the age is strictly greater than its threshold.

Evidence is JSON-ready: ``observed`` (API field values, ISO timestamps, computed ``age_s``),
``threshold`` (the configured values, durations in seconds), ``computed`` (how the age was
measured) and ``clock_offset_s`` when a non-zero offset went into the age.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from watchdog.models import DEFAULT_SEVERITY, Finding, Phase, Rule, TaskRef, TaskStatus, iso
from watchdog.phases import normalised

if TYPE_CHECKING:
    from watchdog.settings import Thresholds

#: Differences between our clock and the API's ``Date`` up to this are ordinary jitter.
SKEW_TOLERANCE = timedelta(seconds=60)
#: 404s in a row before ``task_not_found`` fires (one 404 can be a replication lag).
NOT_FOUND_STREAK = 2

_ZERO = timedelta(0)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_QUEUED = Phase.QUEUED
_PROCESSING = Phase.PROCESSING
_REVIEW = Phase.REVIEW
_DONE = Phase.DONE
_FAILED = Phase.FAILED
_ORDER = {rule: i for i, rule in enumerate(Rule)}


@dataclass(frozen=True, slots=True)
class TaskHistory:
    """What the rules need to remember about a task between polls (local poll times)."""

    #: (taskStatus, normalised taskStatusText, totalPages, restartCount, preProcessingStartedOn)
    signature: tuple[object, ...]
    #: the first poll that observed the current signature
    progress_since: datetime
    #: the first poll that saw the task in phase review; None outside review
    review_since: datetime | None = None


def _signature(status: TaskStatus) -> tuple[object, ...]:
    text = status.task_status_text
    return (
        status.task_status,
        normalised(text) if text is not None else None,
        status.total_pages,
        status.restart_count,
        status.pre_processing_started_on,
    )


def update_history(
    prev: TaskHistory | None, status: TaskStatus, phase: Phase, polled_at: datetime
) -> TaskHistory:
    """The history after a poll at ``polled_at`` observed ``status`` in ``phase``."""
    signature = _signature(status)
    if prev is None:
        return TaskHistory(signature, polled_at, polled_at if phase is _REVIEW else None)
    if phase is _REVIEW:
        review_since = prev.review_since if prev.review_since is not None else polled_at
    else:
        review_since = None
    if signature == prev.signature:
        if review_since is prev.review_since:
            return prev  # the steady state allocates nothing
        return TaskHistory(prev.signature, prev.progress_since, review_since)
    return TaskHistory(signature, polled_at, review_since)


def restore_history(
    status: TaskStatus, progress_since: datetime, review_since: datetime | None
) -> TaskHistory:
    """The history as it was saved (the signature is derived from the last status)."""
    return TaskHistory(_signature(status), progress_since, review_since)


def clock_offset(server_date: datetime | None, local_now: datetime) -> timedelta:
    """``server_date - local_now`` when they differ by more than 60 s, else zero."""
    if server_date is None:
        return _ZERO
    offset = server_date - local_now
    return offset if abs(offset) > SKEW_TOLERANCE else _ZERO


def evaluate(  # noqa: PLR0917 -- the cycle's call signature, fixed with the other layers
    ref: TaskRef,
    status: TaskStatus,
    phase: Phase,
    history: TaskHistory,
    thresholds: Thresholds,
    now: datetime,
    offset: timedelta = _ZERO,
) -> list[Finding]:
    """Every rule of PRODUCT.md's table that holds for this observation, in rule order."""
    findings: list[Finding] = []
    itext = status.integration_status_text
    # integrationStatus numbers are undocumented, so only the text counts.
    if itext is not None and (itext == "Failed" or normalised(itext) == "failed"):
        findings.append(_integration_failed(ref, status, phase))
    if phase is _DONE:
        # A finished task's other alerts resolve; integration_failed applies in every phase.
        return findings

    if phase is _PROCESSING or phase is _QUEUED:
        server_now = now + offset if offset else now
        started = status.pre_processing_started_on
        if started is None:
            limit = thresholds.queued_max
            if limit > 0:
                age = (server_now - status.created_on).total_seconds()
                if age > limit:
                    findings.append(
                        _queued_too_long(ref, status, phase, age=age, limit=limit, offset=offset)
                    )
        elif phase is _PROCESSING:
            age = (server_now - started).total_seconds()
            base = thresholds.processing_max
            if base > 0:
                pages = status.total_pages
                limit = base + thresholds.processing_per_page * pages if pages else base
                if age > limit:
                    findings.append(
                        _processing_too_long(
                            ref, status, age=age, limit=limit, thresholds=thresholds, offset=offset
                        )
                    )
            limit = thresholds.zero_pages_after
            # None means the API did not say: not evidence of zero pages.
            if limit > 0 and status.total_pages == 0 and age > limit:
                findings.append(_no_pages(ref, status, age, limit, offset))
        limit = thresholds.no_progress
        if limit > 0:
            still = (now - history.progress_since).total_seconds()
            if still > limit:
                findings.append(
                    _no_progress(ref, status, phase, history=history, still=still, limit=limit)
                )
    elif phase is _FAILED:
        findings.append(_failed_status(ref, status))
    elif phase is _REVIEW:
        limit = thresholds.review_max
        since = history.review_since
        if limit > 0 and since is not None:
            waited = (now - since).total_seconds()
            if waited > limit:
                findings.append(_review_overdue(ref, status, since, waited, limit))

    max_restarts = thresholds.max_restarts
    if max_restarts > 0 and status.restart_count >= max_restarts:
        findings.append(_too_many_restarts(ref, status, phase, max_restarts))
    if len(findings) > 1:
        findings.sort(key=lambda f: _ORDER[f.rule])
    return findings


def earliest_fire(
    status: TaskStatus,
    phase: Phase,
    history: TaskHistory,
    thresholds: Thresholds,
    offset: timedelta = _ZERO,
) -> datetime | None:
    """The earliest local time at which a time-based rule could start to hold for this task
    if nothing about it changes (None: no time-based rule applies). Rules that fire on a
    change (failed, restarts, integration) cannot be foreseen; ``max_interval`` bounds them.

    Server timestamps are moved to the local clock by ``offset`` (server minus local).
    """
    moments: list[datetime] = []
    if phase is _PROCESSING or phase is _QUEUED:
        started = status.pre_processing_started_on
        if started is None:
            if thresholds.queued_max > 0:
                limit = thresholds.queued_max
                moments.append(_moment(status.created_on, limit, offset))
        elif phase is _PROCESSING:
            if thresholds.processing_max > 0:
                pages = status.total_pages or 0
                limit = thresholds.processing_max + thresholds.processing_per_page * pages
                moments.append(_moment(started, limit, offset))
            if thresholds.zero_pages_after > 0 and status.total_pages == 0:
                moments.append(_moment(started, thresholds.zero_pages_after, offset))
        if thresholds.no_progress > 0:
            moments.append(_moment(history.progress_since, thresholds.no_progress))
    elif phase is _REVIEW and thresholds.review_max > 0 and history.review_since is not None:
        moments.append(_moment(history.review_since, thresholds.review_max))
    return min(moments) if moments else None


def _moment(since: datetime, limit: float, offset: timedelta = _ZERO) -> datetime:
    """``since - offset + limit``; out of the datetime range (a year-1 or year-9999 timestamp
    from the API, a skew of millennia, an enormous threshold) it is the earliest moment, so
    the task is polled every interval, never later than without adaptive polling."""
    try:
        return since - offset + timedelta(seconds=limit)
    except OverflowError:
        return _EARLIEST


def not_found_finding(ref: TaskRef, streak: int) -> Finding | None:
    """``task_not_found`` once the API has answered 404 on ``NOT_FOUND_STREAK`` polls in a row."""
    if streak < NOT_FOUND_STREAK:
        return None
    return _finding(
        Rule.TASK_NOT_FOUND,
        f"{ref.label} was not found by the API on {streak} polls in a row",
        {"consecutive_404": streak},
        {"consecutive_404": NOT_FOUND_STREAK},
        "consecutive polls answered 404",
    )


def format_age(seconds: float) -> str:
    """A compact, human duration: ``45s``, ``1m30s``, ``45m``, ``3h12m``, ``2d4h``.

    Truncated to the two largest units, because a summary needs the magnitude, not precision.
    """
    total = int(seconds) if seconds > 0 else 0
    if total < 60:
        return f"{total}s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    if total < 86400:
        hours, rest = divmod(total, 3600)
        minutes = rest // 60
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, rest = divmod(total, 86400)
    hours = rest // 3600
    return f"{days}d{hours}h" if hours else f"{days}d"


# --- finding builders: only called when a rule fires ------------------------------------


def _finding(
    rule: Rule,
    summary: str,
    observed: dict[str, Any],
    threshold: dict[str, Any],
    computed: str,
    *,
    offset: timedelta = _ZERO,
) -> Finding:
    evidence: dict[str, Any] = {"observed": observed, "threshold": threshold, "computed": computed}
    if offset:
        evidence["clock_offset_s"] = offset.total_seconds()
    return Finding(rule, DEFAULT_SEVERITY[rule], summary, evidence)


def _age(seconds: float) -> float:
    """An age as evidence: never negative, millisecond precision."""
    return round(seconds, 3) if seconds > 0 else 0.0


def _status_text(status: TaskStatus) -> str:
    """How a summary names the status: its text when the API gave one, else its number."""
    if status.task_status_text:
        return status.task_status_text
    return f"#{status.task_status}" if status.task_status is not None else "unknown"


def _status_fields(status: TaskStatus, phase: Phase) -> dict[str, Any]:
    return {
        "taskStatus": status.task_status,
        "taskStatusText": status.task_status_text,
        "phase": phase.value,
    }


def _queued_too_long(
    ref: TaskRef, status: TaskStatus, phase: Phase, *, age: float, limit: float, offset: timedelta
) -> Finding:
    return _finding(
        Rule.QUEUED_TOO_LONG,
        f"{ref.label} has been waiting {format_age(age)} for pre-processing to start "
        f"(limit {format_age(limit)})",
        {
            **_status_fields(status, phase),
            "createdOn": iso(status.created_on),
            "preProcessingStartedOn": None,
            "age_s": _age(age),
        },
        {"queued_max": limit},
        "now - createdOn",
        offset=offset,
    )


def _processing_too_long(
    ref: TaskRef,
    status: TaskStatus,
    *,
    age: float,
    limit: float,
    thresholds: Thresholds,
    offset: timedelta,
) -> Finding:
    pages = status.total_pages
    per_page = thresholds.processing_per_page
    budget = f"limit {format_age(limit)}"
    if per_page and pages:
        budget += f" for {pages} pages"
    return _finding(
        Rule.PROCESSING_TOO_LONG,
        f"{ref.label} has been pre-processing for {format_age(age)} ({budget})",
        {
            **_status_fields(status, Phase.PROCESSING),
            "preProcessingStartedOn": iso(status.pre_processing_started_on),
            "totalPages": pages,
            "age_s": _age(age),
        },
        {
            "processing_max": thresholds.processing_max,
            "processing_per_page": per_page,
            "limit": limit,
        },
        "now - preProcessingStartedOn",
        offset=offset,
    )


def _no_pages(
    ref: TaskRef, status: TaskStatus, age: float, limit: float, offset: timedelta
) -> Finding:
    return _finding(
        Rule.NO_PAGES,
        f"{ref.label} still has 0 pages {format_age(age)} after pre-processing started "
        f"(limit {format_age(limit)})",
        {
            **_status_fields(status, Phase.PROCESSING),
            "preProcessingStartedOn": iso(status.pre_processing_started_on),
            "totalPages": status.total_pages,
            "age_s": _age(age),
        },
        {"zero_pages_after": limit},
        "now - preProcessingStartedOn",
        offset=offset,
    )


def _no_progress(
    ref: TaskRef,
    status: TaskStatus,
    phase: Phase,
    *,
    history: TaskHistory,
    still: float,
    limit: float,
) -> Finding:
    return _finding(
        Rule.NO_PROGRESS,
        f"{ref.label} has not changed for {format_age(still)} in status {_status_text(status)} "
        f"(limit {format_age(limit)})",
        {
            **_status_fields(status, phase),
            "totalPages": status.total_pages,
            "restartCount": status.restart_count,
            "preProcessingStartedOn": iso(status.pre_processing_started_on),
            "unchanged_since": iso(history.progress_since),
            "age_s": _age(still),
        },
        {"no_progress": limit},
        "now - first poll that observed the current status, pages, restarts and start time",
    )


def _failed_status(ref: TaskRef, status: TaskStatus) -> Finding:
    return _finding(
        Rule.FAILED_STATUS,
        f"{ref.label} failed with status {_status_text(status)}",
        {
            **_status_fields(status, Phase.FAILED),
            "restartCount": status.restart_count,
        },
        {},
        "phase from taskStatusText, else taskStatus",
    )


def _integration_failed(ref: TaskRef, status: TaskStatus, phase: Phase) -> Finding:
    return _finding(
        Rule.INTEGRATION_FAILED,
        f"{ref.label} failed its integration (integration status {status.integration_status_text})",
        {
            **_status_fields(status, phase),
            "integrationStatus": status.integration_status,
            "integrationStatusText": status.integration_status_text,
        },
        {},
        "integrationStatusText is Failed",
    )


def _review_overdue(
    ref: TaskRef, status: TaskStatus, since: datetime, waited: float, limit: float
) -> Finding:
    return _finding(
        Rule.REVIEW_OVERDUE,
        f"{ref.label} has been waiting for review for {format_age(waited)} "
        f"(limit {format_age(limit)})",
        {
            **_status_fields(status, Phase.REVIEW),
            "review_since": iso(since),
            "age_s": _age(waited),
        },
        {"review_max": limit},
        "now - first poll that saw the task in review",
    )


def _too_many_restarts(
    ref: TaskRef, status: TaskStatus, phase: Phase, max_restarts: int
) -> Finding:
    return _finding(
        Rule.TOO_MANY_RESTARTS,
        f"{ref.label} has been reprocessed {status.restart_count} times "
        f"(alerting at {max_restarts} or more)",
        {
            **_status_fields(status, phase),
            "restartCount": status.restart_count,
            "preProcessingStartedOn": iso(status.pre_processing_started_on),
        },
        {"max_restarts": max_restarts},
        "restartCount >= max_restarts",
    )
