"""Tables for watchdog.rules: each rule at its boundaries, missing fields, clock offset, history."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from watchdog.models import DEFAULT_SEVERITY, Finding, Phase, Rule, Severity, TaskRef, TaskStatus
from watchdog.rules import (
    TaskHistory,
    clock_offset,
    evaluate,
    format_age,
    not_found_finding,
    update_history,
)
from watchdog.settings import Thresholds

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
REF = TaskRef.by_id(44)
TH = Thresholds(
    queued_max=1800.0,
    processing_max=3600.0,
    processing_per_page=0.0,
    max_restarts=3,
    zero_pages_after=900.0,
    no_progress=2700.0,
    review_max=0.0,
)

Q = Phase.QUEUED
P = Phase.PROCESSING
R = Phase.REVIEW
D = Phase.DONE
F = Phase.FAILED

QTL = "queued_too_long"
PTL = "processing_too_long"
TMR = "too_many_restarts"
NPG = "no_pages"
NPR = "no_progress"
FST = "failed_status"
INF = "integration_failed"
ROV = "review_overdue"

BIG = 10**6  # seconds: far past every threshold


def ago(seconds: float) -> datetime:
    """The instant ``seconds`` before NOW."""
    return NOW - timedelta(seconds=seconds)


def make_status(
    *,
    text: str | None = "PreProcessingInProgress",
    number: int | None = 31,
    created_ago: float = 120,
    started_ago: float | None = 60,
    pages: int | None = 5,
    restarts: int = 0,
    integration_text: str | None = None,
    integration_number: int | None = None,
    now: datetime = NOW,
) -> TaskStatus:
    """A healthy processing task whose timestamps lie the given seconds before ``now``."""
    return TaskStatus(
        task_id=44,
        created_on=now - timedelta(seconds=created_ago),
        task_status=number,
        task_status_text=text,
        integration_status=integration_number,
        integration_status_text=integration_text,
        total_pages=pages,
        restart_count=restarts,
        pre_processing_started_on=(
            None if started_ago is None else now - timedelta(seconds=started_ago)
        ),
    )


def make_history(*, progress_ago: float = 0, review_ago: float | None = None) -> TaskHistory:
    """A history whose poll times lie the given seconds before NOW."""
    return TaskHistory(
        signature=(),
        progress_since=ago(progress_ago),
        review_since=None if review_ago is None else ago(review_ago),
    )


def rules_of(findings: list[Finding]) -> tuple[str, ...]:
    """The rule names of ``findings``, in order."""
    return tuple(f.rule.value for f in findings)


# status fields of a task in each phase, to combine with the fields under test
QUEUED: dict[str, Any] = {"text": "QueuedForPreProcessing", "number": 30, "started_ago": None}
REVIEW: dict[str, Any] = {"text": "ToReview", "number": None}
FAILED: dict[str, Any] = {"text": "PreProcessingFailed", "number": 32}
DONE: dict[str, Any] = {"text": "Processed", "number": None}

# (id, phase, threshold overrides, status fields, history fields, expected rules in rule order)
CASES: list[tuple[str, Phase, dict[str, Any], dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    ("healthy-processing", P, {}, {}, {}, ()),
    ("healthy-queued", Q, {}, QUEUED, {}, ()),
    ("healthy-review", R, {}, REVIEW, {}, ()),
    # queued_too_long: createdOn age against queued_max, only before pre-processing starts
    ("queued-1799", Q, {}, {**QUEUED, "created_ago": 1799}, {}, ()),
    ("queued-1800", Q, {}, {**QUEUED, "created_ago": 1800}, {}, ()),
    ("queued-1801", Q, {}, {**QUEUED, "created_ago": 1801}, {}, (QTL,)),
    ("queued-disabled", Q, {"queued_max": 0}, {**QUEUED, "created_ago": BIG}, {}, ()),
    (
        "queued-processing-phase-no-start",
        P,
        {},
        {"text": "Recognizing", "number": None, "started_ago": None, "created_ago": 1801},
        {},
        (QTL,),
    ),
    (
        "queued-started",
        Q,
        {},
        {**QUEUED, "created_ago": BIG, "started_ago": 60},
        {},
        (),
    ),
    ("queued-review-no-start", R, {}, {**REVIEW, "created_ago": BIG, "started_ago": None}, {}, ()),
    (
        "queued-failed-no-start",
        F,
        {},
        {**FAILED, "created_ago": BIG, "started_ago": None},
        {},
        (FST,),
    ),
    # processing_too_long: preProcessingStartedOn age against processing_max (+ per page)
    ("processing-3599", P, {}, {"created_ago": 9999, "started_ago": 3599}, {}, ()),
    ("processing-3600", P, {}, {"created_ago": 9999, "started_ago": 3600}, {}, ()),
    ("processing-3601", P, {}, {"created_ago": 9999, "started_ago": 3601}, {}, (PTL,)),
    ("processing-disabled", P, {"processing_max": 0}, {"started_ago": BIG}, {}, ()),
    (
        "processing-disabled-despite-per-page",
        P,
        {"processing_max": 0, "processing_per_page": 60},
        {"started_ago": BIG},
        {},
        (),
    ),
    ("per-page-4199", P, {"processing_per_page": 60}, {"pages": 10, "started_ago": 4199}, {}, ()),
    ("per-page-4200", P, {"processing_per_page": 60}, {"pages": 10, "started_ago": 4200}, {}, ()),
    (
        "per-page-4201",
        P,
        {"processing_per_page": 60},
        {"pages": 10, "started_ago": 4201},
        {},
        (PTL,),
    ),
    (
        "per-page-pages-none",
        P,
        {"processing_per_page": 60},
        {"pages": None, "started_ago": 3601},
        {},
        (PTL,),
    ),
    (
        "per-page-pages-zero",
        P,
        {"processing_per_page": 60, "zero_pages_after": 0},
        {"pages": 0, "started_ago": 3601},
        {},
        (PTL,),
    ),
    ("processing-phase-queued", Q, {}, {**QUEUED, "started_ago": BIG, "created_ago": BIG}, {}, ()),
    ("processing-phase-review", R, {}, {**REVIEW, "started_ago": BIG, "created_ago": BIG}, {}, ()),
    ("processing-no-start", P, {}, {"started_ago": None, "created_ago": 1000}, {}, ()),
    # too_many_restarts: restartCount >= max_restarts, any phase but done
    ("restarts-absent", P, {}, {"restarts": 0}, {}, ()),
    ("restarts-2", P, {}, {"restarts": 2}, {}, ()),
    ("restarts-3", P, {}, {"restarts": 3}, {}, (TMR,)),
    ("restarts-4", P, {}, {"restarts": 4}, {}, (TMR,)),
    ("restarts-disabled", P, {"max_restarts": 0}, {"restarts": 10}, {}, ()),
    ("restarts-queued", Q, {}, {**QUEUED, "restarts": 3}, {}, (TMR,)),
    ("restarts-review", R, {}, {**REVIEW, "restarts": 3}, {}, (TMR,)),
    ("restarts-failed", F, {}, {**FAILED, "restarts": 3}, {}, (TMR, FST)),
    ("restarts-done", D, {}, {**DONE, "restarts": 9}, {}, ()),
    # no_pages: totalPages == 0 this long after pre-processing started
    ("no-pages-899", P, {}, {"pages": 0, "started_ago": 899}, {}, ()),
    ("no-pages-900", P, {}, {"pages": 0, "started_ago": 900}, {}, ()),
    ("no-pages-901", P, {}, {"pages": 0, "started_ago": 901}, {}, (NPG,)),
    ("no-pages-disabled", P, {"zero_pages_after": 0}, {"pages": 0, "started_ago": 901}, {}, ()),
    ("no-pages-pages-none", P, {}, {"pages": None, "started_ago": 901}, {}, ()),
    ("no-pages-pages-1", P, {}, {"pages": 1, "started_ago": 901}, {}, ()),
    ("no-pages-no-start", P, {}, {"pages": 0, "started_ago": None, "created_ago": 1000}, {}, ()),
    ("no-pages-queued", Q, {}, {**QUEUED, "pages": 0, "started_ago": 3000}, {}, ()),
    ("no-pages-review", R, {}, {**REVIEW, "pages": 0, "started_ago": 3000}, {}, ()),
    # no_progress: local time since the signature last changed
    ("progress-2699", P, {}, {}, {"progress_ago": 2699}, ()),
    ("progress-2700", P, {}, {}, {"progress_ago": 2700}, ()),
    ("progress-2701", P, {}, {}, {"progress_ago": 2701}, (NPR,)),
    ("progress-queued-2701", Q, {}, QUEUED, {"progress_ago": 2701}, (NPR,)),
    ("progress-disabled", P, {"no_progress": 0}, {}, {"progress_ago": BIG}, ()),
    ("progress-review", R, {}, REVIEW, {"progress_ago": BIG}, ()),
    ("progress-failed", F, {}, FAILED, {"progress_ago": BIG}, (FST,)),
    # failed_status
    ("failed-text", F, {}, FAILED, {}, (FST,)),
    ("failed-number-only", F, {}, {"text": None, "number": 33}, {}, (FST,)),
    ("failed-no-fields", F, {}, {"text": None, "number": None, "pages": None}, {}, (FST,)),
    # integration_failed: the text only, in every phase
    ("integration-failed", P, {}, {"integration_text": "Failed"}, {}, (INF,)),
    ("integration-lower", P, {}, {"integration_text": "failed"}, {}, (INF,)),
    ("integration-spaced", P, {}, {"integration_text": " FAILED "}, {}, (INF,)),
    ("integration-ok", P, {}, {"integration_text": "Succeeded"}, {}, ()),
    ("integration-partly", P, {}, {"integration_text": "PartiallyFailed"}, {}, ()),
    ("integration-number-only", P, {}, {"integration_number": 4}, {}, ()),
    ("integration-none", P, {}, {"integration_text": None}, {}, ()),
    ("integration-done", D, {}, {**DONE, "integration_text": "Failed"}, {}, (INF,)),
    ("integration-review", R, {}, {**REVIEW, "integration_text": "Failed"}, {}, (INF,)),
    ("integration-queued", Q, {}, {**QUEUED, "integration_text": "Failed"}, {}, (INF,)),
    ("integration-failed-phase", F, {}, {**FAILED, "integration_text": "Failed"}, {}, (FST, INF)),
    # review_overdue: local time since the first poll in review, only when review_max is set
    ("review-3599", R, {"review_max": 3600}, REVIEW, {"review_ago": 3599}, ()),
    ("review-3600", R, {"review_max": 3600}, REVIEW, {"review_ago": 3600}, ()),
    ("review-3601", R, {"review_max": 3600}, REVIEW, {"review_ago": 3601}, (ROV,)),
    ("review-disabled", R, {}, REVIEW, {"review_ago": BIG}, ()),
    ("review-since-unset", R, {"review_max": 3600}, REVIEW, {"review_ago": None}, ()),
    ("review-stale-outside-review", P, {"review_max": 3600}, {}, {"review_ago": BIG}, ()),
    # done: everything resolves except integration_failed
    (
        "done-all-bad",
        D,
        {"review_max": 1},
        {**DONE, "created_ago": BIG, "started_ago": BIG, "pages": 0, "restarts": 9},
        {"progress_ago": BIG, "review_ago": BIG},
        (),
    ),
    (
        "done-all-bad-integration",
        D,
        {"review_max": 1},
        {**DONE, "started_ago": BIG, "pages": 0, "restarts": 9, "integration_text": "Failed"},
        {"progress_ago": BIG, "review_ago": BIG},
        (INF,),
    ),
    (
        "done-no-start",
        D,
        {},
        {**DONE, "created_ago": BIG, "started_ago": None},
        {"progress_ago": BIG},
        (),
    ),
    # missing fields: no texts, no numbers, no pages, no start, no restarts
    (
        "missing-everything-processing",
        P,
        {},
        {"text": None, "number": None, "pages": None, "started_ago": None, "created_ago": 60},
        {},
        (),
    ),
    (
        "missing-everything-old",
        P,
        {},
        {"text": None, "number": None, "pages": None, "started_ago": None, "created_ago": BIG},
        {"progress_ago": BIG},
        (QTL, NPR),
    ),
    # several rules at once come back in the contract's rule order
    (
        "many-processing",
        P,
        {},
        {"pages": 0, "started_ago": BIG, "restarts": 3, "integration_text": "Failed"},
        {"progress_ago": BIG},
        (PTL, TMR, NPG, NPR, INF),
    ),
    (
        "many-queued",
        Q,
        {},
        {**QUEUED, "created_ago": BIG, "restarts": 5, "integration_text": "Failed"},
        {"progress_ago": BIG},
        (QTL, TMR, NPR, INF),
    ),
    (
        "many-review",
        R,
        {"review_max": 60},
        {**REVIEW, "restarts": 3, "integration_text": "Failed"},
        {"review_ago": 61},
        (TMR, INF, ROV),
    ),
]


@pytest.mark.parametrize(
    ("phase", "overrides", "fields", "hist", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rules_table(
    phase: Phase,
    overrides: dict[str, Any],
    fields: dict[str, Any],
    hist: dict[str, Any],
    expected: tuple[str, ...],
) -> None:
    """Each rule fires strictly past its threshold, in its phases only, and 0 disables it."""
    findings = evaluate(
        REF, make_status(**fields), phase, make_history(**hist), replace(TH, **overrides), NOW
    )
    assert rules_of(findings) == expected


@pytest.mark.parametrize(
    ("phase", "overrides", "fields", "hist"),
    [case[1:5] for case in CASES if case[5]],
    ids=[case[0] for case in CASES if case[5]],
)
def test_findings_are_json_and_complete(
    phase: Phase, overrides: dict[str, Any], fields: dict[str, Any], hist: dict[str, Any]
) -> None:
    """Every finding has its default severity, a labelled summary and JSON-ready evidence."""
    offset = timedelta(hours=-2)
    status = make_status(**fields, now=NOW + offset)
    findings = evaluate(
        REF, status, phase, make_history(**hist), replace(TH, **overrides), NOW, offset
    )
    assert findings
    for finding in findings:
        assert finding.severity is DEFAULT_SEVERITY[finding.rule]
        assert finding.summary.startswith("task 44 ")
        assert set(finding.evidence) >= {"observed", "threshold", "computed"}
        assert isinstance(finding.evidence["computed"], str)
        decoded = json.loads(json.dumps(finding.evidence, allow_nan=False))
        assert decoded == finding.evidence


@pytest.mark.parametrize(
    ("delta_s", "expected_s"),
    [
        (None, 0.0),
        (0.0, 0.0),
        (59.5, 0.0),
        (60.0, 0.0),
        (-60.0, 0.0),
        (60.5, 60.5),
        (61.0, 61.0),
        (-61.0, -61.0),
        (3 * 3600.0, 3 * 3600.0),
        (-2 * 3600.0, -2 * 3600.0),
    ],
)
def test_clock_offset(delta_s: float | None, expected_s: float) -> None:
    """The offset is server minus local when beyond 60 s, else zero; no Date header is zero."""
    server = None if delta_s is None else NOW + timedelta(seconds=delta_s)
    assert clock_offset(server, NOW) == timedelta(seconds=expected_s)


@pytest.mark.parametrize(
    ("server_ahead_h", "offset_h", "fields", "phase", "expected"),
    [
        # the server's clock runs 2 h ahead: uncorrected, its timestamps look like the future
        (2, 2, {"started_ago": 3601, "created_ago": 9999}, P, (PTL,)),
        (2, 0, {"started_ago": 3601, "created_ago": 9999}, P, ()),
        (2, 2, {"started_ago": 3599, "created_ago": 9999}, P, ()),
        (2, 2, {**QUEUED, "created_ago": 1801}, Q, (QTL,)),
        (2, 0, {**QUEUED, "created_ago": 1801}, Q, ()),
        (2, 2, {"pages": 0, "started_ago": 901}, P, (NPG,)),
        (2, 0, {"pages": 0, "started_ago": 901}, P, ()),
        # the server's clock runs 3 h behind: uncorrected, everything looks 3 h older
        (-3, -3, {"pages": 0, "started_ago": 600, "created_ago": 700}, P, ()),
        (-3, 0, {"pages": 0, "started_ago": 600, "created_ago": 700}, P, (PTL, NPG)),
        (-3, -3, {**QUEUED, "created_ago": 1000}, Q, ()),
        (-3, 0, {**QUEUED, "created_ago": 1000}, Q, (QTL,)),
        (-3, -3, {**QUEUED, "created_ago": 1801}, Q, (QTL,)),
    ],
)
def test_clock_offset_corrects_server_ages(
    server_ahead_h: int,
    offset_h: int,
    fields: dict[str, Any],
    phase: Phase,
    expected: tuple[str, ...],
) -> None:
    """Ages of server timestamps are measured on the server's clock once the offset is known."""
    status = make_status(**fields, now=NOW + timedelta(hours=server_ahead_h))
    offset = timedelta(hours=offset_h)
    findings = evaluate(REF, status, phase, make_history(), TH, NOW, offset)
    assert rules_of(findings) == expected


