"""The ``GetTaskStatusResponse`` parser: garbage becomes ``ApiError("invalid_response")``
naming the field. Plain type checks, no pydantic: this runs for every task of every cycle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from watchdog.errors import ApiError
from watchdog.models import TaskStatus


def invalid_response(message: str) -> ApiError:
    return ApiError("invalid_response", message)


_JSON_TYPES = {"NoneType": "null", "bool": "boolean", "int": "number", "float": "number"}
_JSON_TYPES |= {"str": "string", "list": "array", "dict": "object"}


def _kind(value: object) -> str:
    """The JSON type name of ``value``, for messages (never the value: keep lines short)."""
    return _JSON_TYPES.get(type(value).__name__, type(value).__name__)


#: the API's integers are .NET Int32/Int64; a bigger JSON number is garbage (and 10**400 pages
#: would overflow the float arithmetic of the rules)
_INT64 = range(-(2**63), 2**63)


def _opt_int(data: dict[str, Any], key: str, minimum: int | None = None) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not int:  # also rejects bool, an int subclass
        raise invalid_response(f"{key}: expected an integer, got {_kind(value)}")
    if value not in _INT64:
        raise invalid_response(f"{key}: out of the 64-bit integer range")
    if minimum is not None and value < minimum:
        raise invalid_response(f"{key}: must be >= {minimum}, got {value}")
    return value


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or type(value) is str:
        return value
    raise invalid_response(f"{key}: expected a string, got {_kind(value)}")


def _opt_datetime(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise invalid_response(f"{key}: expected an ISO-8601 datetime, got {_kind(value)}")
    try:
        # Python ≥ 3.11 accepts "Z" and truncates the API's 7-digit fractions to 6
        parsed = datetime.fromisoformat(value)
        # the API's dates are UTC; one without an offset is read as UTC too
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise invalid_response(f"{key}: not an ISO-8601 datetime") from None
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise invalid_response(f"{key}: out of the representable date range") from None


def parse_task_status(data: object) -> TaskStatus:
    """Validate one ``GetTaskStatusResponse``; ``ApiError("invalid_response")`` names the field.

    Plain type checks, no pydantic: this runs for every task of every cycle.
    """
    if not isinstance(data, dict):
        raise invalid_response(f"expected a JSON object, got {_kind(data)}")
    task_id = _opt_int(data, "taskId")
    if task_id is None:
        raise invalid_response("taskId: expected an integer, got null")
    created_on = _opt_datetime(data, "createdOn")
    if created_on is None:
        raise invalid_response("createdOn: required, got null")
    task_status = _opt_int(data, "taskStatus")
    task_status_text = _opt_str(data, "taskStatusText")
    if task_status is None and task_status_text is None:
        raise invalid_response("taskStatus and taskStatusText: at least one is required")
    return TaskStatus(
        task_id=task_id,
        created_on=created_on,
        task_status=task_status,
        task_status_text=task_status_text,
        integration_status=_opt_int(data, "integrationStatus"),
        integration_status_text=_opt_str(data, "integrationStatusText"),
        total_pages=_opt_int(data, "totalPages", 0),
        restart_count=_opt_int(data, "restartCount", 0) or 0,
        pre_processing_started_on=_opt_datetime(data, "preProcessingStartedOn"),
        workspace_id=_opt_int(data, "workspaceId"),
        batch_id=_opt_int(data, "batchId"),
        task_number=_opt_int(data, "taskNumber"),
        external_id=_opt_str(data, "externalId"),
        display_name=_opt_str(data, "displayName"),
        description=_opt_str(data, "description"),
    )
