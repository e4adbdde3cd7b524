"""The embedded SQLite state: per-task history, per-(task, rule) alert state and the delivery
outbox. One transaction per cycle; WAL; the schema is versioned (``PRAGMA user_version``) and
migrated on open. Any sqlite3/OS error becomes ``StoreError`` here, once.

A restart resumes exactly: alerts keep their fingerprint and ``starts_at`` (no new
``task.stuck``), ``no_progress`` clocks keep running, and undelivered notifications stay queued.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watchdog.alerts import Alert, AlertStatus
from watchdog.errors import ApiError, StoreError
from watchdog.models import Phase, Rule, Severity, TaskStatus, iso
from watchdog.status import parse_task_status

SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE tasks (
        key              TEXT PRIMARY KEY,
        status           TEXT,              -- the last API status object (JSON), or NULL
        phase            TEXT,
        progress_since   TEXT,              -- no_progress clock (ISO-8601 UTC)
        review_since     TEXT,
        not_found_streak INTEGER NOT NULL DEFAULT 0,
        finished         INTEGER NOT NULL DEFAULT 0,
        next_poll_at     REAL,              -- unix seconds; NULL = due now
        updated_at       REAL NOT NULL
    );
    CREATE TABLE alerts (
        fingerprint   TEXT PRIMARY KEY,
        key           TEXT NOT NULL,
        rule          TEXT NOT NULL,
        severity      INTEGER NOT NULL,
        status        TEXT NOT NULL,
        summary       TEXT NOT NULL,
        evidence      TEXT NOT NULL,
        task_id       INTEGER,
        external_id   TEXT,
        pending_since TEXT,
        starts_at     TEXT,
        ends_at       TEXT,
        last_sent_at  TEXT,
        flips         TEXT NOT NULL DEFAULT '[]',
        flapping      INTEGER NOT NULL DEFAULT 0,
        clear_since   TEXT,
        workspace_id  INTEGER,
        updated_at    REAL NOT NULL
    );
    CREATE INDEX alerts_by_key ON alerts (key);
    CREATE TABLE outbox (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id     TEXT NOT NULL UNIQUE,
        target          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        body            TEXT NOT NULL,
        alerts          INTEGER NOT NULL,
        created_at      REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT
    );
    CREATE INDEX outbox_by_target ON outbox (target, seq);
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
}


@dataclass(frozen=True, slots=True)
class TaskRow:
    """The persisted part of a task's state."""

    key: str
    status: TaskStatus | None
    phase: Phase | None
    progress_since: datetime | None
    review_since: datetime | None
    not_found_streak: int
    finished: bool
    next_poll_at: float | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One queued request to one receiver; ``delivery_id`` is the same on every attempt."""

    delivery_id: str
    target: str
    kind: str  # "webhook" | "alertmanager" | "alertmanager-resend"
    body: str
    alerts: int
    created_at: float
    next_attempt_at: float
    attempts: int = 0
    last_error: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything ``load`` restores at start."""

    tasks: dict[str, TaskRow]
    alerts: list[Alert]
    meta: dict[str, str]


