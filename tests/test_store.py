"""The SQLite state store against real files in tmp_path: open/migrate/refuse, the per-cycle
write as one transaction, the outbox, pruning and durability across a killed process."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from watchdog import store as store_module
from watchdog.alerts import Alert, AlertStatus
from watchdog.errors import StoreError
from watchdog.models import API_KEY, Phase, Rule, Severity, TaskStatus, fingerprint
from watchdog.store import Delivery, Snapshot, Store, TaskRow

ROOT = Path(__file__).resolve().parents[1]
# Microseconds on purpose: the store must not round them away.
T0 = datetime(2026, 11, 28, 10, 0, 0, 123456, tzinfo=UTC)
NEVER = -1.0  # cycle.py's next_poll_at of a done task that is never polled again
HOOK = "https://hooks.example.com/sd"
AM = "http://127.0.0.1:9093"


# --- record builders ---------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def full_status(task_id: int = 44) -> TaskStatus:
    """A status with every optional field of the API set."""
    return TaskStatus(
        task_id=task_id,
        created_on=at(0),
        task_status=31,
        task_status_text="PreProcessingInProgress",
        integration_status=2,
        integration_status_text="Failed",
        total_pages=12,
        restart_count=3,
        pre_processing_started_on=at(61.000001),
        workspace_id=7,
        batch_id=900,
        task_number=5,
        external_id="INV-0042",
        display_name="Rechnung Müller 🧾",
        description='multi\nline "quoted"',
    )


def minimal_status(task_id: int = 45) -> TaskStatus:
    """A status with only what the API always returns."""
    return TaskStatus(task_id=task_id, created_on=at(0.5), task_status=30)


def task_row(key: str = "id:44", **changes: Any) -> TaskRow:
    row = TaskRow(
        key=key,
        status=None,
        phase=None,
        progress_since=None,
        review_since=None,
        not_found_streak=0,
        finished=False,
        next_poll_at=None,
    )
    return replace(row, **changes)


def alert(
    key: str = "id:44",
    rule: Rule = Rule.PROCESSING_TOO_LONG,
    status: AlertStatus = AlertStatus.FIRING,
    **changes: Any,
) -> Alert:
    record = Alert(
        fingerprint=fingerprint(key, rule),
        key=key,
        rule=rule,
        severity=Severity.CRITICAL,
        status=status,
        summary=f"{key} {rule} {status}",
        evidence={"observed": "3h12m", "threshold": "1h"},
        task_id=int(key[3:]) if key.startswith("id:") else None,
        external_id=key[4:] if key.startswith("ext:") else None,
    )
    return replace(record, **changes)


def delivery(
    delivery_id: str, target: str = HOOK, kind: str = "webhook", **changes: Any
) -> Delivery:
    record = Delivery(
        delivery_id=delivery_id,
        target=target,
        kind=kind,
        body=f'{{"delivery": "{delivery_id}"}}',
        alerts=1,
        created_at=1000.0,
        next_attempt_at=1000.5,
    )
    return replace(record, **changes)


def as_fields(record: Any) -> dict[str, Any]:
    """A frozen record's fields by name, for comparisons whose failures name the field."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def alerts_by_fingerprint(alerts: list[Alert]) -> dict[str, dict[str, Any]]:
    return {a.fingerprint: as_fields(a) for a in alerts}


def without_seq(deliveries: list[Delivery]) -> list[Delivery]:
    return [replace(d, seq=None) for d in deliveries]


# --- file helpers ------------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    opened = Store(path)
    opened.open()
    yield opened
    opened.close()


def open_store(path: Path) -> Store:
    opened = Store(path)
    opened.open()
    return opened


