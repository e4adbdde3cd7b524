"""Property-based tests (hypothesis): arbitrary JSON into the response parser, arbitrary
observations into the pure core (phases, rules, alert transitions). Nothing escapes but the
documented ``ApiError``; evidence is JSON; ages are never negative.

Seeded (``SD_FAULT_SEED``, printed) and bounded, with no example database, so a run is
repeatable and fast. Figures go to ``docs/reliability-figures-part1.md`` (see test_faults.py).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.test_faults import Figures
from watchdog import alerts as alert_engine
from watchdog.alerts import Alert, AlertStatus, Change, Policy
from watchdog.client import _parse_answer
from watchdog.errors import ApiError
from watchdog.models import DEFAULT_SEVERITY, Finding, Phase, Rule, TaskRef, TaskStatus
from watchdog.phases import PhaseTable, classify
from watchdog.rules import (
    TaskHistory,
    clock_offset,
    earliest_fire,
    evaluate,
    not_found_finding,
    update_history,
)
from watchdog.settings import PhasesSettings, Thresholds
from watchdog.status import parse_task_status

SEED = int(os.environ.get("SD_FAULT_SEED", "20261128"))
EXAMPLES = int(os.environ.get("SD_EXAMPLES", "200"))
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ in the tree; the seed makes a run repeatable
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIGURES = Figures("tests/test_properties.py")


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    """Print the seed; after the module, merge its figures into the figures document."""
    print(f"\nhypothesis seed: {SEED} (set SD_FAULT_SEED to change it)")
    yield
    FIGURES.write()


# --- strategies ---------------------------------------------------------------------------

UTC_MIN = datetime.min.replace(tzinfo=UTC)
UTC_MAX = datetime.max.replace(tzinfo=UTC)
# .NET writes DateTime.MinValue / MaxValue for "unset"; offsets push them past Python's range
EXTREME_DATES = [
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.9999999",
    "9999-12-31T23:59:59.9999999Z",
    "9999-12-31T23:59:59.9999999-01:00",
    "2026-11-28T10:00:00.1234567Z",
    "2026-02-30T10:00:00Z",
    "",
    "now",
]
EXTREME_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**400, -(10**400)]

offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
    ),
)
naive_dates = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
)
iso_strings = st.one_of(
    naive_dates.map(datetime.isoformat),
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), naive_dates, offsets),
    st.sampled_from(EXTREME_DATES),
    st.text(max_size=40),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(EXTREME_INTS),
    st.floats(),  # NaN and ±Infinity too: json.loads accepts them
    st.text(max_size=30),
    iso_strings,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
STATUS_TEXTS = [
    "QueuedForPreProcessing",
    "PreProcessingInProgress",
    "PreProcessingSuccessful",
    "PreProcessingFailed",
    "Queued For Export",
    "To Review",
    "Processed",
    "Recognizing",
    "Failed",
    "",
    " ",
]
field_values: dict[str, st.SearchStrategy[Any]] = {
    "taskId": st.one_of(st.integers(min_value=1, max_value=10**6), json_scalars),
    "createdOn": st.one_of(iso_strings, json_scalars),
    "taskStatus": st.one_of(st.integers(min_value=0, max_value=60), json_scalars),
    "taskStatusText": st.one_of(st.sampled_from(STATUS_TEXTS), json_scalars),
    "integrationStatus": st.one_of(st.integers(min_value=0, max_value=5), json_scalars),
    "integrationStatusText": st.one_of(
        st.sampled_from(["Failed", "Succeeded", None]), json_scalars
    ),
    "totalPages": st.one_of(st.integers(min_value=0, max_value=10_000), json_scalars),
    "restartCount": st.one_of(st.integers(min_value=0, max_value=10), json_scalars),
    "preProcessingStartedOn": st.one_of(st.none(), iso_strings, json_scalars),
    "workspaceId": json_scalars,
    "batchId": json_scalars,
    "taskNumber": json_scalars,
    "externalId": json_scalars,
    "displayName": json_scalars,
    "description": json_values,
}
VALID: dict[str, Any] = {
    "taskId": 7,
    "workspaceId": 1,
    "createdOn": "2026-11-28T10:00:00.1234567Z",
    "taskStatus": 31,
    "taskStatusText": "PreProcessingInProgress",
    "integrationStatus": 0,
    "integrationStatusText": "NotStarted",
    "totalPages": 3,
    "restartCount": 1,
    "preProcessingStartedOn": "2026-11-28T10:05:00Z",
}
# a valid answer with some fields replaced, dropped or added: reaches every validator
status_objects = st.builds(
    lambda changes, dropped, extra: {
        **{k: v for k, v in VALID.items() if k not in dropped},
        **changes,
        **extra,
    },
    st.lists(
        st.sampled_from(sorted(field_values)).flatmap(
            lambda k: st.tuples(st.just(k), field_values[k])
        ),
        max_size=3,
    ).map(dict),
    st.sets(st.sampled_from(sorted(VALID)), max_size=2),
    st.dictionaries(st.text(max_size=8), json_scalars, max_size=2),
)


# --- the response parser ------------------------------------------------------------------


def test_parser_raises_only_api_error() -> None:
    """Arbitrary JSON: parse_task_status gives a TaskStatus or raises ApiError, nothing else."""
    outcomes: Counter[str] = Counter()

    @seed(SEED)
    @PROFILE
    @given(data=st.one_of(json_values, status_objects, status_objects, status_objects))
    def check(data: Any) -> None:
        try:
            status = parse_task_status(data)
        except ApiError as exc:
            outcomes[exc.kind] += 1  # only invalid_response is expected: checked below
            return
        assert isinstance(status, TaskStatus)
        assert status.created_on.tzinfo is not None
        assert status.restart_count >= 0
        json.dumps(status.to_api())  # what the payload and /tasks carry
        outcomes["parsed"] += 1

    check()
    assert set(outcomes) <= {"parsed", "invalid_response"}
    total = sum(outcomes.values())
    FIGURES.add(
        "4 Bad bodies (property)",
        "arbitrary JSON → TaskStatus or ApiError(invalid_response), nothing else",
        "test_parser_raises_only_api_error",
        f"{total} examples, {outcomes['parsed']} parsed, {outcomes['invalid_response']} "
        "invalid_response, 0 other exceptions",
    )


def test_body_parser_raises_only_api_error() -> None:
    """Arbitrary bytes as a 200 body: a TaskStatus or ApiError(invalid_response) only."""
    outcomes: Counter[str] = Counter()
    texts = st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        status_objects.map(lambda v: json.dumps({"taskId": 7, **v}).encode()),
        st.integers(min_value=1, max_value=50).map(lambda n: b"[" * n * 100 + b"]" * n * 100),
    )

    @seed(SEED)
    @PROFILE
    @given(body=texts)
    def check(body: bytes) -> None:
        try:
            _parse_answer(body, TaskRef.by_id(7))
        except ApiError as exc:
            outcomes[exc.kind] += 1  # only invalid_response is expected: checked below
            return
        outcomes["parsed"] += 1

    check()
    assert set(outcomes) <= {"parsed", "invalid_response"}
    total = sum(outcomes.values())
    FIGURES.add(
        "4 Bad bodies (property)",
        "arbitrary bytes as a 200 body → status or ApiError(invalid_response)",
        "test_body_parser_raises_only_api_error",
        f"{total} examples, {outcomes['parsed']} parsed, 0 other exceptions",
    )


DATE_FIELDS = ["createdOn", "preProcessingStartedOn"]
INT_FIELDS = [
    "taskId",
    "taskStatus",
    "integrationStatus",
    "totalPages",
    "restartCount",
    "workspaceId",
    "batchId",
    "taskNumber",
]


def test_parser_fields_at_their_extremes() -> None:
    """Year-1/9999 timestamps with offsets, ints past int64: invalid_response, no OverflowError."""
    # Timestamps at year 1 / 9999 with any UTC offset, integers past int64: a TaskStatus whose
    # values the core can compute with, or invalid_response — never OverflowError.
    outcomes: Counter[str] = Counter()

    @seed(SEED)
    @PROFILE
    @given(
        dates=st.dictionaries(st.sampled_from(DATE_FIELDS), iso_strings, min_size=1),
        ints=st.dictionaries(
            st.sampled_from(INT_FIELDS), st.one_of(st.sampled_from(EXTREME_INTS), st.integers())
        ),
    )
    def check(dates: dict[str, str], ints: dict[str, int]) -> None:
        try:
            status = parse_task_status({**VALID, **dates, **ints})
        except ApiError as exc:
            outcomes[exc.kind] += 1  # only invalid_response is expected: checked below
            return
        for value in (status.task_id, status.total_pages, status.restart_count):
            assert value is None or -(2**63) <= value < 2**63
        outcomes["parsed"] += 1

    check()
    assert set(outcomes) <= {"parsed", "invalid_response"}
    FIGURES.add(
        "4 Bad bodies (property)",
        "timestamps at year 1/9999 with offsets, integers past int64 → invalid_response",
        "test_parser_fields_at_their_extremes",
        f"{sum(outcomes.values())} examples, {outcomes['parsed']} parsed, "
        f"{outcomes['invalid_response']} invalid_response, 0 OverflowError",
    )


# --- the pure core ------------------------------------------------------------------------

aware = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
plausible = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)
when = st.one_of(plausible, plausible, aware, st.sampled_from([UTC_MIN, UTC_MAX]))
counts = st.one_of(
    st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=2**63 - 1)
)
durations = st.one_of(
    st.just(0.0),
    st.floats(min_value=0, max_value=86400 * 30),
    st.floats(min_value=0, max_value=1e300),
)
statuses = st.builds(
    TaskStatus,
    task_id=st.integers(min_value=1, max_value=2**63 - 1),
    created_on=when,
    task_status=st.one_of(st.none(), st.integers(min_value=0, max_value=60), counts),
    task_status_text=st.one_of(st.none(), st.sampled_from(STATUS_TEXTS), st.text(max_size=20)),
    integration_status=st.one_of(st.none(), counts),
    integration_status_text=st.one_of(
        st.none(), st.sampled_from(["Failed", "failed", "OK"]), st.text(max_size=10)
    ),
    total_pages=st.one_of(st.none(), counts),
    restart_count=counts,
    pre_processing_started_on=st.one_of(st.none(), when),
    workspace_id=st.one_of(st.none(), counts),
    external_id=st.one_of(st.none(), st.text(max_size=10)),
)
thresholds = st.builds(
    Thresholds,
    queued_max=durations,
    processing_max=durations,
    processing_per_page=durations,
    max_restarts=st.one_of(st.just(0), st.integers(min_value=0, max_value=10), counts),
    zero_pages_after=durations,
    no_progress=durations,
    review_max=durations,
)
refs = st.one_of(
    st.integers(min_value=1, max_value=10**9).map(TaskRef.by_id),
    st.text(min_size=1, max_size=12).map(TaskRef.by_external_id),
)
tables = st.one_of(
    st.just(PhaseTable.build()),
    st.builds(
        lambda texts: PhaseTable.build(PhasesSettings(done=texts[:1], review=texts[1:2])),
        st.lists(
            st.sampled_from(["Recognizing", "Exported", "Waiting", 41, 50]), unique=True, max_size=2
        ),
    ),
)


def ages_in(evidence: Any) -> Iterator[float]:
    """Every ``age_s`` in a finding's evidence."""
    observed = evidence.get("observed", {})
    if isinstance(observed, dict) and "age_s" in observed:
        yield observed["age_s"]


