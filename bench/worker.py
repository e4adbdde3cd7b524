"""Measurements that need a process of their own; each prints one JSON object on stdout.

python -m bench.worker inproc   --url URL --tasks N --concurrency C --repetitions R --folder D
python -m bench.worker memory   [--url URL] --tasks N --cycles K --folder D
python -m bench.worker adaptive --tasks N --max-interval S [--minutes M --extra-minutes E]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.adaptive import run_simulation
from bench.common import SEED, TOKEN
from bench.floor import fetch_all
from bench.memory import DirectPoller
from bench.overhead import fresh_state, write_config
from watchdog import logs
from watchdog.client import SmartDocumentorClient
from watchdog.clock import FakeClock, SystemClock
from watchdog.cycle import Watcher
from watchdog.models import Observed, TaskRef
from watchdog.report import run_check
from watchdog.scenarios import bulk, demo_thresholds
from watchdog.settings import load_settings
from watchdog.store import Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    commands = parser.add_subparsers(dest="command", required=True)
    inproc = commands.add_parser("inproc", help="check vs the floor, no start-up")
    inproc.add_argument("--url", required=True)
    inproc.add_argument("--tasks", type=int, required=True)
    inproc.add_argument("--concurrency", type=int, default=64)
    inproc.add_argument("--repetitions", type=int, default=5)
    inproc.add_argument("--folder", type=Path, required=True)
    memory = commands.add_parser("memory", help="peak RSS of a watcher with N tasks")
    memory.add_argument("--url", help="a simulator to poll over HTTP (default: in-process)")
    memory.add_argument("--tasks", type=int, required=True)
    memory.add_argument("--cycles", type=int, default=2)
    memory.add_argument("--folder", type=Path, required=True)
    adaptive = commands.add_parser("adaptive", help="an hour of cycles on a fake clock")
    adaptive.add_argument("--tasks", type=int, required=True)
    adaptive.add_argument("--max-interval", type=float, required=True)
    adaptive.add_argument("--minutes", type=int, default=60)
    adaptive.add_argument("--extra-minutes", type=int, default=15)
    return parser


# --- inproc ----------------------------------------------------------------------------------


def inproc(url: str, tasks: int, concurrency: int, repetitions: int, folder: Path) -> Any:
    """Alternate the floor loop, the client alone and ``run_check`` in this process:
    [wall, cpu] per run."""

    config = write_config(folder, url, tasks, concurrency, "inproc.toml")
    log = (folder / "inproc.log").open("w", encoding="utf-8")
    logs.configure("info", "json", stream=log)
    ids = range(1, tasks + 1)

    def floor() -> list[float]:
        wall, cpu = time.perf_counter(), time.process_time()
        ok = asyncio.run(fetch_all(url, TOKEN, ids, concurrency))
        if ok != tasks:
            raise RuntimeError(f"the floor got {ok} of {tasks} answers")
        return [time.perf_counter() - wall, time.process_time() - cpu]

    def check() -> list[float]:
        fresh_state(folder)
        out = io.StringIO()
        wall, cpu = time.perf_counter(), time.process_time()
        settings = load_settings(config, secrets_dir=folder / "secrets")
        code = asyncio.run(run_check(settings, fmt="json", out=out))
        sample = [time.perf_counter() - wall, time.process_time() - cpu]
        if code not in (0, 1) or json.loads(out.getvalue())["polled"] != tasks:
            raise RuntimeError(f"run_check exited {code} or did not poll every task")
        return sample

    def client() -> list[float]:
        """The watchdog's client alone: every ID polled as a cycle polls, nothing else."""
        settings = load_settings(config, secrets_dir=folder / "secrets")
        refs = [TaskRef.by_id(i) for i in ids]

        async def poll_all() -> int:
            work = iter(refs)
            observed = 0

            async def worker() -> None:
                nonlocal observed
                for ref in work:
                    result = await api.poll(ref)  # not inside the +=: that would lose counts
                    observed += isinstance(result, Observed)

            async with SmartDocumentorClient(settings.api) as api, asyncio.TaskGroup() as group:
                for n in range(concurrency):
                    group.create_task(worker(), name=f"poll-worker-{n}")
            return observed

        wall, cpu = time.perf_counter(), time.process_time()
        ok = asyncio.run(poll_all())
        if ok != tasks:
            raise RuntimeError(f"the client observed {ok} of {tasks} tasks")
        return [time.perf_counter() - wall, time.process_time() - cpu]

    runs = [("floor", floor), ("client", client), ("check", check)]
    for _, run in runs:  # warm-up: first connections, caches
        run()
    result: dict[str, list[list[float]]] = {name: [] for name, _ in runs}
    for rep in range(repetitions):
        shift = rep % len(runs)
        for name, run in runs[shift:] + runs[:shift]:
            result[name].append(run())
    log.close()
    return result


