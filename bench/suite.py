"""The whole suite: which benchmarks run, at which sizes, in which order."""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import adaptive, memory, overhead, report, rules, startup, store
from bench.common import ROOT, Section, load_average, machine


@dataclass(frozen=True, slots=True)
class Profile:
    overhead: overhead.Sizes
    memory: memory.Sizes
    rules: rules.Sizes
    startup: startup.Sizes
    store: store.Sizes
    adaptive: adaptive.Sizes


#: the sizes of the issue: about 5 to 7 minutes on a shared 2-core machine
FULL = Profile(
    overhead=overhead.Sizes(),
    memory=memory.Sizes(),
    rules=rules.Sizes(),
    startup=startup.Sizes(),
    store=store.Sizes(),
    adaptive=adaptive.Sizes(),
)

#: every measurement at toy sizes: seconds, for trying the suite out and for its smoke test
QUICK = Profile(
    overhead=overhead.Sizes(
        tasks=60, latency=0.0, concurrency=8, repetitions=1, inproc_repetitions=1,
        requests_sample=10,
    ),
    memory=memory.Sizes(small=200, large=600, http_check=200, cycles=1),
    rules=rules.Sizes(tasks=200, repetitions=1, min_seconds=0.01),
    startup=startup.Sizes(repetitions=1),
    store=store.Sizes(rows=500, repetitions=1, cycle_tasks=50),
    adaptive=adaptive.Sizes(tasks=80, minutes=4, extra_minutes=1),
)  # fmt: skip

NAMES = ("startup", "rules", "store", "memory", "overhead", "adaptive")


def benchmarks(profile: Profile) -> dict[str, Callable[[], list[Section]]]:
    """Name -> a function that runs it; ``overhead`` also yields the ``requests`` section."""
    return {
        "startup": lambda: [startup.run(profile.startup)],
        "rules": lambda: [rules.run(profile.rules)],
        "store": lambda: [store.run(profile.store)],
        "memory": lambda: [memory.run(profile.memory)],
        "overhead": lambda: list(overhead.run(profile.overhead)),
        "adaptive": lambda: [adaptive.run(profile.adaptive)],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the benchmarks; write docs/performance.md."
    )
    parser.add_argument("--only", action="append", choices=NAMES, help="run only these")
    parser.add_argument("--quick", action="store_true", help="toy sizes (a try-out)")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the report (default: docs/performance.md after a full run; "
        "--only and --quick write nothing unless this is given)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    chosen = [name for name in NAMES if not args.only or name in args.only]
    output = args.output
    if output is None and not args.only and not args.quick:
        output = ROOT / "docs" / "performance.md"

    started = time.perf_counter()
    load_before = load_average()
    info = machine()
    print("sd-watchdog benchmarks:", ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    sections: list[Section] = []
    failed: list[str] = []
    runners = benchmarks(profile)
    for name in chosen:
        load_then = load_average()
        try:
            produced = runners[name]()
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
            failed.append(name)
            broken = Section(name, f"{name} (failed)")
            broken.note(f"The benchmark failed: {type(exc).__name__}: {exc}")
            produced = [broken]
            traceback.print_exc()
        for section in produced:
            section.load = load_then
            sections.append(section)
            print(report.console(section), flush=True)
    seconds = time.perf_counter() - started
    load = f"{load_before} at the start, {load_average()} at the end"
    print(f"\n{len(sections)} sections in {seconds:.0f} s; load average {load}")
    if output is not None:
        report.write(output, report.markdown(sections, info, seconds=seconds, load=load))
        print(f"wrote {output}")
    missed = [f.name for s in sections for f in s.figures if f.verdict == "MISS"]
    if failed:
        return 2
    return 1 if args.strict and missed else 0
