"""Pure payload building: alert changes → the webhook payload (version 1), a Slack/Teams text
message, and Alertmanager API v2 alerts; plus the HMAC signature of PRODUCT.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from watchdog.alerts import Alert, Change, Transition
from watchdog.models import TaskStatus, iso

SOURCE = "sd-watchdog"

#: the changes that notify a receiver
NOTIFYING = frozenset({Change.FIRED, Change.REPEATED, Change.RESOLVED, Change.FLAPPING})


@dataclass(frozen=True, slots=True)
class Notice:
    """One alert as a receiver sees it: the alert after the change, and its task's last status."""

    alert: Alert
    change: Change
    status: TaskStatus | None

    @property
    def firing(self) -> bool:
        return self.change is not Change.RESOLVED


def notices(
    changes: Sequence[Transition], statuses: Mapping[str, TaskStatus | None], *, send_resolved: bool
) -> list[Notice]:
    """The notifying changes, in order; resolved ones only when ``send_resolved``."""
    result: list[Notice] = []
    for change in changes:
        if change.change not in NOTIFYING:
            continue
        if change.change is Change.RESOLVED and not send_resolved:
            continue
        result.append(Notice(change.alert, change.change, statuses.get(change.alert.key)))
    return result


def alert_document(notice: Notice) -> dict[str, Any]:
    alert = notice.alert
    return {
        "status": "firing" if notice.firing else "resolved",
        "fingerprint": alert.fingerprint,
        "rule": alert.rule.value,
        "severity": alert.severity.label,
        "task_id": alert.task_id
        if alert.task_id is not None
        else (notice.status.task_id if notice.status else None),
        "external_id": alert.external_id
        if alert.external_id is not None
        else (notice.status.external_id if notice.status else None),
        "summary": alert.summary,
        "evidence": dict(alert.evidence),
        "task": notice.status.to_api() if notice.status is not None else None,
        "starts_at": iso(alert.starts_at),
        "ends_at": None if notice.firing else iso(alert.ends_at),
        "flapping": alert.flapping,
    }


def webhook_body(batch: Sequence[Notice]) -> str:
    """The version-1 payload: top-level ``status`` is firing when any alert in it fires."""
    documents = [alert_document(n) for n in batch]
    return json.dumps(
        {
            "version": "1",
            "source": SOURCE,
            "status": "firing" if any(n.firing for n in batch) else "resolved",
            "alerts": documents,
        },
        separators=(",", ":"),
        default=str,
    )


_ICONS = {"firing": "🔥", "resolved": "✅"}


def slack_body(batch: Sequence[Notice]) -> str:
    """A Slack/Teams-compatible incoming-webhook message (``text`` in mrkdwn)."""
    lines = []
    for notice in batch:
        alert = notice.alert
        state = "firing" if notice.firing else "resolved"
        flap = " (flapping)" if alert.flapping else ""
        lines.append(
            f"{_ICONS[state]} *{state.upper()}*{flap} `{alert.rule.value}` "
            f"[{alert.severity.label}] {alert.summary}"
        )
    firing = sum(1 for n in batch if n.firing)
    head = f"sd-watchdog: {firing} firing, {len(batch) - firing} resolved"
    return json.dumps({"text": "\n".join([head, *lines])}, ensure_ascii=False)


def alertmanager_body(batch: Sequence[Notice], now: datetime, resend_interval: float) -> str:
    """Alertmanager API v2 alerts: firing ones end at now + 4 x resend unless re-pushed."""
    ends_firing = now + timedelta(seconds=4 * resend_interval)
    documents = []
    for notice in batch:
        alert = notice.alert
        labels = {
            "alertname": alert.rule.value,
            "severity": alert.severity.label,
            "source": SOURCE,
        }
        if alert.task_id is not None:
            labels["task_id"] = str(alert.task_id)
        elif alert.external_id is not None:
            labels["external_id"] = alert.external_id
        if alert.workspace_id is not None:  # fixed when it fired: labels never change
            labels["workspace_id"] = str(alert.workspace_id)
        documents.append(
            {
                "labels": labels,
                "annotations": {
                    "summary": alert.summary,
                    "evidence": json.dumps(dict(alert.evidence), sort_keys=True, default=str),
                },
                "startsAt": iso(alert.starts_at or now),
                "endsAt": iso(ends_firing if notice.firing else (alert.ends_at or now)),
            }
        )
    return json.dumps(documents, separators=(",", ":"))


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``, as in X-Watchdog-Signature."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def chunks(items: Sequence[Notice], size: int) -> list[Sequence[Notice]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