def load_from(path: Path) -> Snapshot:
    """Open the file afresh, load everything, close it again."""
    fresh = open_store(path)
    try:
        return fresh.load()
    finally:
        fresh.close()


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A plain sqlite3 connection, for what the Store API does not expose (or to tamper)."""
    return closing(sqlite3.connect(path, isolation_level=None))


def on_disk(path: Path) -> int:
    """Bytes the state takes: the database file plus its write-ahead log."""
    wal = Path(f"{path}-wal")
    return os.path.getsize(path) + (os.path.getsize(wal) if wal.exists() else 0)


# --- open: create, migrate, refuse -------------------------------------------------------


def test_open_creates_folder_and_file_in_wal_mode_at_the_current_schema(tmp_path: Path) -> None:
    """open() creates missing folders and the file, turns WAL on and stamps SCHEMA_VERSION."""
    path = tmp_path / "a" / "b" / "state.db"
    opened = open_store(path)
    try:
        assert path.is_file()
        assert opened.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = opened.db.execute("PRAGMA user_version").fetchone()[0]
        assert version == store_module.SCHEMA_VERSION
    finally:
        opened.close()
    with raw(path) as db:  # both are persistent properties of the file, not of a connection
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION


def test_open_turns_on_incremental_auto_vacuum(store: Store) -> None:
    """A new file has auto_vacuum = INCREMENTAL, so prune can hand freed pages back."""
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # 2 = incremental


def test_reopen_keeps_the_data(path: Path) -> None:
    """Closing and opening the same file again keeps tasks, alerts, deliveries and meta."""
    first = open_store(path)
    first.save(
        now=1000.0,
        tasks=[task_row("id:44", phase=Phase.QUEUED)],
        alerts=[alert("id:44")],
        deliveries=[delivery("d-1")],
        meta={"api_failed_streak": "2"},
    )
    before = first.load()
    first.close()

    again = open_store(path)
    try:
        after = again.load()
        assert after.tasks == before.tasks
        assert alerts_by_fingerprint(after.alerts) == alerts_by_fingerprint(before.alerts)
        assert after.meta["api_failed_streak"] == "2"
        head = again.next_delivery(HOOK)
        assert head is not None
        assert replace(head, seq=None) == delivery("d-1")
        assert again.db.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
    finally:
        again.close()


def test_open_records_when_it_opened(store: Store) -> None:
    """open() writes meta['opened_at'] (proving the file is writable before the first cycle)."""
    opened_at = datetime.fromisoformat(store.load().meta["opened_at"])
    assert abs(datetime.now(UTC) - opened_at) < timedelta(minutes=1)


def _valid_header_garbage_body(tmp_path: Path) -> bytes:
    """A real store file whose pages after the first two are scrambled."""
    donor = tmp_path / "donor" / "state.db"
    opened = open_store(donor)
    opened.save(now=1.0, tasks=[task_row(f"id:{n}", status=full_status(n)) for n in range(300)])
    opened.close()
    data = bytearray(donor.read_bytes())
    scramble = random.Random(7)
    for i in range(8192, len(data)):
        data[i] = scramble.randrange(256)
    return bytes(data)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda _: random.Random(1).randbytes(8192), id="random-bytes"),
        pytest.param(lambda _: b"xyz", id="three-bytes"),
        pytest.param(lambda _: b"not a database\n" * 500, id="text-file"),
        pytest.param(_valid_header_garbage_body, id="sqlite-header-garbage-pages"),
    ],
)
def test_corrupt_file_is_refused_and_left_untouched(
    tmp_path: Path, path: Path, make: Callable[[Path], bytes]
) -> None:
    """A corrupt file raises StoreError saying 'corrupt' and is never reset or rewritten."""
    content = make(tmp_path)
    path.write_bytes(content)
    with pytest.raises(StoreError, match="corrupt") as caught:
        Store(path).open()
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith("state.db")) == [
        "state.db"
    ]


def test_newer_schema_is_refused(path: Path) -> None:
    """A file stamped with a schema newer than the code raises StoreError saying 'newer'."""
    open_store(path).close()
    with raw(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer"):
        Store(path).open()
    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 99  # not migrated down


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda tmp: tmp / "file" / "state.db", id="parent-is-a-file"),
        pytest.param(lambda tmp: tmp / "file" / "deeper" / "state.db", id="ancestor-is-a-file"),
        pytest.param(lambda _: Path("/proc/sd-watchdog-test/state.db"), id="under-proc"),
        pytest.param(lambda _: Path("/proc/sd-watchdog-test.db"), id="file-in-proc"),
    ],
)
def test_unwritable_location_is_refused(tmp_path: Path, where: Callable[[Path], Path]) -> None:
    """A path that cannot be created raises StoreError naming the path (root ignores chmod)."""
    (tmp_path / "file").write_text("a regular file, not a folder\n")
    target = where(tmp_path)
    with pytest.raises(StoreError) as caught:
        Store(target).open()
    assert str(target) in str(caught.value)


def test_directory_in_place_of_the_file_is_refused(path: Path) -> None:
    """A folder where the state file should be raises StoreError and stays an empty folder."""
    path.mkdir()
    with pytest.raises(StoreError) as caught:
        Store(path).open()
    assert str(path) in str(caught.value)
    assert path.is_dir()
    assert list(path.iterdir()) == []


def test_methods_need_an_open_store(path: Path) -> None:
    """Using a store that was never opened (or was closed) raises StoreError, not AttributeError."""
    never = Store(path)
    with pytest.raises(StoreError, match="not open"):
        never.load()
    with pytest.raises(StoreError, match="not open"):
        never.save(now=1.0, tasks=[task_row()])
    closed = open_store(path)
    closed.close()
    closed.close()  # closing twice is harmless
    with pytest.raises(StoreError, match="not open"):
        closed.outbox_depth()


# --- save / load round trip ----------------------------------------------------------------

ROUND_TRIP_TASKS = [
    task_row(
        "id:44",
        status=full_status(44),
        phase=Phase.PROCESSING,
        progress_since=at(120.654321),
        review_since=None,
        not_found_streak=0,
        finished=False,
        next_poll_at=1_796_000_123.456789,
    ),
    task_row(
        "id:45",
        status=minimal_status(45),
        phase=Phase.REVIEW,
        progress_since=at(1.000001),
        review_since=at(3600.999999),
        next_poll_at=None,
    ),
    task_row(
        "ext:INV-0042",
        status=replace(full_status(46), task_status=None, total_pages=0, restart_count=0),
        phase=Phase.DONE,
        finished=True,
        next_poll_at=NEVER,
    ),
    task_row("id:47", status=None, phase=None, not_found_streak=2, next_poll_at=0.0),
    task_row("id:48", status=minimal_status(48), phase=Phase.FAILED, next_poll_at=-0.5),
]

NESTED_EVIDENCE: dict[str, Any] = {
    "observed": {"pages": 0, "started": "2026-11-28T10:01:01Z", "ratio": 0.25},
    "threshold": "15m",
    "history": [1, 2.5, "three", None, True, False, {"deep": {"deeper": [[], {}]}}],
    "note": 'Müller ✓ "quoted" \n newline',
}

ROUND_TRIP_ALERTS = [
    alert(
        "id:44",
        Rule.NO_PAGES,
        AlertStatus.PENDING,
        severity=Severity.WARNING,
        pending_since=at(10.000001),
        evidence=NESTED_EVIDENCE,
    ),
    alert(
        "id:44",
        Rule.PROCESSING_TOO_LONG,
        AlertStatus.FIRING,
        starts_at=at(20.5),
        last_sent_at=at(14_420.25),
        flips=(at(1.111111), at(2.222222), at(3.333333)),
        flapping=True,
        clear_since=at(30.000007),
    ),
    alert(
        "ext:INV-0042",
        Rule.REVIEW_OVERDUE,
        AlertStatus.RESOLVED,
        severity=Severity.INFO,
        starts_at=at(5),
        ends_at=at(99.999999),
        last_sent_at=at(5),
        flips=(at(99.999999),),
        evidence={},
    ),
    alert(
        API_KEY,
        Rule.API_UNAVAILABLE,
        AlertStatus.FIRING,
        summary="the API rejected our credentials (401)",
        starts_at=at(7),
        last_sent_at=at(7),
    ),
]


def test_round_trip_tasks_alerts_and_meta(path: Path, store: Store) -> None:
    """What save() writes, load() returns field for field (also from a freshly opened file)."""
    meta = {"api_failed_streak": "3", "empty": "", "unicode": "Grüße ✓"}
    store.save(now=1000.0, tasks=ROUND_TRIP_TASKS, alerts=ROUND_TRIP_ALERTS, meta=meta)

    for snapshot in (store.load(), load_from(path)):
        assert {k: as_fields(row) for k, row in snapshot.tasks.items()} == {
            row.key: as_fields(row) for row in ROUND_TRIP_TASKS
        }
        assert alerts_by_fingerprint(snapshot.alerts) == alerts_by_fingerprint(ROUND_TRIP_ALERTS)
        assert {k: v for k, v in snapshot.meta.items() if k != "opened_at"} == meta


def test_round_trip_keeps_types_of_loaded_values(store: Store) -> None:
    """Loaded enums, datetimes and flags are the real types, with microseconds and UTC kept."""
    store.save(now=1.0, tasks=ROUND_TRIP_TASKS[:1], alerts=ROUND_TRIP_ALERTS[1:2])
    snapshot = store.load()
    row = snapshot.tasks["id:44"]
    assert type(row.phase) is Phase
    assert type(row.finished) is bool
    assert row.progress_since is not None
    assert row.progress_since.microsecond == 777777  # T0's .123456 + .654321
    assert row.progress_since.utcoffset() == timedelta(0)
    (loaded,) = snapshot.alerts
    assert type(loaded.rule) is Rule
    assert type(loaded.severity) is Severity
    assert type(loaded.status) is AlertStatus
    assert type(loaded.flapping) is bool
    assert type(loaded.flips) is tuple
    assert all(t.utcoffset() == timedelta(0) for t in loaded.flips)


def test_save_upserts_and_deletes(store: Store) -> None:
    """A later save replaces rows by key/fingerprint and deleted_alerts removes alerts."""
    store.save(now=1.0, tasks=ROUND_TRIP_TASKS, alerts=ROUND_TRIP_ALERTS, meta={"m": "1"})
    moved = replace(ROUND_TRIP_TASKS[0], phase=Phase.DONE, finished=True, next_poll_at=NEVER)
    resolved = replace(ROUND_TRIP_ALERTS[1], status=AlertStatus.RESOLVED, ends_at=at(40))
    gone = ROUND_TRIP_ALERTS[0].fingerprint
    store.save(now=2.0, tasks=[moved], alerts=[resolved], deleted_alerts=[gone], meta={"m": "2"})

    snapshot = store.load()
    assert snapshot.tasks == {r.key: r for r in [moved, *ROUND_TRIP_TASKS[1:]]}
    assert alerts_by_fingerprint(snapshot.alerts) == alerts_by_fingerprint(
        [resolved, *ROUND_TRIP_ALERTS[2:]]
    )
    assert snapshot.meta["m"] == "2"


def test_empty_store_loads_empty(store: Store) -> None:
    """A new file loads as no tasks, no alerts and only the opened_at meta."""
    snapshot = store.load()
    assert snapshot.tasks == {}
    assert snapshot.alerts == []
    assert set(snapshot.meta) == {"opened_at"}
    assert store.outbox_depth() == 0
    assert store.targets() == []


@pytest.mark.parametrize(
    ("sql", "value"),
    [
        pytest.param("UPDATE tasks SET status = ?", "{not json", id="status-not-json"),
        pytest.param("UPDATE tasks SET status = ?", '{"taskId": "x"}', id="status-bad-field"),
        pytest.param("UPDATE tasks SET status = ?", "[]", id="status-not-an-object"),
        pytest.param("UPDATE tasks SET phase = ?", "sleeping", id="unknown-phase"),
        pytest.param("UPDATE alerts SET rule = ?", "no_such_rule", id="unknown-rule"),
        pytest.param("UPDATE alerts SET evidence = ?", "{", id="evidence-not-json"),
        pytest.param("UPDATE alerts SET starts_at = ?", "yesterday", id="bad-datetime"),
    ],
)
def test_unreadable_rows_raise_store_error(path: Path, store: Store, sql: str, value: str) -> None:
    """A row this version cannot read makes load() raise StoreError, never another exception."""
    store.save(now=1.0, tasks=[task_row(status=minimal_status(44))], alerts=[alert(starts_at=T0)])
    with raw(path) as db:
        db.execute(sql, (value,))
    with pytest.raises(StoreError, match="cannot read"):
        store.load()


# --- save is one transaction ---------------------------------------------------------------


def test_failed_save_writes_nothing(store: Store) -> None:
    """A save whose delivery breaks UNIQUE(delivery_id) raises StoreError and writes nothing."""
    task = task_row("id:44", phase=Phase.QUEUED, not_found_streak=0)
    kept = alert("id:44", Rule.QUEUED_TOO_LONG, starts_at=T0)
    doomed = alert("id:44", Rule.NO_PROGRESS, starts_at=T0)
    store.save(
        now=1.0,
        tasks=[task],
        alerts=[kept, doomed],
        deliveries=[delivery("d-1"), delivery("d-am", target=AM, kind="alertmanager")],
        meta={"api_failed_streak": "0"},
    )
    before = store.load()
    outbox_before = [store.next_delivery(HOOK), store.next_delivery(AM)]

    with pytest.raises(StoreError, match="UNIQUE"):
        store.save(
            now=2.0,
            tasks=[replace(task, phase=Phase.PROCESSING, not_found_streak=1), task_row("id:99")],
            alerts=[replace(kept, status=AlertStatus.RESOLVED, ends_at=at(60)), alert("id:99")],
            deleted_alerts=[doomed.fingerprint],
            superseded_kinds=[(AM, "alertmanager")],
            deliveries=[delivery("d-2"), delivery("d-1")],  # d-1 is already queued
            meta={"api_failed_streak": "5", "new": "x"},
        )

    after = store.load()
    assert after.tasks == before.tasks
    assert alerts_by_fingerprint(after.alerts) == alerts_by_fingerprint(before.alerts)
    assert after.meta == before.meta
    assert [store.next_delivery(HOOK), store.next_delivery(AM)] == outbox_before
    assert store.outbox_depth() == 2
    # The transaction was rolled back, not left open: the next save works.
    store.save(now=3.0, tasks=[task_row("id:99")])
    assert "id:99" in store.load().tasks


def test_duplicate_delivery_ids_within_one_save_write_nothing(store: Store) -> None:
    """Two deliveries with the same id in one save roll back the tasks written before them."""
    with pytest.raises(StoreError):
        store.save(now=1.0, tasks=[task_row()], deliveries=[delivery("d"), delivery("d")])
    assert store.load().tasks == {}
    assert store.outbox_depth() == 0


# --- the outbox ----------------------------------------------------------------------------


def test_next_delivery_is_the_oldest_per_target(store: Store) -> None:
    """next_delivery returns the lowest seq of that target only, and None for an empty queue."""
    store.save(now=1.0, deliveries=[delivery("h-1"), delivery("a-1", target=AM)])
    store.save(now=2.0, deliveries=[delivery("h-2", next_attempt_at=0.0), delivery("a-2", AM)])

    head = store.next_delivery(HOOK)
    assert head is not None
    assert head.seq is not None
    assert replace(head, seq=None) == delivery("h-1")
    am_head = store.next_delivery(AM)
    assert am_head is not None
    assert am_head.delivery_id == "a-1"
    assert store.next_delivery("https://nobody.example") is None


def test_delivered_removes_the_head(store: Store) -> None:
    """delivered(seq) removes that delivery; the next one becomes the head."""
    store.save(now=1.0, deliveries=[delivery("h-1"), delivery("h-2"), delivery("a-1", AM)])
    first = store.next_delivery(HOOK)
    assert first is not None
    assert first.seq is not None
    store.delivered(first.seq)
    second = store.next_delivery(HOOK)
    assert second is not None
    assert second.delivery_id == "h-2"
    assert second.seq is not None
    assert second.seq > first.seq
    store.delivered(second.seq)
    assert store.next_delivery(HOOK) is None
    assert store.outbox_depth() == 1


def test_retry_later_records_the_attempt(path: Path, store: Store) -> None:
    """retry_later updates attempts, next_attempt_at and last_error (capped at 500 chars)."""
    store.save(now=1.0, deliveries=[delivery("h-1"), delivery("h-2")])
    head = store.next_delivery(HOOK)
    assert head is not None
    assert head.seq is not None
    store.retry_later(head.seq, attempts=1, next_attempt_at=1002.0, error="HTTP 503")
    assert store.next_delivery(HOOK) == replace(
        head, attempts=1, next_attempt_at=1002.0, last_error="HTTP 503"
    )

    store.retry_later(head.seq, attempts=2, next_attempt_at=1006.5, error="x" * 2000)
    store.close()
    again = load_head(path, HOOK)
    assert again == replace(head, attempts=2, next_attempt_at=1006.5, last_error="x" * 500)


def load_head(path: Path, target: str) -> Delivery | None:
    fresh = open_store(path)
    try:
        return fresh.next_delivery(target)
    finally:
        fresh.close()


def test_targets_and_depth(store: Store) -> None:
    """targets() lists each receiver with queued deliveries once; outbox_depth counts them all."""
    store.save(
        now=1.0,
        deliveries=[delivery("h-1"), delivery("h-2"), delivery("a-1", AM), delivery("a-2", AM)],
    )
    store.save(now=2.0, deliveries=[delivery("h-3")])
    assert sorted(store.targets()) == sorted([HOOK, AM])
    assert store.outbox_depth() == 5


def test_drop_target_returns_and_removes_its_deliveries(store: Store) -> None:
    """drop_target returns a receiver's deliveries in order and removes only those."""
    store.save(
        now=1.0,
        deliveries=[delivery("h-1"), delivery("a-1", AM), delivery("h-2"), delivery("h-3")],
    )
    dropped = store.drop_target(HOOK)
    assert without_seq(dropped) == [delivery("h-1"), delivery("h-2"), delivery("h-3")]
    assert [d.seq for d in dropped] == sorted(d.seq for d in dropped if d.seq is not None)
    assert store.targets() == [AM]
    assert store.outbox_depth() == 1
    assert store.next_delivery(HOOK) is None
    assert store.drop_target(HOOK) == []