@pytest.mark.parametrize(
    ("created_in_s", "started_in_s", "phase"),
    [
        (3600, None, Q),
        (BIG, None, P),
        (7200, 3600, P),
        (60, 30, P),
    ],
)
def test_future_timestamps_count_as_age_zero(
    created_in_s: float, started_in_s: float | None, phase: Phase
) -> None:
    """Server timestamps in the local future (negative ages) never fire, even with 0 pages."""
    status = make_status(
        created_ago=-created_in_s,
        started_ago=None if started_in_s is None else -started_in_s,
        pages=0,
    )
    assert evaluate(REF, status, phase, make_history(), TH, NOW) == []


@pytest.mark.parametrize(
    ("offset_h", "progress_ago", "review_ago", "phase", "expected"),
    [
        (-3, 2701, None, P, (NPR,)),
        (-3, 2699, None, P, ()),
        (3, 2701, None, P, (NPR,)),
        (3, 100, None, P, ()),
        (-3, 0, 3601, R, (ROV,)),
        (3, 0, 3599, R, ()),
        (3, 0, 3601, R, (ROV,)),
    ],
)
def test_local_rules_ignore_clock_offset(
    offset_h: int,
    progress_ago: float,
    review_ago: float | None,
    phase: Phase,
    expected: tuple[str, ...],
) -> None:
    """no_progress and review_overdue compare local poll times with the local now only."""
    fields: dict[str, Any] = REVIEW if phase is R else {}
    status = make_status(**fields, now=NOW + timedelta(hours=offset_h))
    history = make_history(progress_ago=progress_ago, review_ago=review_ago)
    thresholds = replace(TH, review_max=3600)
    findings = evaluate(REF, status, phase, history, thresholds, NOW, timedelta(hours=offset_h))
    assert rules_of(findings) == expected


