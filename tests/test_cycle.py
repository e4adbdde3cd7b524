"""Poll cycles end to end: the real client against the simulator on 127.0.0.1, one fake clock
shared by the simulator and the watchdog so scripted lifecycles run without waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.conftest import LogCapture, make_settings
from watchdog.alerts import Change
from watchdog.client import SmartDocumentorClient
from watchdog.clock import FakeClock
from watchdog.cycle import CycleReport, Watcher
from watchdog.models import ApiErrorInfo, Rule, TaskRef
from watchdog.scenarios import (
    demo_scenarios,
    demo_thresholds,
    healthy,
    stuck_in_processing,
    stuck_in_queue,
    unknown_status,
)
from watchdog.settings import Settings
from watchdog.simulator import Simulator

SCALE = 10.0  # one scenario unit = 10 s = one poll interval


@asynccontextmanager
async def watcher_for(
    sim: Simulator, clock: FakeClock, refs: Sequence[TaskRef], **sections: dict[str, Any]
) -> AsyncIterator[Watcher]:
    sections.setdefault("poll", {"interval": SCALE})
    sections.setdefault("rules", dict(demo_thresholds(SCALE)))
    settings: Settings = make_settings(sim.base_url, **sections)
    holder: list[Watcher] = []

    def report_error(info: ApiErrorInfo) -> None:
        holder[0].on_api_error(info)  # the watcher exists before the first request

    async with SmartDocumentorClient(settings.api, on_error=report_error, clock=clock) as client:
        watcher = Watcher(settings, client, clock)
        holder.append(watcher)
        watcher.set_tasks(refs)
        yield watcher


async def run_cycles(
    watcher: Watcher, clock: FakeClock, count: int, step: float = SCALE
) -> list[CycleReport]:
    reports = []
    for _ in range(count):
        reports.append(await watcher.run_cycle())
        clock.advance(step)
    return reports


def fired(reports: Sequence[CycleReport]) -> list[tuple[str, str]]:
    return [
        (t.alert.key, t.alert.rule.value)
        for r in reports
        for t in r.transitions
        if t.change is Change.FIRED
    ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_every_demo_scenario_fires_its_rules(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """Over the scripted show each scenario fires exactly the rules it is built to fire."""
    scenarios = demo_scenarios(SCALE)
    sim = await start_simulator(scenarios, clock=clock)
    async with watcher_for(
        sim, clock, [s.ref for s in scenarios], poll={"interval": SCALE, "done_interval": 0}
    ) as watcher:
        reports = await run_cycles(watcher, clock, 32)
    seen = fired(reports)
    for scenario in scenarios:
        rules = {rule for key, rule in seen if key == scenario.key}
        assert scenario.expect <= rules, (scenario.name, rules)
    every_rule = {rule for _, rule in seen}
    assert every_rule >= {r.value for r in Rule} - {"api_unavailable"}
    # task.stuck is logged once per firing, not on every poll
    stuck_events = captured_logs.named("task.stuck")
    assert len(stuck_events) == len(seen)
    for event in stuck_events:
        assert {"task_id", "rule", "severity", "fingerprint", "summary", "evidence"} <= set(event)
    assert captured_logs.named("task.finished")
    assert len(captured_logs.named("cycle.completed")) == 32


async def test_healthy_task_raises_nothing(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """A task that goes through its phases in time never fires and is seen to finish once."""
    scenario = healthy(1, scale=SCALE)
    sim = await start_simulator([scenario], clock=clock)
    async with watcher_for(sim, clock, [scenario.ref]) as watcher:
        reports = await run_cycles(watcher, clock, 15)
    assert fired(reports) == []
    assert len(captured_logs.named("task.finished")) == 1
    # done with the default done_interval of 1 h: not polled again within the run
    assert reports[-1].skipped == 1


async def test_failed_poll_changes_nothing(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """A cycle of 5xx neither fires nor resolves; the API errors are logged with attempts."""
    scenario = stuck_in_processing(7, scale=SCALE)
    sim = await start_simulator([scenario], clock=clock)
    async with watcher_for(
        sim, clock, [scenario.ref], api={"retries": 2}, rules={"processing_max": 25}
    ) as watcher:
        await run_cycles(watcher, clock, 5)
        assert [a.rule for a in watcher.tasks[scenario.key].firing()] == [Rule.PROCESSING_TOO_LONG]
        sim.set_faults(error_rate=1.0)
        report = await watcher.run_cycle()
    assert report.failed == 1
    assert report.transitions == []
    assert [a.rule for a in watcher.tasks[scenario.key].firing()] == [Rule.PROCESSING_TOO_LONG]
    errors = captured_logs.named("api.error")
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    assert [e["will_retry"] for e in errors] == [True, True, False]
    assert {e["error"] for e in errors} == {"http_status"}
    assert errors[0]["status"] == 500
    assert errors[0]["task_id"] == 7


async def test_api_outage_is_one_alert_and_recovers(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """Two all-failed cycles fire one api_unavailable (not one per task), then it resolves."""
    scenarios = [stuck_in_queue(i, scale=SCALE) for i in range(1, 6)]
    sim = await start_simulator(scenarios, clock=clock)
    async with watcher_for(sim, clock, [s.ref for s in scenarios], api={"retries": 0}) as w:
        await run_cycles(w, clock, 1)
        sim.set_faults(down=True)
        first, second, third = await run_cycles(w, clock, 3)
        assert not first.api_unavailable
        assert second.api_unavailable
        errors_while_down = len(captured_logs.named("api.error"))
        await run_cycles(w, clock, 1)
        assert len(captured_logs.named("api.error")) == errors_while_down  # suppressed
        sim.clear_faults()
        clock.advance(10 * SCALE)  # long enough for every task to be stuck
        recovered = await w.run_cycle()
        after = await w.run_cycle()
    assert third.api_errors == 5  # still counted while suppressed
    assert len(captured_logs.named("api.unavailable")) == 1
    assert captured_logs.named("api.unavailable")[0]["rule"] == "api_unavailable"
    assert len(captured_logs.named("api.recovered")) == 1
    assert not recovered.api_unavailable
    assert not any(e["rule"] == "api_unavailable" for e in captured_logs.named("task.stuck"))
    # task alerts were frozen during the outage and judged again once it healed
    assert recovered.stuck == 5
    assert after.transitions == []


async def test_rejected_credentials_fire_api_unavailable_at_once(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """A 401 with a static token is an outage of its own: api_unavailable in the first cycle."""
    scenario = healthy(1, scale=SCALE)
    sim = await start_simulator([scenario], clock=clock, token="the-real-token")
    async with watcher_for(sim, clock, [scenario.ref]) as watcher:
        report = await watcher.run_cycle()
    assert report.api_unavailable
    assert report.auth_rejected
    event = captured_logs.named("api.unavailable")[0]
    assert event["severity"] == "critical"
    assert "credentials" in event["summary"]


async def test_unknown_status_reported_once(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """A status outside the phase table is logged once per process, and treated as processing."""
    scenarios = [unknown_status(i, scale=SCALE) for i in (1, 2)]
    sim = await start_simulator(scenarios, clock=clock)
    async with watcher_for(sim, clock, [s.ref for s in scenarios]) as watcher:
        await run_cycles(watcher, clock, 8)
        phases = {s.phase for s in watcher.tasks.values()}
    unknown = captured_logs.named("task.unknown_status")
    assert len(unknown) == 1
    assert unknown[0]["assumed_phase"] == "processing"
    assert phases == {"processing"} or "done" in {p.value for p in phases if p}


async def test_unwatched_task_resolves_its_alerts(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """A task leaving the watched set resolves its firing alerts with reason 'unwatched'."""
    scenario = stuck_in_queue(3, scale=SCALE)
    sim = await start_simulator([scenario], clock=clock)
    async with watcher_for(sim, clock, [scenario.ref]) as watcher:
        await run_cycles(watcher, clock, 12)
        assert watcher.tasks[scenario.key].firing()
        changes = watcher.set_tasks([])
    assert {c.reason for c in changes} == {"unwatched"}
    recovered = captured_logs.named("task.recovered")
    assert recovered
    assert {e["reason"] for e in recovered} == {"unwatched"}


async def test_retry_after_past_the_cycle_defers_the_task(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """A 429 whose Retry-After reaches past the next cycle defers the task: counted skipped."""
    scenario = healthy(1, scale=SCALE)
    sim = await start_simulator([scenario], clock=clock)
    async with watcher_for(
        sim, clock, [scenario.ref], api={"retry_after_max": "5m"}, poll={"interval": 10}
    ) as watcher:
        sim.set_faults(throttle_rate=1.0, retry_after="25")
        first = await watcher.run_cycle()
        sim.clear_faults()
        clock.advance(10)
        second = await watcher.run_cycle()  # still inside the Retry-After window
        clock.advance(20)
        third = await watcher.run_cycle()
    assert first.skipped == 1
    assert second.skipped == 1
    assert second.polled == 0
    assert third.polled == 1


async def test_clock_skew_is_corrected_and_logged_once(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """A server clock 3 h ahead is logged as clock.skew once and does not fire queued_too_long."""
    scenario = healthy(1, scale=SCALE)
    sim = await start_simulator([scenario], clock=clock, date_skew=3 * 3600)
    async with watcher_for(sim, clock, [scenario.ref]) as watcher:
        reports = await run_cycles(watcher, clock, 3)
    assert fired(reports) == []
    skew = captured_logs.named("clock.skew")
    assert len(skew) == 1
    assert skew[0]["offset_s"] == pytest.approx(3 * 3600, abs=5)


async def test_not_found_needs_two_polls(
    start_simulator: Callable[..., Any], clock: FakeClock, captured_logs: LogCapture
) -> None:
    """A 404 is task.not_found at once; task_not_found fires on the second 404 in a row."""
    sim = await start_simulator([healthy(1, scale=SCALE)], clock=clock)
    ghost = TaskRef.by_id(999)
    async with watcher_for(sim, clock, [ghost]) as watcher:
        first = await watcher.run_cycle()
        second = await watcher.run_cycle()
        third = await watcher.run_cycle()
    assert fired([first]) == []
    assert fired([second]) == [("id:999", "task_not_found")]
    assert third.transitions == []
    assert len(captured_logs.named("task.not_found")) == 1
    assert second.polled == 1


async def test_adaptive_polling_saves_requests_and_still_detects_in_time(
    start_simulator: Callable[..., Any], clock: FakeClock
) -> None:
    """With max_interval, a healthy task is polled just before a rule could fire, and at
    least every max_interval; the stuck one is detected within threshold + one interval."""
    scenario = stuck_in_queue(1, scale=1000)  # never starts
    sim = await start_simulator([scenario], clock=clock)
    async with watcher_for(
        sim,
        clock,
        [scenario.ref],
        poll={"interval": 10, "max_interval": 300},
        rules={"queued_max": 50, "no_progress": 0},
    ) as watcher:
        polled_at: list[int] = []
        fired_at: list[int] = []
        for second in range(0, 101, 10):
            report = await watcher.run_cycle()
            if report.polled:
                polled_at.append(second)
            if fired([report]):
                fired_at.append(second)
            clock.advance(10)
    assert polled_at[:2] == [0, 40]  # nothing could fire before 50 s: cycles 10-30 skipped
    assert fired_at == [60]  # first poll with age > 50 s: within threshold + one interval
    assert polled_at[-3:] == [80, 90, 100]  # a firing task is polled every interval


async def test_adaptive_polling_caps_the_wait_at_max_interval(
    start_simulator: Callable[..., Any], clock: FakeClock
) -> None:
    """A task far from any threshold is still polled every max_interval (state changes such
    as a failure or restarts cannot be foreseen)."""
    scenario = stuck_in_queue(1, scale=1000)
    sim = await start_simulator([scenario], clock=clock)
    async with watcher_for(
        sim,
        clock,
        [scenario.ref],
        poll={"interval": 10, "max_interval": 30},
        rules={"queued_max": 3600, "no_progress": 0},
    ) as watcher:
        polls = 0
        for _ in range(12):  # 120 s
            polls += (await watcher.run_cycle()).polled
            clock.advance(10)
    assert polls == 4  # at 0, 30, 60, 90 s instead of 12 times