def test_rules_never_raise_and_evidence_is_json() -> None:
    """Arbitrary observations and skews: rules raise nothing, evidence is JSON, ages ≥ 0."""
    # Arbitrary statuses, histories, thresholds, clocks and skews: classify, evaluate and
    # earliest_fire raise nothing; evidence is strict JSON; ages are never negative.
    outcomes: Counter[str] = Counter()

    @seed(SEED)
    @PROFILE
    @given(
        ref=refs,
        status=statuses,
        table=tables,
        th=thresholds,
        polls=st.lists(st.tuples(when, statuses), max_size=2),
        now=when,
        server_date=st.one_of(st.none(), when),
    )
    def check(  # noqa: PLR0917 (hypothesis passes the drawn values as arguments)
        ref: TaskRef,
        status: TaskStatus,
        table: PhaseTable,
        th: Thresholds,
        polls: list[tuple[datetime, TaskStatus]],
        now: datetime,
        server_date: datetime | None,
    ) -> None:
        history: TaskHistory | None = None
        for polled_at, earlier in polls:  # earlier polls, wall clock jumping anywhere
            history = update_history(history, earlier, classify(earlier, table).phase, polled_at)
        verdict = classify(status, table)
        assert isinstance(verdict.phase, Phase)
        history = update_history(history, status, verdict.phase, now)
        offset = clock_offset(server_date, now)  # server_date - now: any skew, up to millennia
        findings = evaluate(ref, status, verdict.phase, history, th, now, offset)
        fire_at = earliest_fire(status, verdict.phase, history, th, offset)
        assert fire_at is None or fire_at.tzinfo is not None
        for finding in findings:
            json.dumps(finding.evidence, allow_nan=False)
            assert finding.summary
            for age in ages_in(finding.evidence):
                assert age >= 0
        outcomes["findings" if findings else "quiet"] += 1
        outcomes["skewed"] += bool(offset)

    check()
    total = outcomes["findings"] + outcomes["quiet"]
    FIGURES.add(
        "4/9 Rules (property)",
        "arbitrary observations, thresholds and clock skew → no exception, JSON evidence, ages ≥ 0",
        "test_rules_never_raise_and_evidence_is_json",
        f"{total} examples ({outcomes['findings']} with findings, {outcomes['skewed']} with "
        "skew > 60 s), 0 exceptions, 0 negative ages",
    )


