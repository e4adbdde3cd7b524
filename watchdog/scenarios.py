"""Scripted task lifecycles for the SmartDocumentor simulator (pure: no I/O, no clock).

A ``Scenario`` is one task: a creation offset and a list of timed ``Step``s, in seconds after
the simulator started. ``snapshot`` says what the API shows for it at a given moment, and
``restart`` / ``settle`` model ``PATCH restartprocessing`` (and an operator who reprocesses the
task at a scripted time). The builders take a ``scale``: every time constant is in *units*
(1 unit = ``scale`` seconds) and is designed to trip the thresholds of ``demo_thresholds`` —
one unit ≈ one poll interval, and the whole show is over after about 30 units.

Task sources (``ScenarioSet``, ``Bulk``) answer lookups by task ID or external ID; ``Bulk``
derives its tasks from the ID on demand, so 100,000 of them cost no memory.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from watchdog.models import TaskRef

StatusPair = tuple[int | None, str | None]

# TaskStatus values documented in SMARTDOCUMENTOR-API.md §6.
QUEUED: StatusPair = (30, "QueuedForPreProcessing")
PROCESSING: StatusPair = (31, "PreProcessingInProgress")
PRE_FAILED: StatusPair = (32, "PreProcessingFailed")
PRE_DONE: StatusPair = (34, "PreProcessingSuccessful")
# Later stages exist but their numbers are not documented: these numbers are invented (above 35,
# where the table stops), so a watchdog that trusts a number over the text is caught out.
RECOGNIZING: StatusPair = (41, "Recognizing")
TO_REVIEW: StatusPair = (50, "ToReview")
PROCESSED: StatusPair = (60, "Processed")
# IntegrationStatus: only the name "Failed" is documented; the numbers and other names are made up.
INTEGRATION_NONE: StatusPair = (0, "NotStarted")
INTEGRATION_OK: StatusPair = (2, "Succeeded")
INTEGRATION_FAILED: StatusPair = (4, "Failed")


@dataclass(frozen=True, slots=True)
class Step:
    """At ``at`` seconds (after the simulator start, or after a restart), set these fields.

    ``None`` leaves a field as it is. ``start`` sets ``preProcessingStartedOn`` to the step's
    time; ``restarts`` sets ``restartCount`` (as if reprocessed); ``gone`` makes the task answer
    404 from then on (``False`` brings it back).
    """

    at: float
    status: StatusPair | None = None
    pages: int | None = None
    integration: StatusPair | None = None
    start: bool = False
    restarts: int | None = None
    gone: bool | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """One scripted task. ``expect`` names the rules it should fire under ``demo_thresholds``."""

    name: str
    task_id: int
    steps: tuple[Step, ...]
    created: float = 0.0  # createdOn, in seconds relative to the simulator start
    external_id: str | None = None
    by_external: bool = False  # watch it by external ID rather than by task ID
    after_restart: tuple[Step, ...] | None = None  # the script after a restart; None = steps
    restart_at: float | None = None  # an operator reprocesses the task at this time
    expect: frozenset[str] = frozenset()
    recovers: bool = False  # its alerts resolve later in the show
    display_name: str = ""
    workspace_id: int = 1
    batch_id: int | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        for steps in (self.steps, self.after_restart or ()):
            if any(a.at > b.at for a, b in itertools.pairwise(steps)):
                raise ValueError(f"scenario {self.name!r}: steps must be in time order")
        if self.by_external and not self.external_id:
            raise ValueError(f"scenario {self.name!r}: by_external needs an external_id")

    @property
    def ref(self) -> TaskRef:
        """How a watchdog config refers to this task."""
        if self.by_external and self.external_id is not None:
            return TaskRef.by_external_id(self.external_id)
        return TaskRef.by_id(self.task_id)

    @property
    def key(self) -> str:
        return self.ref.key


@dataclass(frozen=True, slots=True)
class Run:
    """A task's state after a restart: the run began at ``start`` with ``count`` restarts."""

    start: float
    count: int
    auto_done: bool = False  # the scripted operator restart has happened


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the status endpoint shows for a task at one moment (times in simulator seconds)."""

    status: StatusPair
    integration: StatusPair
    pages: int
    restart_count: int | None  # None: never restarted, the API omits the field
    started: float | None


def snapshot(sc: Scenario, elapsed: float, run: Run | None = None) -> Snapshot | None:
    """The task as seen ``elapsed`` seconds after the simulator start; None when it is a 404."""
    if elapsed < sc.created:
        return None
    status, integration, pages, gone = QUEUED, INTEGRATION_NONE, 0, False
    if run is None:
        steps, base, count, started = sc.steps, 0.0, None, None
    else:
        steps = sc.after_restart if sc.after_restart is not None else sc.steps
        base, count, started = run.start, run.count, run.start
    for step in steps:
        at = base + step.at
        if at > elapsed:
            break
        status = step.status or status
        integration = step.integration or integration
        pages = pages if step.pages is None else step.pages
        gone = gone if step.gone is None else step.gone
        if step.start:
            started = at
        if step.restarts is not None:
            # A restarted run climbs on top of the restarts that led to it.
            count = step.restarts + (run.count if run is not None else 0)
    if gone:
        return None
    return Snapshot(status, integration, pages, count, started)


def restart(sc: Scenario, run: Run | None, at: float) -> Run | None:
    """The run after a reprocess at ``at``; None when the task cannot be found then."""
    snap = snapshot(sc, at, run)
    if snap is None:
        return None
    return Run(at, (snap.restart_count or 0) + 1, run.auto_done if run is not None else False)


def settle(sc: Scenario, run: Run | None, elapsed: float) -> Run | None:
    """Apply the scripted operator restart once its time has come (lazily, on the next look)."""
    if sc.restart_at is None or elapsed < sc.restart_at or (run is not None and run.auto_done):
        return run
    new = restart(sc, run, sc.restart_at)
    return run if new is None else replace(new, auto_done=True)


# --- builders -------------------------------------------------------------------------


def demo_thresholds(scale: float = 1.0) -> dict[str, float]:
    """The ``[rules]`` values (seconds; ``max_restarts`` a count) the scenarios are timed for."""
    return {
        "queued_max": 10 * scale,
        "processing_max": 20 * scale,
        "zero_pages_after": 8 * scale,
        "no_progress": 12 * scale,
        "review_max": 8 * scale,
        "max_restarts": 3,
    }


def _steps(scale: float, *steps: Step) -> tuple[Step, ...]:
    return tuple(replace(s, at=s.at * scale) for s in steps)


def _make(
    name: str,
    task_id: int,
    scale: float,
    steps: Iterable[Step],
    *,
    after_restart: Iterable[Step] | None = None,
    created: float = 0.0,
    restart_at: float | None = None,
    external_id: str | None = None,
    by_external: bool = False,
    expect: Iterable[str] = (),
    recovers: bool = False,
) -> Scenario:
    return Scenario(
        name=name,
        task_id=task_id,
        steps=_steps(scale, *steps),
        created=created * scale,
        external_id=external_id,
        by_external=by_external,
        after_restart=None if after_restart is None else _steps(scale, *after_restart),
        restart_at=None if restart_at is None else restart_at * scale,
        expect=frozenset(expect),
        recovers=recovers,
        display_name=f"{name.replace('_', ' ')} #{task_id}",
    )


def healthy(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Queued → processing → done within 8 units; fires nothing."""
    return _make(
        "healthy",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(2, PROCESSING, pages=0, start=True),
            Step(4, pages=3),
            Step(6, PRE_DONE),
            Step(8, PROCESSED, integration=INTEGRATION_OK),
        ],
    )


