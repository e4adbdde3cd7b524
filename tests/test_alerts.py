"""The alert lifecycle as tables: a script of (seconds, holding?) evaluations → the changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watchdog.alerts import Alert, AlertStatus, Change, Policy, prune, resolve_all, step
from watchdog.models import Finding, Rule, Severity, TaskRef, fingerprint

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
REF = TaskRef.by_id(44)
RULE = Rule.PROCESSING_TOO_LONG


def finding(rule: Rule = RULE, summary: str = "stuck") -> Finding:
    return Finding(rule, Severity.CRITICAL, summary, {"observed": 1, "threshold": 0})


def play(
    script: list[tuple[float, bool]], policy: Policy, rule: Rule = RULE
) -> tuple[list[tuple[float, str]], dict[Rule, Alert]]:
    """Run evaluations at the given offsets; return (offset, change) pairs and the end state."""
    state: dict[Rule, Alert] = {}
    seen: list[tuple[float, str]] = []
    for seconds, holding in script:
        now = T0 + timedelta(seconds=seconds)
        state, changes = step(state, [finding(rule)] if holding else [], REF, now, policy)
        seen += [(seconds, c.change.value) for c in changes]
    return seen, state


NO_REPEAT = Policy(repeat_interval=0, flap_threshold=0)


@pytest.mark.parametrize(
    ("script", "policy", "expected"),
    [
        pytest.param([(0, True)], NO_REPEAT, [(0, "fired")], id="fires-at-once"),
        pytest.param(
            [(0, True), (60, True), (120, True)], NO_REPEAT, [(0, "fired")], id="fires-once"
        ),
        pytest.param(
            [(0, True), (60, False)], NO_REPEAT, [(0, "fired"), (60, "resolved")], id="resolves"
        ),
        pytest.param([(0, False), (60, False)], NO_REPEAT, [], id="quiet-when-healthy"),
        pytest.param(
            [(0, True), (60, False), (120, False)],
            NO_REPEAT,
            [(0, "fired"), (60, "resolved")],
            id="resolves-once",
        ),
        pytest.param(
            [(0, True), (3599, True), (3600, True), (5000, True), (7200, True)],
            Policy(repeat_interval=3600, flap_threshold=0),
            [(0, "fired"), (3600, "repeated"), (7200, "repeated")],
            id="repeat-interval",
        ),
        pytest.param(
            [(0, True), (100, True), (299, True), (300, True), (400, True)],
            Policy(repeat_interval=0, flap_threshold=0, hold={RULE: 300}),
            [(300, "fired")],
            id="for-duration-holds-then-fires",
        ),
        pytest.param(
            [(0, True), (200, False), (250, True), (500, True), (550, True)],
            Policy(repeat_interval=0, flap_threshold=0, hold={RULE: 300}),
            [(550, "fired")],
            id="for-duration-restarts-when-cleared",
        ),
        pytest.param(
            [(0, True), (10, False), (20, True), (30, False), (40, True), (50, False)],
            Policy(repeat_interval=0, flap_threshold=2, flap_window=3600),
            [
                (0, "fired"),
                (10, "resolved"),
                (20, "fired"),
                (30, "resolved"),
                (40, "fired"),
                (50, "flapping"),
            ],
            id="flapping-after-threshold",
        ),
        pytest.param(
            [
                (0, True),
                (10, False),
                (20, True),
                (30, False),
                (40, True),
                (50, False),
                (60, True),
                (70, False),
                (3000, False),
                (3669, False),
                (3671, False),
            ],
            Policy(repeat_interval=0, flap_threshold=2, flap_window=3600),
            [
                (0, "fired"),
                (10, "resolved"),
                (20, "fired"),
                (30, "resolved"),
                (40, "fired"),
                (50, "flapping"),
                (3671, "resolved"),
            ],
            id="flapping-held-until-stable-for-window",
        ),
        pytest.param(
            [(0, True), (10, False), (4000, True), (4010, False), (8000, True), (8010, False)],
            Policy(repeat_interval=0, flap_threshold=2, flap_window=3600),
            [
                (0, "fired"),
                (10, "resolved"),
                (4000, "fired"),
                (4010, "resolved"),
                (8000, "fired"),
                (8010, "resolved"),
            ],
            id="flips-outside-window-do-not-count",
        ),
    ],
)
def test_lifecycle(
    script: list[tuple[float, bool]], policy: Policy, expected: list[tuple[float, str]]
) -> None:
    """Fire once, repeat on schedule, resolve once, hold for [rules.for], damp flapping."""
    seen, _ = play(script, policy)
    assert seen == expected


def test_fired_alert_carries_identity_and_times() -> None:
    """A fired alert has the stable fingerprint of (key, rule) and starts_at = fire time."""
    _, state = play([(0, True), (60, True)], NO_REPEAT)
    alert = state[RULE]
    assert alert.fingerprint == fingerprint("id:44", RULE.value)
    assert alert.status is AlertStatus.FIRING
    assert alert.starts_at == T0
    assert alert.task_id == 44
    assert alert.ends_at is None


def test_resolved_alert_has_end_time_and_refire_starts_anew() -> None:
    """A resolved alert records ends_at; firing again gets a new starts_at, same fingerprint."""
    _, state = play([(0, True), (60, False)], NO_REPEAT)
    assert state[RULE].ends_at == T0 + timedelta(seconds=60)
    state, changes = step(state, [finding()], REF, T0 + timedelta(seconds=120), NO_REPEAT)
    assert [c.change for c in changes] == [Change.FIRED]
    assert state[RULE].starts_at == T0 + timedelta(seconds=120)
    assert state[RULE].fingerprint == fingerprint("id:44", RULE.value)


def test_scope_keeps_rules_it_cannot_observe() -> None:
    """A rule outside the evaluation's scope neither fires nor resolves."""
    state, _ = step({}, [finding()], REF, T0, NO_REPEAT)
    state, changes = step(state, [], REF, T0, NO_REPEAT, scope={Rule.TASK_NOT_FOUND})
    assert changes == []
    assert state[RULE].firing