@pytest.mark.parametrize(
    ("fields", "phase", "hist", "rule", "has_offset"),
    [
        ({"started_ago": 3601, "created_ago": 9999}, P, {}, PTL, True),
        ({**QUEUED, "created_ago": 1801}, Q, {}, QTL, True),
        ({"pages": 0, "started_ago": 901}, P, {}, NPG, True),
        ({}, P, {"progress_ago": 2701}, NPR, False),
        ({**REVIEW, "restarts": 3}, R, {}, TMR, False),
    ],
)
def test_evidence_reports_clock_offset_where_it_applied(
    fields: dict[str, Any], phase: Phase, hist: dict[str, Any], rule: str, has_offset: bool
) -> None:
    """clock_offset_s appears in the evidence of rules whose ages used the offset, and only then."""
    offset = timedelta(hours=2)
    status = make_status(**fields, now=NOW + offset)
    (finding,) = evaluate(REF, status, phase, make_history(**hist), TH, NOW, offset)
    assert finding.rule == rule
    assert ("clock_offset_s" in finding.evidence) is has_offset
    if has_offset:
        assert finding.evidence["clock_offset_s"] == 7200.0
    (unskewed,) = evaluate(
        REF, make_status(**fields), phase, make_history(**hist), TH, NOW, timedelta(0)
    )
    assert "clock_offset_s" not in unskewed.evidence