# --- memory ----------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), KiB.

    ``VmHWM`` is the peak resident set of this program; ``ru_maxrss`` is not, as Linux carries
    it over from the parent across fork and exec (a big parent would hide the child's peak).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if field == "VmHWM" else 0


#: seconds of the bulk scenarios' timeline before each in-process cycle: by the first, most
#: tasks are done and the stuck ones fire (demo thresholds), as in a fleet that runs a while
DIRECT_STEP = 30.0


def memory(url: str | None, tasks: int, cycles: int, folder: Path) -> Any:
    """Peak RSS of a watcher (store, history and alerts) over ``tasks`` tasks: polling the
    simulator over HTTP with the real client (``url``), or in-process (``DirectPoller``) on a
    fake clock."""

    log = (folder / f"memory-{tasks}.log").open("w", encoding="utf-8")
    logs.configure("info", "json", stream=log)
    baseline = _status_kib("VmHWM")
    started = time.perf_counter()
    settings = load_settings(
        None,
        use_default_secrets_dir=False,
        overrides={
            "api": {"base_url": url or "http://127.0.0.1:9", "token": TOKEN, "concurrency": 64},
            "tasks": {"ids": list(range(1, tasks + 1))},
            # demo thresholds: the bulk scenarios' stuck tasks fire within seconds
            "rules": dict(demo_thresholds(1.0)),
            "state": {"path": str(folder / f"memory-{tasks}.db")},
        },
    )
    store = Store(settings.state.path)
    store.open()
    clock = FakeClock() if url is None else SystemClock()

    async def cycles_with(poller: Any) -> tuple[Watcher, int]:
        watcher = Watcher(settings, poller, clock, store=store)
        watcher.set_tasks(TaskRef.by_id(i) for i in settings.tasks.ids)
        polled = 0
        for _ in range(cycles):
            if isinstance(clock, FakeClock):
                clock.advance(DIRECT_STEP)
            polled += (await watcher.run_cycle()).polled
        return watcher, polled

    async def build() -> tuple[Watcher, int]:
        if url is None:
            return await cycles_with(DirectPoller(bulk(tasks, seed=SEED), clock))
        async with SmartDocumentorClient(settings.api) as client:
            return await cycles_with(client)

    watcher, polled = asyncio.run(build())  # the watcher (and all its state) stays alive
    seconds = time.perf_counter() - started
    gc.collect()
    peak = _status_kib("VmHWM")
    store.close()
    log.close()
    return {
        "tasks": tasks,
        "transport": "http" if url else "in-process",
        "baseline_kib": baseline,
        "peak_kib": peak,
        "rss_after_kib": _status_kib("VmRSS"),
        "polled": polled,
        "done": sum(1 for s in watcher.tasks.values() if s.finished),
        "firing": sum(1 for s in watcher.tasks.values() if s.firing()),
        "histories": sum(1 for s in watcher.tasks.values() if s.history is not None),
        "seconds": seconds,
    }


# --- adaptive --------------------------------------------------------------------------------


def adaptive(tasks: int, max_interval: float, minutes: int, extra_minutes: int) -> Any:

    outcome = run_simulation(
        tasks,
        max_interval=max_interval,
        seed=SEED,
        minutes=minutes,
        extra_minutes=extra_minutes,
    )
    return outcome.to_json()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: Any
    if args.command == "inproc":
        result = inproc(args.url, args.tasks, args.concurrency, args.repetitions, args.folder)
    elif args.command == "memory":
        result = memory(args.url, args.tasks, args.cycles, args.folder)
    else:
        result = adaptive(args.tasks, args.max_interval, args.minutes, args.extra_minutes)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