class Store:
    """The state file. ``open`` creates or migrates it; every method raises only StoreError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"state path {self.path}: cannot create its folder: {exc}") from exc
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(
                f"state path {self.path}: cannot open: {_describe(exc, self.path)}"
            ) from exc
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            # A corrupt or foreign file fails here, before anything is written to it.
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StoreError(f"state file {self.path} is corrupt (PRAGMA quick_check)")
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                # Only a new file can take auto_vacuum, and only before WAL writes page one.
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL
            db.execute("PRAGMA foreign_keys = ON")
            self._migrate(db)
            # Prove the file is writable now, not at the end of the first cycle.
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('opened_at', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (iso(datetime.now(UTC)),),
            )
        except StoreError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"state file {self.path}: {_describe(exc, self.path)}") from exc
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            # Closing releases the file even when this fails; the WAL is replayed on next open.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"state file {self.path} has schema {version}, newer than this version "
                f"understands ({SCHEMA_VERSION}); upgrade sd-watchdog or use another file"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                _run_script(db, _MIGRATIONS[target])
                db.execute(f"PRAGMA user_version = {target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the state store is not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: {_describe(exc, self.path)}") from exc

    # --- load -------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        try:
            tasks: dict[str, TaskRow] = {}
            for row in self.db.execute(
                "SELECT key, status, phase, progress_since, review_since, not_found_streak, "
                "finished, next_poll_at FROM tasks"
            ):
                status = parse_task_status(json.loads(row[1])) if row[1] else None
                tasks[row[0]] = TaskRow(
                    key=row[0],
                    status=status,
                    phase=Phase(row[2]) if row[2] else None,
                    progress_since=_dt(row[3]),
                    review_since=_dt(row[4]),
                    not_found_streak=row[5],
                    finished=bool(row[6]),
                    next_poll_at=row[7],
                )
            alerts = [
                _alert(row) for row in self.db.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts")
            ]
            meta = dict(self.db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: {_describe(exc, self.path)}") from exc
        except (ValueError, KeyError, TypeError, ApiError) as exc:
            raise StoreError(
                f"state file {self.path} holds data this version cannot read: {exc}"
            ) from exc
        return Snapshot(tasks=tasks, alerts=alerts, meta=meta)

    # --- the per-cycle write ----------------------------------------------------------------

    def save(
        self,
        *,
        now: float,
        tasks: Iterable[TaskRow] = (),
        alerts: Iterable[Alert] = (),
        deleted_alerts: Iterable[str] = (),
        deliveries: Iterable[Delivery] = (),
        meta: dict[str, str] | None = None,
        superseded_kinds: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write one cycle's changes in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO tasks (key, status, phase, progress_since, review_since, "
                "not_found_streak, finished, next_poll_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "status = excluded.status, phase = excluded.phase, "
                "progress_since = excluded.progress_since, review_since = excluded.review_since, "
                "not_found_streak = excluded.not_found_streak, finished = excluded.finished, "
                "next_poll_at = excluded.next_poll_at, updated_at = excluded.updated_at",
                (_task_values(t, now) for t in tasks),
            )
            db.executemany(
                f"INSERT OR REPLACE INTO alerts ({_ALERT_COLUMNS}, updated_at) "
                f"VALUES ({', '.join('?' * (_ALERT_COLUMN_COUNT + 1))})",
                ((*_alert_values(a), now) for a in alerts),
            )
            db.executemany(
                "DELETE FROM alerts WHERE fingerprint = ?", ((f,) for f in deleted_alerts)
            )
            for target, kind in superseded_kinds:
                db.execute(
                    "DELETE FROM outbox WHERE target = ? AND kind = ? AND attempts = 0",
                    (target, kind),
                )
            db.executemany(
                "INSERT INTO outbox (delivery_id, target, kind, body, alerts, created_at, "
                "next_attempt_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    (d.delivery_id, d.target, d.kind, d.body, d.alerts, d.created_at,
                     d.next_attempt_at)
                    for d in deliveries
                ),
            )  # fmt: skip
            if meta:
                db.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    meta.items(),
                )

    # --- the outbox ----------------------------------------------------------------------------

    def next_delivery(self, target: str) -> Delivery | None:
        """The head of a receiver's queue (deliveries go out in order, one at a time)."""
        try:
            row = self.db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE target = ? ORDER BY seq LIMIT 1",
                (target,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: {_describe(exc, self.path)}") from exc
        return _delivery(row) if row else None

    def delivered(self, seq: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def retry_later(self, seq: int, *, attempts: int, next_attempt_at: float, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE seq = ?",
                (attempts, next_attempt_at, error[:500], seq),
            )

    def targets(self) -> list[str]:
        try:
            return [r[0] for r in self.db.execute("SELECT DISTINCT target FROM outbox")]
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: {_describe(exc, self.path)}") from exc

    def outbox_depth(self) -> int:
        try:
            return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: {_describe(exc, self.path)}") from exc

    def drop_target(self, target: str) -> list[Delivery]:
        """Remove every delivery of a receiver that is no longer configured."""
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE target = ? ORDER BY seq", (target,)
            ).fetchall()
            db.execute("DELETE FROM outbox WHERE target = ?", (target,))
        return [_delivery(r) for r in rows]

    # --- housekeeping ----------------------------------------------------------------------------

    def prune(self, *, now: float, retention: float, watched: Iterable[str]) -> dict[str, int]:
        """Delete resolved alerts and history of unwatched tasks older than ``retention``."""
        if retention <= 0:
            return {"alerts": 0, "tasks": 0}
        cutoff = now - retention
        keep = set(watched)
        with self._transaction() as db:
            alerts = db.execute(
                "DELETE FROM alerts WHERE status = 'resolved' AND updated_at < ?", (cutoff,)
            ).rowcount
            stale = [
                k
                for (k,) in db.execute("SELECT key FROM tasks WHERE updated_at < ?", (cutoff,))
                if k not in keep
            ]
            db.executemany("DELETE FROM tasks WHERE key = ?", ((k,) for k in stale))
        try:
            self.db.executescript("PRAGMA incremental_vacuum;")  # runs to the end
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: {_describe(exc, self.path)}") from exc
        return {"alerts": alerts, "tasks": len(stale)}


# --- row mapping -----------------------------------------------------------------------------

_ALERT_FIELDS = (
    "fingerprint", "key", "rule", "severity", "status", "summary", "evidence", "task_id",
    "external_id", "pending_since", "starts_at", "ends_at", "last_sent_at", "flips", "flapping",
    "clear_since", "workspace_id",
)  # fmt: skip
_ALERT_COLUMNS = ", ".join(_ALERT_FIELDS)
_ALERT_COLUMN_COUNT = len(_ALERT_FIELDS)
_OUTBOX_COLUMNS = (
    "seq, delivery_id, target, kind, body, alerts, created_at, next_attempt_at, attempts, "
    "last_error"
)


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """``executescript`` commits implicitly; run statement by statement inside our BEGIN."""
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    for statement in code.split(";"):
        if statement.strip():
            db.execute(statement)


def _describe(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc)
    # SQLite keeps errno to itself ("unable to open database file", "disk I/O error"): ask the
    # file system, so the message says read-only or full whatever SQLite called it
    problem = _file_system_problem(path.parent)
    if problem is not None:
        return f"{text} ({problem})"
    if "readonly" in text or "read-only" in text:
        return f"{text} (is the state folder writable by this user?)"
    if "not a database" in text or "malformed" in text:
        return f"{text} (the state file is corrupt; move it away to start afresh)"
    if "full" in text:
        return f"{text} (the disk is full)"
    return text


def _file_system_problem(folder: Path) -> str | None:
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    if info.f_flag & os.ST_RDONLY:
        return "the file system is read-only"
    if info.f_bavail == 0:
        return "the disk is full"
    return None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _task_values(task: TaskRow, now: float) -> tuple[Any, ...]:
    return (
        task.key,
        json.dumps(task.status.to_api()) if task.status is not None else None,
        task.phase.value if task.phase is not None else None,
        iso(task.progress_since),
        iso(task.review_since),
        task.not_found_streak,
        int(task.finished),
        task.next_poll_at,
        now,
    )


def _alert_values(alert: Alert) -> tuple[Any, ...]:
    return (
        alert.fingerprint,
        alert.key,
        alert.rule.value,
        int(alert.severity),
        alert.status.value,
        alert.summary,
        json.dumps(alert.evidence, default=str),
        alert.task_id,
        alert.external_id,
        iso(alert.pending_since),
        iso(alert.starts_at),
        iso(alert.ends_at),
        iso(alert.last_sent_at),
        json.dumps([iso(t) for t in alert.flips]),
        int(alert.flapping),
        iso(alert.clear_since),
        alert.workspace_id,
    )


def _alert(row: Sequence[Any]) -> Alert:
    (fp, key, rule, severity, status, summary, evidence, task_id, external_id, pending_since,
     starts_at, ends_at, last_sent_at, flips, flapping, clear_since, workspace) = row  # fmt: skip
    return Alert(
        fingerprint=fp,
        key=key,
        rule=Rule(rule),
        severity=Severity(severity),
        status=AlertStatus(status),
        summary=summary,
        evidence=json.loads(evidence),
        task_id=task_id,
        external_id=external_id,
        pending_since=_dt(pending_since),
        starts_at=_dt(starts_at),
        ends_at=_dt(ends_at),
        last_sent_at=_dt(last_sent_at),
        flips=tuple(d for d in (_dt(t) for t in json.loads(flips)) if d is not None),
        flapping=bool(flapping),
        clear_since=_dt(clear_since),
        workspace_id=workspace,
    )


def _delivery(row: Sequence[Any]) -> Delivery:
    seq, delivery_id, target, kind, body, alerts, created, next_at, attempts, error = row
    return Delivery(
        delivery_id=delivery_id,
        target=target,
        kind=kind,
        body=body,
        alerts=alerts,
        created_at=created,
        next_attempt_at=next_at,
        attempts=attempts,
        last_error=error,
        seq=seq,
    )
