"""The realistic fleet of the adaptive-polling benchmark (also the input of the rules and store
benchmarks), built from ``watchdog.scenarios`` Scenario/Step records: times in seconds from
the simulator's start; every task exists before the first poll.

- 70 % done: processed hours ago;
- 25 % healthy in progress: started within the last 30 min or the next 15, a page every
  2 to 5 min, done after 30 to 55 min (many finish within the hour) — never over a threshold;
- 5 % becoming stuck, four ways in turn: ``queue`` (never starts: queued_too_long during the
  hour), ``zero_pages`` (starts during the hour with 0 pages: no_pages), ``slow`` (steady pages
  but over the per-page budget: processing_too_long) and ``stall`` (pages stop: no_progress).

Each stuck task knows when a rule starts to hold for it by the server's truth.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from watchdog.scenarios import (
    INTEGRATION_OK,
    PRE_DONE,
    PROCESSED,
    PROCESSING,
    QUEUED,
    Scenario,
    Step,
)

MIN = 60.0
HOUR = 3600.0
STUCK_KINDS = ("queue", "zero_pages", "slow", "stall")
#: ``[rules]`` for the fleet: the defaults, plus a page budget for long documents
RULES: Mapping[str, float] = {"processing_per_page": 30.0}
# The default thresholds, which the fleet's timings are built around.
QUEUED_MAX = 1800.0
PROCESSING_MAX = 3600.0
ZERO_PAGES_AFTER = 900.0
NO_PROGRESS = 2700.0


@dataclass(frozen=True, slots=True)
class Fleet:
    scenarios: list[Scenario]
    kinds: dict[str, str]  # task key -> done | healthy | one of STUCK_KINDS
    #: stuck tasks: the simulator time from which a rule holds by the server's truth
    truth: dict[str, float]


def _pages(start: float, until: float, every: float, first: float = MIN) -> list[Step]:
    steps, at, pages = [], start + first, 1
    while at < until:
        steps.append(Step(at, pages=pages))
        pages += 1
        at += every
    return steps


def _over_budget(start: float, pages: list[Step]) -> float:
    """When processing_too_long starts to hold: age > processing_max + per_page * pages."""
    bounds = [start, *(s.at for s in pages), math.inf]
    for count in range(len(bounds) - 1):
        limit = PROCESSING_MAX + RULES["processing_per_page"] * count
        at = max(bounds[count], start + limit)
        if at < bounds[count + 1]:
            return at
    return math.inf


def fleet(tasks: int, *, seed: int, done: float = 0.70, healthy: float = 0.25) -> Fleet:
    """``tasks`` scenarios with IDs 1…; the shares of done and healthy, the rest stuck."""
    rng = random.Random(seed)
    n_done = round(tasks * done)
    n_healthy = round(tasks * healthy)
    kinds_in_order = ["done"] * n_done + ["healthy"] * n_healthy
    stuck = tasks - n_done - n_healthy
    kinds_in_order += [STUCK_KINDS[i % len(STUCK_KINDS)] for i in range(stuck)]
    rng.shuffle(kinds_in_order)
    scenarios: list[Scenario] = []
    kinds: dict[str, str] = {}
    truths: dict[str, float] = {}
    for task_id, kind in enumerate(kinds_in_order, start=1):
        created, steps, truth = _build(kind, rng)
        sc = Scenario(
            name=kind,
            task_id=task_id,
            steps=tuple(steps),
            created=created,
            external_id=f"FLEET-{task_id}",
            display_name=f"{kind} #{task_id}",
            workspace_id=1 + task_id % 7,
            batch_id=1000 + task_id // 50,
        )
        scenarios.append(sc)
        kinds[sc.key] = kind
        if truth is not None:
            truths[sc.key] = truth
    return Fleet(scenarios, kinds, truths)


def _build(kind: str, rng: random.Random) -> tuple[float, list[Step], float | None]:
    """(createdOn, steps, when a rule starts to hold by the server's truth) for one task."""
    if kind == "done":
        created = -rng.uniform(HOUR, 6 * HOUR)
        start = created + rng.uniform(MIN, 10 * MIN)
        end = start + rng.uniform(10 * MIN, 30 * MIN)
        steps = [Step(created, QUEUED), Step(start, PROCESSING, pages=0, start=True)]
        steps += [Step(start + MIN, pages=rng.randint(1, 40)), Step(end - MIN, PRE_DONE)]
        return created, [*steps, Step(end, PROCESSED, integration=INTEGRATION_OK)], None
    if kind == "healthy":
        start = rng.uniform(-30 * MIN, 15 * MIN)
        created = min(start, 0.0) - rng.uniform(MIN, 10 * MIN)
        end = start + rng.uniform(30 * MIN, 55 * MIN)
        steps = [Step(created, QUEUED), Step(start, PROCESSING, pages=0, start=True)]
        steps += _pages(start, end - 2 * MIN, rng.uniform(2 * MIN, 5 * MIN))
        steps += [Step(end - 2 * MIN, PRE_DONE)]
        return created, [*steps, Step(end, PROCESSED, integration=INTEGRATION_OK)], None
    if kind == "queue":  # never leaves the queue: queued_too_long
        created = -rng.uniform(2 * MIN, 29 * MIN)
        return created, [Step(created, QUEUED)], created + QUEUED_MAX
    if kind == "zero_pages":  # starts during the hour and never gets a page: no_pages
        created = -rng.uniform(0.0, 5 * MIN)
        start = rng.uniform(MIN, 20 * MIN)
        steps = [Step(created, QUEUED), Step(start, PROCESSING, pages=0, start=True)]
        return created, steps, start + ZERO_PAGES_AFTER
    if kind == "slow":  # a page every 3 min, forever: over the page budget after ~72 min
        start = -rng.uniform(30 * MIN, 55 * MIN)
        created = start - rng.uniform(MIN, 10 * MIN)
        pages = _pages(start, 3 * HOUR, 3 * MIN)
        steps = [Step(created, QUEUED), Step(start, PROCESSING, pages=0, start=True), *pages]
        return created, steps, _over_budget(start, pages)
    if kind == "stall":  # a page every 2 min, then nothing changes any more: no_progress
        start = -rng.uniform(0.0, 10 * MIN)
        created = start - rng.uniform(MIN, 10 * MIN)
        pages = _pages(start, start + rng.uniform(5 * MIN, 15 * MIN), 2 * MIN)
        steps = [Step(created, QUEUED), Step(start, PROCESSING, pages=0, start=True), *pages]
        # no watcher can know of a change before its first poll (at 0)
        truth = min(max(steps[-1].at, 0.0) + NO_PROGRESS, _over_budget(start, pages))
        return created, steps, truth
    raise ValueError(f"unknown kind {kind!r}")