def test_processing_too_long_summary_and_evidence() -> None:
    """processing_too_long reads like the contract's example and shows what it measured."""
    status = make_status(created_ago=20000, started_ago=3 * 3600 + 12 * 60 + 5, pages=10)
    (finding,) = evaluate(REF, status, P, make_history(), TH, NOW)
    assert finding.rule is Rule.PROCESSING_TOO_LONG
    assert finding.severity is Severity.CRITICAL
    assert finding.summary == "task 44 has been pre-processing for 3h12m (limit 1h)"
    assert finding.evidence == {
        "observed": {
            "taskStatus": 31,
            "taskStatusText": "PreProcessingInProgress",
            "phase": "processing",
            "preProcessingStartedOn": "2026-11-28T08:47:55Z",
            "totalPages": 10,
            "age_s": 11525.0,
        },
        "threshold": {"processing_max": 3600.0, "processing_per_page": 0.0, "limit": 3600.0},
        "computed": "now - preProcessingStartedOn",
    }


def test_processing_too_long_per_page_summary() -> None:
    """With a per-page budget the summary names the total limit and the page count."""
    thresholds = replace(TH, processing_per_page=60.0)
    status = make_status(created_ago=9999, started_ago=4201, pages=10)
    (finding,) = evaluate(REF, status, P, make_history(), thresholds, NOW)
    assert finding.summary == "task 44 has been pre-processing for 1h10m (limit 1h10m for 10 pages)"
    assert finding.evidence["threshold"]["limit"] == 4200.0


