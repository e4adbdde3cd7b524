"""Memory: peak RSS of a watcher at 10,000 and 100,000 tasks with history kept; the slope per
task between the two points.

Each point is a fresh process (``bench.worker memory``) that imports the package, notes its
peak RSS (the baseline), builds the real state — a ``Watcher`` with its store, per-task
``TaskState``, history and alerts — by running two real cycles, and reports its peak RSS
(``VmHWM``, so a cycle's transient peak counts). The points poll the simulator in-process
(``DirectPoller``: the simulator's answer serialised and parsed as the client does, without the
network) on a fake clock, so 100,000 tasks take seconds, not minutes; one run through the real
client over HTTP at 10,000 tasks checks that the network path keeps no more per task.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PYTHON, SEED, TOKEN, Figure, Section, X, run_child, scratch, simulator
from watchdog.clock import Clock
from watchdog.models import NotFound, Observed, PollResult, TaskRef
from watchdog.scenarios import TaskSource
from watchdog.simulator import Simulator
from watchdog.status import parse_task_status


class DirectPoller:
    """The client's work without the network: the simulator's answer, serialised and parsed
    as the client parses it (fresh objects per answer, as ``json.loads`` makes them)."""

    def __init__(self, source: TaskSource, clock: Clock) -> None:
        self._sim = Simulator([source], token=TOKEN, clock=clock, seed=SEED)
        self._sim.elapsed()  # the scripts' time zero
        self.requests = 0

    async def poll(self, ref: TaskRef, *, deadline: float | None = None) -> PollResult:
        self.requests += 1
        sc = self._sim.find(ref.task_id, ref.external_id)
        snap = self._sim.task_state(sc) if sc is not None else None
        if sc is None or snap is None:
            return NotFound(ref)
        body = json.dumps(self._sim.render(sc, snap)).encode()
        return Observed(ref, parse_task_status(json.loads(body)), server_date=self._sim.now())


@dataclass(frozen=True, slots=True)
class Sizes:
    small: int = 10_000
    large: int = 100_000
    http_check: int = 10_000  # 0: skip the run over HTTP
    cycles: int = 2


def _point(folder: Path, tasks: int, cycles: int, url: str | None = None) -> dict[str, Any]:
    out = folder / f"memory-{tasks}-{'http' if url else 'direct'}.json"
    argv = [PYTHON, "-m", "bench.worker", "memory", "--tasks", str(tasks)]
    argv += ["--cycles", str(cycles), "--folder", str(folder)]
    if url:
        argv += ["--url", url]
    with out.open("wb") as stdout:
        run_child(argv, stdout=stdout, timeout=600)
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def run(sizes: Sizes) -> Section:
    section = Section("memory", "Memory")
    started = time.perf_counter()
    with scratch("memory") as folder:
        small = _point(folder, sizes.small, sizes.cycles)
        large = _point(folder, sizes.large, sizes.cycles)
        http: dict[str, Any] | None = None
        if sizes.http_check:
            with simulator(sizes.http_check) as sim:
                http = _point(folder, sizes.http_check, sizes.cycles, sim.url)
    slope = (large["peak_kib"] - small["peak_kib"]) / (sizes.large - sizes.small)
    section.add(
        Figure(
            "Peak RSS slope per watched task",
            slope,
            "KiB",
            2.0,
            detail=f"({large['peak_kib'] / 1024:.1f} - {small['peak_kib'] / 1024:.1f} MiB) / "
            f"{sizes.large - sizes.small:,} tasks",
        )
    )
    for point in (small, large):
        section.add(
            Figure(
                f"Peak RSS at {point['tasks']:,} tasks / the bare process",
                point["peak_kib"] / point["baseline_kib"],
                X,
                detail=f"{point['peak_kib'] / 1024:.1f} MiB; the process after its imports: "
                f"{point['baseline_kib'] / 1024:.1f} MiB; {point['histories']:,} histories, "
                f"{point['done']:,} done, {point['firing']:,} with firing alerts",
            )
        )
    if http is not None:
        peer = small if http["tasks"] == small["tasks"] else None
        section.add(
            Figure(
                f"Peak RSS at {http['tasks']:,} tasks, real client over HTTP / in-process",
                http["peak_kib"] / peer["peak_kib"] if peer else float("nan"),
                X,
                detail=f"{http['peak_kib'] / 1024:.1f} MiB ({http['polled']:,} polls in "
                f"{http['seconds']:.0f} s, {http['firing']:,} firing): the network path holds "
                "no per-task state; the difference is aiohttp's buffers and a different moment "
                "of the tasks' timelines",
            )
        )
    section.note(
        f"{sizes.cycles} cycle(s) per point, with a store and the demo thresholds, over the "
        "simulator's bulk mix (seeded): by the end most tasks are done, about a tenth have "
        "firing alerts with their evidence, and every task has its history. The slope is "
        "what each further task costs; the fixed part (interpreter, imports) cancels out."
    )
    section.seconds = time.perf_counter() - started
    return section