def slow_but_ok(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Waits 7 units, processes for 18 with steady progress: close to every limit, under all."""
    return _make(
        "slow_but_ok",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(7, PROCESSING, pages=0, start=True),
            Step(11, pages=4),
            Step(16, pages=9),
            Step(21, PRE_DONE),
            Step(25, PROCESSED, integration=INTEGRATION_OK),
        ],
    )


def stuck_in_queue(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Never leaves the queue."""
    return _make(
        "stuck_in_queue",
        task_id,
        scale,
        [Step(0, QUEUED)],
        expect={"queued_too_long", "no_progress"},
    )


def stuck_in_processing(task_id: int, *, scale: float = 1.0, horizon: int = 300) -> Scenario:
    """Processes forever, a page every 3 units (so only the time budget is exceeded)."""
    pages = [Step(1 + 3 * i, pages=1 + i) for i in range(1, horizon // 3)]
    return _make(
        "stuck_in_processing",
        task_id,
        scale,
        [Step(0, QUEUED), Step(1, PROCESSING, pages=1, start=True), *pages],
        expect={"processing_too_long"},
    )


def zero_pages(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Pre-processing reports success with 0 pages for a while, then pages appear and it ends."""
    return _make(
        "zero_pages",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(1, PROCESSING, pages=0, start=True),
            Step(7, PRE_DONE),  # a status change, so that only no_pages fires
            Step(15, pages=6),
            Step(17, PROCESSED, integration=INTEGRATION_OK),
        ],
        expect={"no_pages"},
        recovers=True,
    )


def restart_loop(task_id: int, *, scale: float = 1.0, horizon: int = 300) -> Scenario:
    """Reprocessed every 3 units (by someone else), restartCount climbing past 3."""
    loops = [
        Step(1 + 3 * i, PROCESSING, pages=0, start=True, restarts=i) for i in range(1, horizon // 3)
    ]
    return _make(
        "restart_loop",
        task_id,
        scale,
        [Step(0, QUEUED), Step(1, PROCESSING, pages=0, start=True), *loops],
        expect={"too_many_restarts"},
    )


def failed(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Pre-processing fails (status 32)."""
    return _make(
        "failed",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(1, PROCESSING, pages=0, start=True),
            Step(3, PRE_FAILED),
        ],
        expect={"failed_status"},
    )


def integration_failed(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Finishes (Processed) but its integration fails."""
    return _make(
        "integration_failed",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(1, PROCESSING, pages=0, start=True),
            Step(2, pages=2),
            Step(3, PRE_DONE),
            Step(5, PROCESSED, integration=INTEGRATION_FAILED),
        ],
        expect={"integration_failed"},
    )


def no_progress(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Starts processing with 7 pages at once, then nothing ever changes."""
    return _make(
        "no_progress",
        task_id,
        scale,
        [Step(0, PROCESSING, pages=7, start=True)],
        expect={"no_progress", "processing_too_long"},
    )


def in_review(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Processed into "ToReview", where nobody ever looks at it."""
    return _make(
        "in_review",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(1, PROCESSING, pages=0, start=True),
            Step(2, pages=3),
            Step(3, PRE_DONE),
            Step(4, TO_REVIEW),
        ],
        expect={"review_overdue"},
    )


def vanishing(task_id: int, *, scale: float = 1.0) -> Scenario:
    """Deleted behind our back: answers 404 from 6 units on."""
    return _make(
        "vanishing",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(1, PROCESSING, pages=0, start=True),
            Step(3, pages=2),
            Step(6, gone=True),
        ],
        expect={"task_not_found"},
    )


def unknown_status(
    task_id: int, *, scale: float = 1.0, status: StatusPair = RECOGNIZING
) -> Scenario:
    """Passes through a status no table knows ("Recognizing", 41), then finishes normally."""
    return _make(
        "unknown_status",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(1, PROCESSING, pages=0, start=True),
            Step(3, status, pages=4),
            Step(9, PROCESSED, integration=INTEGRATION_OK),
        ],
    )


def recovering(task_id: int, *, scale: float = 1.0, restart_at: float | None = 16) -> Scenario:
    """Stuck with 0 pages until reprocessed (by an operator at ``restart_at``), then done."""
    return _make(
        "recovering",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(1, PROCESSING, pages=0, start=True),
        ],
        after_restart=[
            Step(0, PROCESSING, pages=0),
            Step(2, pages=5),
            Step(4, PRE_DONE),
            Step(6, PROCESSED, integration=INTEGRATION_OK),
        ],
        restart_at=restart_at,
        expect={"no_pages", "no_progress"},
        recovers=True,
    )


def by_external(task_id: int, *, scale: float = 1.0, external_id: str = "INV-0042") -> Scenario:
    """Watched by external ID; created before the start, queued too long, then goes through."""
    return _make(
        "by_external",
        task_id,
        scale,
        [
            Step(0, QUEUED),
            Step(9, PROCESSING, pages=0, start=True),
            Step(11, pages=3),
            Step(13, PRE_DONE),
            Step(15, PROCESSED, integration=INTEGRATION_OK),
        ],
        created=-4,
        external_id=external_id,
        by_external=True,
        expect={"queued_too_long"},
        recovers=True,
    )


class Builder(Protocol):
    def __call__(self, task_id: int, *, scale: float = 1.0) -> Scenario: ...


SCENARIOS: Mapping[str, Builder] = {
    "healthy": healthy,
    "slow_but_ok": slow_but_ok,
    "stuck_in_queue": stuck_in_queue,
    "stuck_in_processing": stuck_in_processing,
    "zero_pages": zero_pages,
    "restart_loop": restart_loop,
    "failed": failed,
    "integration_failed": integration_failed,
    "no_progress": no_progress,
    "in_review": in_review,
    "vanishing": vanishing,
    "unknown_status": unknown_status,
    "recovering": recovering,
    "by_external": by_external,
}


def demo_scenarios(scale: float = 1.0, first_id: int = 101) -> list[Scenario]:
    """Every scenario once, with consecutive task IDs from ``first_id``."""
    return [build(first_id + i, scale=scale) for i, build in enumerate(SCENARIOS.values())]


# --- task sources ---------------------------------------------------------------------


class TaskSource(Protocol):
    def find_id(self, task_id: int) -> Scenario | None: ...

    def find_external(self, external_id: str) -> Scenario | None: ...


class ScenarioSet:
    """A fixed set of scenarios, indexed by task ID and external ID."""

    def __init__(self, scenarios: Iterable[Scenario]) -> None:
        self._by_id: dict[int, Scenario] = {}
        self._by_ext: dict[str, Scenario] = {}
        for sc in scenarios:
            if sc.task_id in self._by_id:
                raise ValueError(f"task id {sc.task_id} is used twice")
            self._by_id[sc.task_id] = sc
            if sc.external_id is not None:
                if sc.external_id in self._by_ext:
                    raise ValueError(f"external id {sc.external_id!r} is used twice")
                self._by_ext[sc.external_id] = sc

    def __iter__(self) -> Iterator[Scenario]:
        return iter(self._by_id.values())

    def find_id(self, task_id: int) -> Scenario | None:
        return self._by_id.get(task_id)

    def find_external(self, external_id: str) -> Scenario | None:
        return self._by_ext.get(external_id)


DEFAULT_MIX: Mapping[str, float] = {
    "healthy": 80,
    "slow_but_ok": 8,
    "stuck_in_queue": 2,
    "stuck_in_processing": 2,
    "zero_pages": 1,
    "restart_loop": 1,
    "failed": 2,
    "integration_failed": 1,
    "no_progress": 1,
    "in_review": 1,
    "unknown_status": 1,
}

_GOLDEN = 0x9E3779B1  # Knuth's multiplicative hash: spreads consecutive IDs over the mix


class Bulk:
    """``n`` generated tasks with IDs ``first_id …``, external IDs ``BULK-<id>``.

    Each task's scenario is picked from ``mix`` (name → weight) by a hash of its ID and ``seed``
    and built on demand from a per-scenario template, so nothing is stored per task.
    """

    def __init__(
        self,
        n: int,
        *,
        mix: Mapping[str, float] | None = None,
        first_id: int = 1,
        scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        mix = DEFAULT_MIX if mix is None else mix
        unknown = set(mix) - set(SCENARIOS)
        if unknown or not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"bad mix {dict(mix)!r}: names from SCENARIOS, weights ≥ 0")
        self.task_ids = range(first_id, first_id + n)
        self._seed = seed
        self._names = list(mix)
        self._cumulative: list[float] = []
        total = 0.0
        for name in self._names:
            total += mix[name]
            self._cumulative.append(total)
        self._total = total
        self._templates = {name: SCENARIOS[name](0, scale=scale) for name in self._names}
        self._scale = scale

    def __len__(self) -> int:
        return len(self.task_ids)

    def _hash(self, task_id: int) -> int:
        return ((task_id + self._seed * 0x85EBCA77) * _GOLDEN) & 0xFFFFFFFF

    def kind(self, task_id: int) -> str:
        """The scenario name of a task in this set."""
        point = self._hash(task_id) / 2**32 * self._total
        return self._names[min(bisect.bisect_right(self._cumulative, point), len(self._names) - 1)]

    def find_id(self, task_id: int) -> Scenario | None:
        if task_id not in self.task_ids:
            return None
        template = self._templates[self.kind(task_id)]
        return replace(
            template,
            task_id=task_id,
            external_id=f"BULK-{task_id}",
            by_external=False,
            display_name=f"{template.name} #{task_id}",
            # Stagger creation over a minute-ish window so the tasks are not all alike.
            created=-float((self._hash(task_id) >> 8) % 60) * self._scale,
        )

    def find_external(self, external_id: str) -> Scenario | None:
        prefix, _, digits = external_id.partition("-")
        if prefix != "BULK" or not digits.isdigit():
            return None
        return self.find_id(int(digits))


def bulk(
    n: int,
    *,
    mix: Mapping[str, float] | None = None,
    first_id: int = 1,
    scale: float = 1.0,
    seed: int = 0,
) -> Bulk:
    """``n`` generated tasks for benchmarks (see ``Bulk``)."""
    return Bulk(n, mix=mix, first_id=first_id, scale=scale, seed=seed)