@pytest.mark.parametrize(
    ("phase", "overrides", "fields", "hist", "summary"),
    [
        (
            Q,
            {},
            {**QUEUED, "created_ago": 2700},
            {},
            "task 44 has been waiting 45m for pre-processing to start (limit 30m)",
        ),
        (
            P,
            {},
            {"pages": 0, "started_ago": 1200},
            {},
            "task 44 still has 0 pages 20m after pre-processing started (limit 15m)",
        ),
        (
            P,
            {},
            {},
            {"progress_ago": 3000},
            "task 44 has not changed for 50m in status PreProcessingInProgress (limit 45m)",
        ),
        (
            P,
            {},
            {"text": None, "number": 99},
            {"progress_ago": 3000},
            "task 44 has not changed for 50m in status #99 (limit 45m)",
        ),
        (F, {}, FAILED, {}, "task 44 failed with status PreProcessingFailed"),
        (F, {}, {"text": None, "number": 33}, {}, "task 44 failed with status #33"),
        (F, {}, {"text": None, "number": None}, {}, "task 44 failed with status unknown"),
        (
            D,
            {},
            {**DONE, "integration_text": "Failed"},
            {},
            "task 44 failed its integration (integration status Failed)",
        ),
        (
            R,
            {"review_max": 86400},
            REVIEW,
            {"review_ago": 2 * 86400 + 4 * 3600 + 59},
            "task 44 has been waiting for review for 2d4h (limit 1d)",
        ),
        (
            R,
            {},
            {**REVIEW, "restarts": 4},
            {},
            "task 44 has been reprocessed 4 times (alerting at 3 or more)",
        ),
    ],
)
def test_summaries(
    phase: Phase,
    overrides: dict[str, Any],
    fields: dict[str, Any],
    hist: dict[str, Any],
    summary: str,
) -> None:
    """Each rule's summary names the task, what was observed and the limit, in compact ages."""
    (finding,) = evaluate(
        REF, make_status(**fields), phase, make_history(**hist), replace(TH, **overrides), NOW
    )
    assert finding.summary == summary


