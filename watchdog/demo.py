"""``sd-watchdog demo``: the real daemon against the built-in simulator on loopback.

Every scenario of ``watchdog.scenarios`` runs once, timed so that every rule fires and some
recover within about a minute; near the end the simulated API goes down for a few cycles so
``api_unavailable`` fires and resolves too. No account, no network, no files left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from watchdog.alerts import Change
from watchdog.app import App
from watchdog.cycle import CycleReport
from watchdog.logs import get_logger
from watchdog.scenarios import demo_scenarios, demo_thresholds
from watchdog.settings import Settings, load_settings
from watchdog.simulator import Simulator

DEMO_TOKEN = "demo-token"  # noqa: S105 (the simulator's own, not a secret)


def demo_settings(base_url: str, state_dir: Path, scale: float) -> Settings:
    scenarios = demo_scenarios(scale)
    thresholds: dict[str, Any] = dict(demo_thresholds(scale))
    return load_settings(
        None,
        use_default_secrets_dir=False,
        overrides={
            "api": {
                "base_url": base_url,
                "token": DEMO_TOKEN,
                "timeout": max(1.0, scale / 2),
                "retries": 1,
                "retry_backoff": 0.1,
            },
            "tasks": {
                "ids": [s.task_id for s in scenarios if not s.by_external],
                "external_ids": [s.external_id for s in scenarios if s.by_external],
            },
            "poll": {"interval": scale, "done_interval": 0, "shutdown_timeout": 2},
            "rules": thresholds,
            "alerts": {"flap_threshold": 0},
            "server": {"listen": ""},
            "state": {"path": str(state_dir / "demo.db")},
        },
    )


async def run_demo(duration: float = 60.0) -> int:
    """Run the show for ``duration`` seconds (Ctrl-C ends it early); always exit 0."""
    log = get_logger(demo=True)
    scale = max(0.2, duration / 30.0)  # the scenarios are about 30 units long
    simulator = Simulator(demo_scenarios(scale), token=DEMO_TOKEN)
    base_url = await simulator.start()
    fired: Counter[str] = Counter()
    resolved: Counter[str] = Counter()

    def tally(report: CycleReport) -> None:
        for change in report.transitions:
            if change.change is Change.FIRED:
                fired[change.alert.rule.value] += 1
            elif change.change is Change.RESOLVED:
                resolved[change.alert.rule.value] += 1

    try:
        with tempfile.TemporaryDirectory(prefix="sd-watchdog-demo-") as state_dir:
            settings = demo_settings(base_url, Path(state_dir), scale)
            app = App(settings, log=log, on_cycle=tally)
            serve = asyncio.create_task(app.serve(), name="demo-daemon")
            script = asyncio.create_task(
                _script(simulator, app, duration, scale), name="demo-script"
            )
            try:
                await serve
            finally:
                script.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await script
    finally:
        await simulator.stop()
    _summary(fired, resolved)
    return 0


async def _script(simulator: Simulator, app: App, duration: float, scale: float) -> None:
    """The show's timeline: an API outage late in the run, then a clean stop."""
    outage_at = duration * 0.72
    await asyncio.sleep(outage_at)
    simulator.set_faults(down=True)
    await asyncio.sleep(3.5 * scale)  # at least two failed cycles: api_unavailable fires
    simulator.clear_faults()
    await asyncio.sleep(max(0.0, duration - outage_at - 3.5 * scale))
    app.handle_signal(signal.SIGTERM)


def _summary(fired: Counter[str], resolved: Counter[str]) -> None:
    lines = ["", "sd-watchdog demo: what happened", ""]
    lines.append(f"  {'rule':<22} {'fired':>5} {'resolved':>8}")
    for rule in sorted(set(fired) | set(resolved)):
        lines.append(f"  {rule:<22} {fired[rule]:>5} {resolved[rule]:>8}")
    lines.append("")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
