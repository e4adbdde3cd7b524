"""Rules engine: task evaluations per second on one core — ``classify`` + ``update_history`` +
``evaluate`` per task, as a cycle runs them for every observed task.

The inputs are the fleet of ``bench.fleet`` (70 % done, 25 % healthy in progress, 5 % stuck,
some of them firing: their findings, summaries and evidence are built) at minute 40 of its
timeline, each task with the history of a poll one minute earlier, parsed from JSON as the
client parses it. The baseline, alternated with it, is that parse itself (``json.loads`` +
``parse_task_status`` of the same answers): the work the client does for each task anyway.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

from bench.common import SEED, TOKEN, Figure, Section, X, median
from bench.fleet import RULES, fleet
from watchdog.clock import FakeClock
from watchdog.models import TaskRef, TaskStatus
from watchdog.phases import PhaseTable, classify
from watchdog.rules import TaskHistory, evaluate, update_history
from watchdog.settings import RulesSettings, Thresholds
from watchdog.simulator import Simulator
from watchdog.status import parse_task_status


@dataclass(frozen=True, slots=True)
class Sizes:
    tasks: int = 10_000
    repetitions: int = 7
    min_seconds: float = 0.3  # each timed batch runs at least this long


@dataclass(frozen=True, slots=True)
class Inputs:
    refs: list[TaskRef]
    statuses: list[TaskStatus]
    histories: list[TaskHistory]
    bodies: list[bytes]
    now: datetime
    firing: int
    phases: dict[str, int]


def inputs(tasks: int, minute: float = 40.0) -> Inputs:
    """The fleet's answers at ``minute``, with histories from a poll a minute before."""
    built = fleet(tasks, seed=SEED)
    clock = FakeClock()
    sim = Simulator(built.scenarios, token=TOKEN, clock=clock, seed=SEED)
    sim.elapsed()
    table = PhaseTable.build()
    thresholds = Thresholds.from_settings(RulesSettings.model_validate(dict(RULES)))
    clock.advance((minute - 1) * 60)
    earlier = {}
    for sc in built.scenarios:
        snap = sim.task_state(sc)
        assert snap is not None  # every fleet task exists from the start
        earlier[sc.key] = parse_task_status(sim.render(sc, snap))
    before = clock.now()
    clock.advance(60)
    refs, statuses, histories, bodies = [], [], [], []
    firing = 0
    phases: dict[str, int] = {}
    for sc in built.scenarios:
        snap = sim.task_state(sc)
        assert snap is not None
        body = json.dumps(sim.render(sc, snap)).encode()
        status = parse_task_status(json.loads(body))
        old = earlier[sc.key]
        history = update_history(None, old, classify(old, table).phase, before)
        phase = classify(status, table).phase
        phases[phase.value] = phases.get(phase.value, 0) + 1
        firing += bool(
            evaluate(sc.ref, status, phase, update_history(history, status, phase, clock.now()),
                     thresholds, clock.now())
        )  # fmt: skip
        refs.append(sc.ref)
        statuses.append(status)
        histories.append(history)
        bodies.append(body)
    return Inputs(refs, statuses, histories, bodies, clock.now(), firing, phases)


def evaluations(data: Inputs, min_seconds: float) -> float:
    """Evaluations per CPU second of this thread (one core), over at least ``min_seconds``."""
    table = PhaseTable.build()
    thresholds = Thresholds.from_settings(RulesSettings.model_validate(dict(RULES)))
    now = data.now
    rows = list(zip(data.refs, data.statuses, data.histories, strict=True))
    done = 0
    started = time.thread_time()
    while True:
        for ref, status, prev in rows:
            phase = classify(status, table).phase
            history = update_history(prev, status, phase, now)
            evaluate(ref, status, phase, history, thresholds, now)
        done += len(rows)
        spent = time.thread_time() - started
        if spent >= min_seconds:
            return done / spent


def parses(data: Inputs, min_seconds: float) -> float:
    """The baseline: answers parsed (``json.loads`` + ``parse_task_status``) per CPU second."""
    done = 0
    started = time.thread_time()
    while True:
        for body in data.bodies:
            parse_task_status(json.loads(body))
        done += len(data.bodies)
        spent = time.thread_time() - started
        if spent >= min_seconds:
            return done / spent


def run(sizes: Sizes) -> Section:
    section = Section("rules", "Rules engine")
    started = time.perf_counter()
    data = inputs(sizes.tasks)
    rule_rates, parse_rates = [], []
    evaluations(data, sizes.min_seconds / 3)  # warm-up
    for rep in range(sizes.repetitions):
        if rep % 2:
            parse_rates.append(parses(data, sizes.min_seconds))
            rule_rates.append(evaluations(data, sizes.min_seconds))
        else:
            rule_rates.append(evaluations(data, sizes.min_seconds))
            parse_rates.append(parses(data, sizes.min_seconds))
    rate = median(rule_rates)
    section.add(
        Figure(
            "Task evaluations per second, one core",
            rate,
            "/s",
            200_000,
            better="higher",
            fmt=",.0f",
            detail=f"classify + update_history + evaluate; {1e6 / rate:.2f} µs each "
            f"(median of {sizes.repetitions} batches of ≥ {sizes.min_seconds:g} s CPU)",
        )
    )
    parse_rate = median(parse_rates)
    section.add(
        Figure(
            "Evaluations per parse of the same answer (the client's own work per task)",
            rate / parse_rate,
            X,
            better="higher",
            detail=f"parse: {parse_rate:,.0f}/s ({1e6 / parse_rate:.2f} µs each)",
        )
    )
    mix = ", ".join(f"{n:,} {p}" for p, n in sorted(data.phases.items()))
    section.note(
        f"{len(data.statuses):,} tasks of the adaptive benchmark's fleet at minute 40: {mix}; "
        f"{data.firing:,} with a rule firing (their summaries and evidence are built on every "
        "evaluation, as in a cycle). CPU time of the benchmark thread (`time.thread_time`). "
        "An absolute rate depends on the machine: compare it with the machine line above."
    )
    section.seconds = time.perf_counter() - started
    return section