def test_summary_of_external_id_task() -> None:
    """A task configured by external ID is named by that ID in summaries."""
    status = make_status(**{**QUEUED, "created_ago": 2700})
    ref = TaskRef.by_external_id("INV-0042")
    (finding,) = evaluate(ref, status, Q, make_history(), TH, NOW)
    assert finding.summary == (
        "task 'INV-0042' has been waiting 45m for pre-processing to start (limit 30m)"
    )


def test_queued_too_long_evidence() -> None:
    """queued_too_long evidence shows createdOn, the missing start, the age and queued_max."""
    status = make_status(**{**QUEUED, "created_ago": 1801})
    (finding,) = evaluate(REF, status, Q, make_history(), TH, NOW)
    assert finding.evidence == {
        "observed": {
            "taskStatus": 30,
            "taskStatusText": "QueuedForPreProcessing",
            "phase": "queued",
            "createdOn": "2026-11-28T11:29:59Z",
            "preProcessingStartedOn": None,
            "age_s": 1801.0,
        },
        "threshold": {"queued_max": 1800.0},
        "computed": "now - createdOn",
    }


def test_review_overdue_evidence() -> None:
    """review_overdue evidence shows when review began (local) and review_max."""
    history = make_history(review_ago=3601)
    thresholds = replace(TH, review_max=3600)
    (finding,) = evaluate(REF, make_status(**REVIEW), R, history, thresholds, NOW)
    assert finding.severity is Severity.INFO
    assert finding.evidence["observed"]["review_since"] == "2026-11-28T10:59:59Z"
    assert finding.evidence["observed"]["age_s"] == 3601.0
    assert finding.evidence["threshold"] == {"review_max": 3600.0}


