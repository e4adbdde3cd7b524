"""Start-up: ``sd-watchdog validate`` wall time against ``python -c "import aiohttp"``.

Alternating runs, median wall time. Two more processes are timed alongside for context: the
bare interpreter, and an import of only what ``validate`` executes (settings, tasks, logs) —
what validate would cost if the command line imported nothing else. ``python -X importtime``
of ``watchdog.cli`` names the heaviest imports.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    PYTHON,
    SD_WATCHDOG,
    TOKEN,
    Figure,
    Section,
    X,
    alternate,
    clean_env,
    run_child,
    scratch,
    wall_median,
)

#: the modules ``validate`` runs code from (cli.run_cli → _load, masked, json)
VALIDATE_NEEDS = (
    "import argparse, json, watchdog.errors, watchdog.logs, watchdog.settings, watchdog.tasks"
)


@dataclass(frozen=True, slots=True)
class Sizes:
    repetitions: int = 7


def import_times(statement: str) -> dict[str, float]:
    """Cumulative import time (s) per module of ``python -X importtime -c statement``."""
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", statement],
        capture_output=True, text=True, env=clean_env(), check=True, timeout=60,
    )  # fmt: skip
    times: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            times.setdefault(match.group(3), int(match.group(1)) / 1e6)
    return times


def heaviest(times: dict[str, float], names: list[str]) -> list[tuple[str, float]]:
    return sorted(((n, times[n]) for n in names if n in times), key=lambda p: -p[1])


def run(sizes: Sizes) -> Section:
    section = Section("startup", "Start-up")
    started = time.perf_counter()
    with scratch("startup") as folder:
        config = folder / "watchdog.toml"
        config.write_text(
            f'[api]\nbase_url = "http://127.0.0.1:9"\ntoken = "{TOKEN}"\n\n'
            f'[tasks]\nids = [1, 2, 3]\n\n[state]\npath = "{folder / "state.db"}"\n',
            encoding="utf-8",
        )
        secrets = folder / "secrets"
        secrets.mkdir()
        samples = alternate(
            {
                "validate": lambda: run_child(_validate(config, secrets)),
                "aiohttp": lambda: run_child([PYTHON, "-c", "import aiohttp"]),
                "needs": lambda: run_child([PYTHON, "-c", VALIDATE_NEEDS]),
                "bare": lambda: run_child([PYTHON, "-c", "pass"]),
            },
            sizes.repetitions,
        )
    validate, aiohttp = wall_median(samples["validate"]), wall_median(samples["aiohttp"])
    needs, bare = wall_median(samples["needs"]), wall_median(samples["bare"])
    section.add(
        Figure(
            "sd-watchdog validate / python -c 'import aiohttp', wall",
            validate / aiohttp,
            X,
            2.0,
            detail=f"validate {validate * 1000:.0f} ms, import aiohttp {aiohttp * 1000:.0f} ms "
            f"(median of {sizes.repetitions} alternating runs each)",
        )
    )
    section.add(
        Figure(
            "Importing only what validate runs / import aiohttp",
            needs / aiohttp,
            X,
            detail=f"{needs * 1000:.0f} ms: settings, tasks, logs (the bare interpreter: "
            f"{bare * 1000:.0f} ms)",
        )
    )
    times = import_times("import watchdog.cli")
    watched = [
        "watchdog.app", "watchdog.client", "watchdog.server", "watchdog.cycle",
        "watchdog.notify", "watchdog.metrics", "watchdog.settings", "watchdog.logs",
        "aiohttp", "aiohttp.web", "apscheduler.schedulers.asyncio", "prometheus_client",
        "pydantic", "pydantic_settings", "structlog",
    ]  # fmt: skip
    cli_total = times.get("watchdog.cli", 0.0)
    top = ", ".join(f"{name} {t * 1000:.0f} ms" for name, t in heaviest(times, watched))
    section.note(
        f"`import watchdog.cli` took {cli_total * 1000:.0f} ms under -X importtime "
        f"(cumulative, each module counted where first imported): {top}."
    )
    app = times.get("watchdog.app", 0.0)
    if app:
        section.note(
            f"validate needs none of what `watchdog.app` brings ({app * 1000:.0f} ms of the "
            "import above: the HTTP client and server, APScheduler, the metrics): cli.py "
            "imports `App` at module level. Importing it inside the function that runs the "
            "daemon (as `run_check`, `run_demo` and `check_health` already are) leaves "
            "validate with the cost of the line above."
        )
    section.seconds = time.perf_counter() - started
    return section


def _validate(config: Path, secrets: Path) -> list[str]:
    return [SD_WATCHDOG, "validate", "--config", str(config), "--secrets-dir", str(secrets)]
