"""The only structlog configuration, plus the bridge that renders stdlib log records (aiohttp,
apscheduler, asyncio) through the same pipeline.

Every line is one JSON object (or one console line) with ``event``, ``level``, ``timestamp``
(ISO-8601 UTC with ``Z``), ``service`` and ``version``; exceptions become a structured
``exception`` field, never a multi-line traceback. Each line is flushed as it is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from importlib import metadata
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

SERVICE = "sd-watchdog"

try:
    VERSION = metadata.version(SERVICE)
except metadata.PackageNotFoundError:  # running from a source tree without installing
    VERSION = "0+unknown"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR

Logger = structlog.typing.FilteringBoundLogger


def _add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("service", SERVICE)
    event_dict.setdefault("version", VERSION)
    return event_dict


def _utc_z(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    stamp = event_dict.get("timestamp")
    if isinstance(stamp, str) and stamp.endswith("+00:00"):
        event_dict["timestamp"] = stamp[:-6] + "Z"
    return event_dict


def _exception_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``exc_info`` → ``exception: {type, message}``: one line, no traceback text."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is None or exc_info is False:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = None
    if exc is not None:
        event_dict["exception"] = {"type": type(exc).__name__, "message": str(exc)[:500]}
    return event_dict


def _leading_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``event``, ``level`` and ``timestamp`` first: easier to read in a raw log."""
    head = {k: event_dict.pop(k) for k in ("event", "level", "timestamp") if k in event_dict}
    head.update(event_dict)
    return head


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _utc_z,
        _add_service,
        _exception_fields,
        _leading_keys,
    ]


def _renderer(fmt: str, stream: TextIO) -> Processor:
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer(sort_keys=False, default=str)


class _FlushingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """StreamHandler already flushes each record; this one also survives a closed stream."""

    def handleError(self, record: logging.LogRecord) -> None:
        # A closed stdout (the reader went away) must not print tracebacks to stderr.
        return


def configure(level: str = "info", fmt: str = "json", *, stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger; safe to call again (tests do)."""
    out = stream if stream is not None else sys.stdout
    shared = _shared_processors()
    renderer = _renderer(fmt, out)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = _FlushingHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _stdlib_event_name,
                _leading_keys,
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # APScheduler narrates every run at INFO and reports overruns as WARNING text; the
    # watchdog reports those itself (cycle.completed / cycle.overrun), so keep only errors.
    for name in ("apscheduler", "apscheduler.scheduler", "apscheduler.executors.default"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.captureWarnings(True)


def _stdlib_event_name(
    _: WrappedLogger, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Stdlib lines keep their text as ``message`` and get a dotted event name of their own."""
    logger_name = str(event_dict.get("logger") or "python")
    event_dict["message"] = str(event_dict.pop("event", ""))
    event_dict["event"] = f"{logger_name.split('.', maxsplit=1)[0]}.log"
    return event_dict


def get_logger(**bindings: Any) -> Logger:
    logger: Logger = structlog.get_logger(**bindings)
    return logger