# --- history ------------------------------------------------------------------------------


def test_first_poll_starts_history() -> None:
    """The first poll's time starts progress, and its signature is the five watched fields."""
    status = make_status(text="Pre Processing In Progress", restarts=1)
    history = update_history(None, status, P, NOW)
    assert history == TaskHistory(
        signature=(31, "preprocessinginprogress", 5, 1, ago(60)),
        progress_since=NOW,
        review_since=None,
    )


def test_unchanged_poll_keeps_history() -> None:
    """A poll that sees the same signature keeps progress_since (and the same object)."""
    first = update_history(None, make_status(), P, ago(600))
    later = update_history(first, make_status(), P, NOW)
    assert later is first
    assert later.progress_since == ago(600)


@pytest.mark.parametrize(
    "fields",
    [
        {"number": 34},
        {"number": None},
        {"text": "PreProcessingSuccessful"},
        {"text": None},
        {"pages": 6},
        {"pages": None},
        {"pages": 0},
        {"restarts": 1},
        {"started_ago": 30},
        {"started_ago": None},
    ],
)
def test_signature_change_resets_progress(fields: dict[str, Any]) -> None:
    """A change in status, text, pages, restarts or start time restarts the progress clock."""
    first = update_history(None, make_status(), P, ago(600))
    later = update_history(first, make_status(**fields), P, NOW)
    assert later.progress_since == NOW
    assert later.signature != first.signature