findings_for = st.lists(st.sampled_from(list(Rule)), unique=True, max_size=4).map(
    lambda rules: [
        Finding(rule, DEFAULT_SEVERITY[rule], f"{rule} holds", {"observed": {"x": 1}})
        for rule in rules
    ]
)
policies = st.builds(
    Policy,
    repeat_interval=durations,
    flap_threshold=st.integers(min_value=0, max_value=6),
    flap_window=durations,
    hold=st.dictionaries(st.sampled_from(list(Rule)), durations, max_size=3),
)
# the wall clock between evaluations: forwards, backwards, by seconds or by centuries
moves = st.one_of(
    st.floats(min_value=-120, max_value=3600),
    st.floats(min_value=-86400 * 365, max_value=86400 * 365),
    st.sampled_from([-3 * 3600.0, 3 * 3600.0, -1e12, 1e12]),
)


def shifted(now: datetime, seconds: float) -> datetime:
    """``now`` moved by ``seconds``, pinned to the representable range."""
    try:
        return now + timedelta(seconds=seconds)
    except OverflowError:
        return UTC_MAX if seconds > 0 else UTC_MIN


def test_alert_transitions_never_raise() -> None:
    """Arbitrary findings, policies and clock steps: transitions raise nothing, stay consistent."""
    # Arbitrary finding sequences under arbitrary policies, with the wall clock jumping both ways:
    # step, resolve_all and prune raise nothing and keep each alert consistent.
    outcomes: Counter[str] = Counter()

    @seed(SEED)
    @PROFILE
    @given(
        ref=refs,
        policy=policies,
        start=when,
        steps=st.lists(st.tuples(moves, findings_for), min_size=1, max_size=8),
        unwatch=st.booleans(),
    )
    def check(
        ref: TaskRef,
        policy: Policy,
        start: datetime,
        steps: list[tuple[float, list[Finding]]],
        unwatch: bool,
    ) -> None:
        state: dict[Rule, Alert] = {}
        now = start
        for move, findings in steps:
            now = shifted(now, move)
            state, changes = alert_engine.step(state, findings, ref, now, policy)
            state = alert_engine.prune(state, now, policy)
            assert len({c.alert.rule for c in changes}) == len(changes)  # ≤ 1 change per rule
            for change in changes:
                outcomes[change.change.value] += 1
                if change.change is Change.FIRED:
                    assert change.alert.starts_at == now
            for alert in state.values():
                assert alert.rule in DEFAULT_SEVERITY
                if alert.status is AlertStatus.FIRING:
                    assert alert.starts_at is not None
                if alert.status is AlertStatus.RESOLVED:
                    assert not alert.flapping
        if unwatch:
            state, changes = alert_engine.resolve_all(state, now, "unwatched")
            assert not any(a.firing for a in state.values())
        outcomes["runs"] += 1

    check()
    FIGURES.add(
        "9 Alert transitions (property)",
        "arbitrary findings, policies and wall-clock jumps → no exception, consistent states",
        "test_alert_transitions_never_raise",
        f"{outcomes['runs']} runs: {outcomes['fired']} fired, {outcomes['resolved']} resolved, "
        f"{outcomes['flapping']} flapping, {outcomes['repeated']} repeated; 0 exceptions",
    )


@seed(SEED)
@PROFILE
@given(streak=st.integers(min_value=0, max_value=10**9), ref=refs)
def test_not_found_finding_is_json(streak: int, ref: TaskRef) -> None:
    """task_not_found fires from the second 404 in a row on, with JSON evidence."""
    finding = not_found_finding(ref, streak)
    assert (finding is not None) is (streak >= 2)
    if finding is not None:
        json.dumps(finding.evidence, allow_nan=False)
