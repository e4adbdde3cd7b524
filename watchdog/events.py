"""Alert changes as log events: task.stuck / task.recovered / alert.flapping for tasks,
api.unavailable / api.recovered for the API as a whole."""

from __future__ import annotations

from collections.abc import Sequence

from watchdog.alerts import Alert, Change, Transition
from watchdog.logs import Logger
from watchdog.models import API_KEY, TaskRef, TaskStatus, iso


def task_fields(ref: TaskRef, status: TaskStatus | None = None) -> dict[str, object]:
    """``task_id`` and ``external_id``, from the configuration or else from the last status."""
    task_id = ref.task_id if ref.task_id is not None else (status.task_id if status else None)
    external = (
        ref.external_id if ref.external_id is not None else (status.external_id if status else None)
    )
    return {"task_id": task_id, "external_id": external}


def _alert_task_fields(alert: Alert, status: TaskStatus | None) -> dict[str, object]:
    return task_fields(
        TaskRef(key=alert.key, task_id=alert.task_id, external_id=alert.external_id), status
    )


def log_changes(
    log: Logger, changes: Sequence[Transition], status: TaskStatus | None = None
) -> None:
    """One event per change; repeats are not logged (deliveries are)."""
    for change in changes:
        alert = change.alert
        fields = {
            "rule": alert.rule.value,
            "severity": alert.severity.label,
            "fingerprint": alert.fingerprint,
        }
        if alert.key == API_KEY:
            if change.change is Change.FIRED:
                log.error(
                    "api.unavailable", **fields, summary=alert.summary, evidence=alert.evidence
                )
            elif change.change is Change.RESOLVED:
                log.info("api.recovered", **fields)
            continue
        task = _alert_task_fields(alert, status)
        if change.change is Change.FIRED:
            log.warning(
                "task.stuck",
                **task,
                **fields,
                summary=alert.summary,
                evidence=alert.evidence,
                starts_at=iso(alert.starts_at),
            )
        elif change.change is Change.RESOLVED:
            log.info(
                "task.recovered",
                **task,
                **fields,
                reason=change.reason,
                starts_at=iso(alert.starts_at),
                ends_at=iso(alert.ends_at),
            )
        elif change.change is Change.FLAPPING:
            log.warning(
                "alert.flapping", **task, **fields, flips=len(alert.flips), summary=alert.summary
            )
