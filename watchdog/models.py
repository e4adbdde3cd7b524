"""Frozen records shared by every layer: task references, observations, findings, poll results.

Nothing here does I/O; the same records feed the rules, the alert state, the store, the log
fields and the webhook payload.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any


class Phase(StrEnum):
    """Where a task is in its life, derived from its status (see phases.py)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    REVIEW = "review"
    DONE = "done"
    FAILED = "failed"


class Severity(IntEnum):
    """Alert severity; ordered so that ``min_severity`` filters compare naturally."""

    INFO = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Severity:
        return cls[value.upper()]


class Rule(StrEnum):
    """The stable rule names of PRODUCT.md."""

    QUEUED_TOO_LONG = "queued_too_long"
    PROCESSING_TOO_LONG = "processing_too_long"
    TOO_MANY_RESTARTS = "too_many_restarts"
    NO_PAGES = "no_pages"
    NO_PROGRESS = "no_progress"
    FAILED_STATUS = "failed_status"
    INTEGRATION_FAILED = "integration_failed"
    TASK_NOT_FOUND = "task_not_found"
    REVIEW_OVERDUE = "review_overdue"
    API_UNAVAILABLE = "api_unavailable"


DEFAULT_SEVERITY: Mapping[Rule, Severity] = {
    Rule.QUEUED_TOO_LONG: Severity.WARNING,
    Rule.PROCESSING_TOO_LONG: Severity.CRITICAL,
    Rule.TOO_MANY_RESTARTS: Severity.CRITICAL,
    Rule.NO_PAGES: Severity.WARNING,
    Rule.NO_PROGRESS: Severity.WARNING,
    Rule.FAILED_STATUS: Severity.CRITICAL,
    Rule.INTEGRATION_FAILED: Severity.WARNING,
    Rule.TASK_NOT_FOUND: Severity.WARNING,
    Rule.REVIEW_OVERDUE: Severity.INFO,
    Rule.API_UNAVAILABLE: Severity.CRITICAL,
}

#: The pseudo task key of the one ``api_unavailable`` alert.
API_KEY = "api"


def fingerprint(key: str, rule: str) -> str:
    """A stable id of (task key, rule): the same across restarts, hosts and versions."""
    return hashlib.sha256(f"{key}\x00{rule}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A configured task: by ID (key ``id:<n>``) or by external ID (key ``ext:<s>``)."""

    key: str
    task_id: int | None = None
    external_id: str | None = None

    @classmethod
    def by_id(cls, task_id: int) -> TaskRef:
        return cls(key=f"id:{task_id}", task_id=task_id)

    @classmethod
    def by_external_id(cls, external_id: str) -> TaskRef:
        return cls(key=f"ext:{external_id}", external_id=external_id)

    @classmethod
    def from_key(cls, key: str) -> TaskRef:
        """The inverse of ``key`` (``id:<n>`` or ``ext:<s>``)."""
        kind, _, value = key.partition(":")
        if kind == "id" and value.isdigit():
            return cls.by_id(int(value))
        if kind == "ext" and value:
            return cls.by_external_id(value)
        raise ValueError(f"not a task key: {key!r}")

    @property
    def query(self) -> dict[str, str]:
        """The query string that looks this task up in the status endpoint."""
        if self.task_id is not None:
            return {"taskId": str(self.task_id)}
        return {"externalId": self.external_id or ""}

    @property
    def label(self) -> str:
        """How a person names the task in a summary line."""
        if self.task_id is not None:
            return f"task {self.task_id}"
        return f"task {self.external_id!r}"


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """One ``GetTaskStatusResponse``, parsed and validated (see client.parse_task_status).

    Optional fields of the API are ``None`` when absent; ``restart_count`` is 0 when the API
    omits it (it is only returned once a task has been reprocessed).
    """

    task_id: int
    created_on: datetime
    task_status: int | None = None
    task_status_text: str | None = None
    integration_status: int | None = None
    integration_status_text: str | None = None
    total_pages: int | None = None
    restart_count: int = 0
    pre_processing_started_on: datetime | None = None
    workspace_id: int | None = None
    batch_id: int | None = None
    task_number: int | None = None
    external_id: str | None = None
    display_name: str | None = None
    description: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The status object in the API's own field names (for payloads and ``/tasks``)."""
        return {
            "taskId": self.task_id,
            "workspaceId": self.workspace_id,
            "batchId": self.batch_id,
            "taskNumber": self.task_number,
            "externalId": self.external_id,
            "displayName": self.display_name,
            "description": self.description,
            "createdOn": iso(self.created_on),
            "taskStatus": self.task_status,
            "integrationStatus": self.integration_status,
            "taskStatusText": self.task_status_text,
            "integrationStatusText": self.integration_status_text,
            "totalPages": self.total_pages,
            "restartCount": self.restart_count,
            "preProcessingStartedOn": iso(self.pre_processing_started_on),
        }


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule that holds for a task right now, with the evidence that made it hold."""

    rule: Rule
    severity: Severity
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


# --- poll results: what the client returns for one task, never an exception -------------


@dataclass(frozen=True, slots=True)
class Observed:
    """The API answered 200 with a valid status object."""

    ref: TaskRef
    status: TaskStatus
    server_date: datetime | None = None


@dataclass(frozen=True, slots=True)
class NotFound:
    """The API answered 404 for the task."""

    ref: TaskRef


@dataclass(frozen=True, slots=True)
class PollFailed:
    """No usable answer after the retries: no evidence either way.

    ``auth`` is true when the API rejected our credentials (401/403, token refused).
    ``api_ok`` is true when some attempt got an HTTP answer that was neither 401/403 nor 5xx
    (e.g. a 200 with bad JSON): the API is up even though this poll failed.
    """

    ref: TaskRef
    error: str
    status: int | None = None
    auth: bool = False
    api_ok: bool = False


@dataclass(frozen=True, slots=True)
class Deferred:
    """A retry wait (backoff or Retry-After) reached past the cycle: poll again at ``until``.

    ``until`` is on the client's monotonic clock.
    """

    ref: TaskRef
    until: float
    error: str
    status: int | None = None


PollResult = Observed | NotFound | PollFailed | Deferred


@dataclass(frozen=True, slots=True)
class ApiErrorInfo:
    """One failed request attempt, reported by the client to whoever logs or counts it."""

    endpoint: str  # "status" | "token"
    error: str
    status: int | None
    attempt: int
    will_retry: bool
    message: str
    task_key: str | None = None


_STATUS_NOISE = re.compile(r"[\s_\-]+")


def normalise_status(text: str) -> str:
    """Case-insensitive, ignoring spaces, ``_`` and ``-`` ("To Review" = "toreview")."""
    return _STATUS_NOISE.sub("", text).lower()


def iso(value: datetime | None) -> str | None:
    """ISO-8601 UTC with a ``Z`` suffix (the API's and our logs' format)."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