@pytest.mark.parametrize(
    "fields",
    [
        {"text": "pre_processing_in_progress"},
        {"text": "PRE-PROCESSING IN PROGRESS"},
        {"created_ago": 9999},
        {"integration_text": "Failed"},
        {"integration_number": 2},
    ],
)
def test_other_changes_do_not_reset_progress(fields: dict[str, Any]) -> None:
    """Spelling variants of the text and fields outside the signature are not progress."""
    first = update_history(None, make_status(), P, ago(600))
    later = update_history(first, make_status(**fields), P, NOW)
    assert later.progress_since == ago(600)


@pytest.mark.parametrize(
    ("phases", "expected_since"),
    [
        ((P, R), [None, 1]),
        ((R,), [0]),
        ((R, R, R), [0, 0, 0]),
        ((R, P), [0, None]),
        ((R, P, R), [0, None, 2]),
        ((R, D), [0, None]),
        ((Q, P, R, R, F, R), [None, None, 2, 2, None, 5]),
    ],
)
def test_review_since(phases: tuple[Phase, ...], expected_since: list[int | None]) -> None:
    """review_since is the first poll in review, kept while in review, reset on leaving it."""
    history: TaskHistory | None = None
    seen: list[int | None] = []
    start = ago(3600)
    for minute, phase in enumerate(phases):
        polled_at = start + timedelta(minutes=minute)
        # a new text each poll, so a signature change never masks the review bookkeeping
        status = make_status(text=f"Status{minute}", number=None)
        history = update_history(history, status, phase, polled_at)
        since = history.review_since
        seen.append(None if since is None else int((since - start).total_seconds() // 60))
    assert seen == expected_since


def test_review_since_kept_when_signature_unchanged() -> None:
    """Staying in review with an unchanged status returns the same history."""
    status = make_status(**REVIEW)
    first = update_history(None, status, R, ago(600))
    assert first.review_since == ago(600)
    assert update_history(first, status, R, NOW) is first


def test_leaving_review_with_same_signature_clears_review_since() -> None:
    """review_since resets even when the watched fields did not change (e.g. a [phases] reload)."""
    status = make_status(**REVIEW)
    first = update_history(None, status, R, ago(600))
    later = update_history(first, status, P, NOW)
    assert later.review_since is None
    assert later.progress_since == ago(600)


# --- task_not_found and format_age ---------------------------------------------------------


@pytest.mark.parametrize(("streak", "fires"), [(0, False), (1, False), (2, True), (7, True)])
def test_not_found_streak(streak: int, fires: bool) -> None:
    """task_not_found fires from the second 404 in a row, not on a single one."""
    finding = not_found_finding(REF, streak)
    assert (finding is not None) is fires
    if finding is not None:
        assert finding.rule is Rule.TASK_NOT_FOUND
        assert finding.severity is Severity.WARNING
        assert finding.summary == f"task 44 was not found by the API on {streak} polls in a row"
        assert json.loads(json.dumps(finding.evidence)) == {
            "observed": {"consecutive_404": streak},
            "threshold": {"consecutive_404": 2},
            "computed": "consecutive polls answered 404",
        }


def test_not_found_by_external_id() -> None:
    """task_not_found names a task configured by external ID by that ID."""
    finding = not_found_finding(TaskRef.by_external_id("INV-0042"), 2)
    assert finding is not None
    assert finding.summary.startswith("task 'INV-0042' was not found")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (0.9, "0s"),
        (45, "45s"),
        (59.99, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (2700, "45m"),
        (3599, "59m59s"),
        (3600, "1h"),
        (3661, "1h1m"),
        (11520, "3h12m"),
        (11579, "3h12m"),
        (86399, "23h59m"),
        (86400, "1d"),
        (90000, "1d1h"),
        (187200, "2d4h"),
        (187259, "2d4h"),
        (30 * 86400, "30d"),
    ],
)
def test_format_age(seconds: float, text: str) -> None:
    """Ages print compactly in their two largest units, truncated, never negative."""
    assert format_age(seconds) == text