def test_force_resolves_flapping_alert_with_reason() -> None:
    """A finished task resolves even a flapping alert at once, with reason 'finished'."""
    policy = Policy(repeat_interval=0, flap_threshold=1, flap_window=3600)
    _, state = play([(0, True), (10, False), (20, True), (30, False)], policy)
    assert state[RULE].flapping
    state, changes = step(
        state, [], REF, T0 + timedelta(seconds=40), policy, reason="finished", force=True
    )
    assert [(c.change, c.reason) for c in changes] == [(Change.RESOLVED, "finished")]
    assert not state[RULE].flapping


def test_resolve_all_for_unwatched() -> None:
    """Leaving the watched set resolves every firing alert and drops pending ones."""
    policy = Policy(repeat_interval=0, flap_threshold=0, hold={Rule.NO_PAGES: 600})
    state, _ = step({}, [finding(), finding(Rule.NO_PAGES)], REF, T0, policy)
    assert state[Rule.NO_PAGES].status is AlertStatus.PENDING
    state, changes = resolve_all(state, T0, "unwatched")
    assert [(c.alert.rule, c.reason) for c in changes] == [(RULE, "unwatched")]
    assert Rule.NO_PAGES not in state


def test_prune_forgets_resolved_alerts_without_recent_flips() -> None:
    """Resolved alerts are kept only while their flips still count (bounded memory)."""
    policy = Policy(repeat_interval=0, flap_threshold=5, flap_window=100)
    _, state = play([(0, True), (10, False)], policy)
    assert prune(state, T0 + timedelta(seconds=50), policy)
    assert prune(state, T0 + timedelta(seconds=200), policy) == {}


def test_pending_alert_that_clears_is_forgotten_quietly() -> None:
    """A condition shorter than its for-duration leaves no trace and no event."""
    policy = Policy(repeat_interval=0, flap_threshold=0, hold={RULE: 300})
    seen, state = play([(0, True), (100, False)], policy)
    assert seen == []
    assert state == {}


def test_summary_and_evidence_follow_the_latest_finding() -> None:
    """While firing, the alert shows the latest summary (e.g. a growing age)."""
    state, _ = step({}, [finding(summary="1h")], REF, T0, NO_REPEAT)
    state, _ = step(state, [finding(summary="2h")], REF, T0 + timedelta(hours=1), NO_REPEAT)
    assert state[RULE].summary == "2h"
