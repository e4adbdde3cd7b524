"""``sd-watchdog check``: one poll cycle over every configured task, a report, an exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from watchdog.client import SmartDocumentorClient
from watchdog.clock import Clock, SystemClock
from watchdog.cycle import CycleReport, Watcher
from watchdog.logs import get_logger
from watchdog.models import ApiErrorInfo
from watchdog.notify import Notifier
from watchdog.settings import Settings
from watchdog.state import TaskState
from watchdog.store import Store
from watchdog.tasks import watched_tasks

EXIT_NOTHING_STUCK = 0
EXIT_STUCK = 1
EXIT_UNREACHABLE = 3


async def run_check(
    settings: Settings,
    *,
    fmt: str = "table",
    notify: bool = False,
    clock: Clock | None = None,
    out: TextIO | None = None,
) -> int:
    """Poll once, print the report on ``out`` (stdout), return the exit code."""
    clock = clock or SystemClock()
    log = get_logger()
    refs = watched_tasks(settings.tasks)
    holder: list[Watcher] = []

    def report_error(info: ApiErrorInfo) -> None:
        if holder:
            holder[0].on_api_error(info)

    store = Store(settings.state.path)
    store.open()
    try:
        notifier = Notifier(settings, store, clock, log)
        async with SmartDocumentorClient(
            settings.api, on_error=report_error, clock=clock
        ) as client:
            watcher = Watcher(settings, client, clock, log=log, store=store, notifier=notifier)
            holder.append(watcher)
            watcher.restore(store.load())
            watcher.set_tasks(refs)
            if not refs:
                log.warning("config.no_tasks")
            report = await watcher.run_cycle()
        if notify and notifier.enabled:
            # Alertmanager forgets a firing alert 4 x resend_interval after its last push:
            # a cron run re-pushes every firing alert, like the daemon's resend job.
            firing = [a for s in watcher.tasks.values() for a in s.firing()]
            firing += [a for a in watcher.api_alerts.values() if a.firing]
            if firing:
                deliveries, superseded = notifier.plan_resend(firing, watcher.statuses())
                store.save(
                    now=clock.now().timestamp(),
                    deliveries=deliveries,
                    superseded_kinds=superseded,
                )
            # Every undelivered change in the store goes out, also from earlier runs.
            await notifier.start()
            try:
                await notifier.drain(settings.poll.shutdown_timeout)
            finally:
                await notifier.close()
    finally:
        store.close()
    document = build_document(watcher.tasks.values(), report)
    stream = out or sys.stdout
    if fmt == "json":
        stream.write(json.dumps(document) + "\n")
    else:
        stream.write(render_table(document))
    stream.flush()
    if "error" in document:
        return EXIT_UNREACHABLE
    return EXIT_STUCK if document["stuck"] else EXIT_NOTHING_STUCK


def build_document(states: Any, report: CycleReport) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    for state in states:
        tasks.append(_task_entry(state))
    document: dict[str, Any] = {
        "tasks": tasks,
        "stuck": report.stuck,
        "failed": report.failed,
        "polled": report.polled,
        "skipped": report.skipped,
        "api_unavailable": report.api_unavailable,
        "duration_s": round(report.duration_s, 3),
    }
    attempted = report.polled + report.failed + report.outcomes.get("deferred", 0)
    if attempted and report.polled == 0:
        document["error"] = (
            "the API rejected our credentials"
            if report.auth_rejected
            else "no task could be polled: the API is unreachable or failing"
        )
    return document


def _task_entry(state: TaskState) -> dict[str, Any]:
    status = state.status
    return {
        "task_id": state.ref.task_id if state.ref.task_id is not None else _sid(state),
        "external_id": state.ref.external_id
        if state.ref.external_id is not None
        else (status.external_id if status else None),
        "key": state.ref.key,
        "phase": state.phase_name if state.last_outcome != "failed" else "unknown",
        "status": (status.task_status_text or status.task_status) if status else None,
        "alerts": sorted(a.rule.value for a in state.firing()),
        "summaries": [a.summary for a in state.firing()],
    }


def _sid(state: TaskState) -> int | None:
    return state.status.task_id if state.status is not None else None


def render_table(document: dict[str, Any]) -> str:
    rows: list[Sequence[str]] = [("TASK", "EXTERNAL ID", "PHASE", "STATUS", "ALERTS")]
    for task in document["tasks"]:
        rows.append(
            (
                str(task["task_id"] if task["task_id"] is not None else "-"),
                str(task["external_id"] or "-"),
                task["phase"],
                str(task["status"] if task["status"] is not None else "-"),
                ", ".join(task["alerts"]) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    summary = (
        f"{len(document['tasks'])} tasks: {document['stuck']} stuck, "
        f"{document['failed']} failed to poll, {document['skipped']} skipped"
    )
    if "error" in document:
        summary += f" — {document['error']}"
    for task in document["tasks"]:
        for line in task["summaries"]:
            lines.append(f"  ! {line}")
    return "\n".join([*lines, summary]) + "\n"