def test_superseded_kinds_drop_only_unattempted_deliveries_of_that_kind(store: Store) -> None:
    """superseded_kinds deletes unattempted (target, kind) deliveries, before queuing new ones."""
    resend = "alertmanager-resend"
    store.save(
        now=1.0,
        deliveries=[
            delivery("r-tried", AM, resend),
            delivery("r-old-1", AM, resend),
            delivery("r-old-2", AM, resend),
            delivery("am-push", AM, "alertmanager"),
            delivery("r-other-am", "http://127.0.0.2:9093", resend),
            delivery("h-1", HOOK, "webhook"),
        ],
    )
    tried = store.next_delivery(AM)
    assert tried is not None
    assert tried.seq is not None
    store.retry_later(tried.seq, attempts=1, next_attempt_at=5.0, error="timeout")

    store.save(now=2.0, superseded_kinds=[(AM, resend)], deliveries=[delivery("r-new", AM, resend)])

    remaining = store.drop_target(AM)
    assert [d.delivery_id for d in remaining] == ["r-tried", "am-push", "r-new"]
    assert store.next_delivery("http://127.0.0.2:9093") is not None
    assert store.next_delivery(HOOK) is not None


# --- prune ---------------------------------------------------------------------------------

DAY = 86_400.0


def test_prune_deletes_old_resolved_alerts_only(store: Store) -> None:
    """prune drops resolved alerts older than retention; firing, pending and recent ones stay."""
    old_resolved = alert("id:1", status=AlertStatus.RESOLVED, ends_at=T0)
    old_firing = alert("id:2", status=AlertStatus.FIRING, starts_at=T0)
    old_pending = alert("id:3", status=AlertStatus.PENDING, pending_since=T0)
    new_resolved = alert("id:4", status=AlertStatus.RESOLVED, ends_at=T0)
    store.save(now=1 * DAY, alerts=[old_resolved, old_firing, old_pending])
    store.save(now=30 * DAY, alerts=[new_resolved])

    counts = store.prune(now=31 * DAY, retention=7 * DAY, watched=[])

    assert counts["alerts"] == 1
    assert {a.fingerprint for a in store.load().alerts} == {
        old_firing.fingerprint,
        old_pending.fingerprint,
        new_resolved.fingerprint,
    }


def test_prune_deletes_old_rows_of_unwatched_tasks_only(store: Store) -> None:
    """prune drops task rows older than retention unless their key is still watched."""
    store.save(now=1 * DAY, tasks=[task_row("id:1"), task_row("id:2"), task_row("ext:gone")])
    store.save(now=30 * DAY, tasks=[task_row("id:3")])

    counts = store.prune(now=31 * DAY, retention=7 * DAY, watched=iter(["id:2", "id:3"]))

    assert counts == {"alerts": 0, "tasks": 2}
    assert set(store.load().tasks) == {"id:2", "id:3"}


def test_prune_with_zero_retention_keeps_everything(store: Store) -> None:
    """retention = 0 means keep forever: nothing is pruned, however old."""
    store.save(
        now=1.0,
        tasks=[task_row("id:1")],
        alerts=[alert("id:1", status=AlertStatus.RESOLVED, ends_at=T0)],
    )
    assert store.prune(now=100 * 365 * DAY, retention=0, watched=[]) == {"alerts": 0, "tasks": 0}
    snapshot = store.load()
    assert set(snapshot.tasks) == {"id:1"}
    assert len(snapshot.alerts) == 1


def test_prune_gives_the_space_back(path: Path) -> None:
    """After pruning most rows the file plus WAL does not grow, and freed pages are returned."""
    filler = open_store(path)
    filler.save(
        now=1.0,
        tasks=[task_row(f"id:{n}", status=full_status(n)) for n in range(4000)],
        alerts=[
            alert(f"id:{n}", status=AlertStatus.RESOLVED, ends_at=T0, evidence=NESTED_EVIDENCE)
            for n in range(4000)
        ],
    )
    filler.close()  # checkpoints: "before" is the data itself, not a WAL full of it
    opened = open_store(path)
    try:
        before = on_disk(path)
        counts = opened.prune(now=100 * DAY, retention=DAY, watched=["id:0"])
        after = on_disk(path)
        assert counts == {"alerts": 4000, "tasks": 3999}
        assert after <= before
        free = opened.db.execute("PRAGMA freelist_count").fetchone()[0]
        assert free == 0, f"{free} freed pages were kept in the file"
        assert after < before // 4, f"{before} bytes before prune, {after} after"
        assert set(opened.load().tasks) == {"id:0"}
    finally:
        opened.close()


# --- durability and volume -----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from watchdog.store import Delivery, Store, TaskRow

    store = Store(Path(sys.argv[1]))
    store.open()
    store.save(
        now=1000.0,
        tasks=[
            TaskRow(key=f"id:{n}", status=None, phase=None, progress_since=None,
                    review_since=None, not_found_streak=n, finished=False, next_poll_at=None)
            for n in range(50)
        ],
        deliveries=[Delivery(delivery_id="crash-1", target="t", kind="webhook", body="{}",
                             alerts=1, created_at=1000.0, next_attempt_at=1000.0)],
        meta={"api_failed_streak": "3"},
    )
    print("saved", flush=True)
    time.sleep(60)
    """
)


def test_saved_rows_survive_a_killed_process(path: Path) -> None:
    """Rows are durable once save() returns: SIGKILL right after it loses nothing (WAL replay)."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == "saved\n", child.stderr.read() if child.stderr else ""
            # The commit is only in the write-ahead log: the reopen below has to replay it.
            assert os.path.getsize(f"{path}-wal") > 0
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    snapshot = load_from(path)
    assert snapshot.tasks == {f"id:{n}": task_row(f"id:{n}", not_found_streak=n) for n in range(50)}
    assert snapshot.meta["api_failed_streak"] == "3"
    head = load_head(path, "t")
    assert head is not None
    assert replace(head, seq=None) == Delivery("crash-1", "t", "webhook", "{}", 1, 1000.0, 1000.0)


def test_hundred_thousand_upserts_in_one_save(store: Store) -> None:
    """One save of 100,000 task rows (some updating existing keys) works; load returns them all."""
    store.save(now=1.0, tasks=[task_row(f"id:{n}", not_found_streak=9) for n in range(1000)])
    shared = full_status(1)
    rows = [
        task_row(
            f"id:{n}",
            status=shared if n % 10 == 0 else None,
            phase=Phase.PROCESSING,
            progress_since=T0,
            next_poll_at=float(n),
        )
        for n in range(100_000)
    ]
    store.save(now=2.0, tasks=(row for row in rows))  # any iterable, consumed once
    loaded = store.load().tasks
    assert len(loaded) == 100_000
    assert loaded == {row.key: row for row in rows}
