"""`sd-watchdog demo` as a user runs it: every rule fires, some recover, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from watchdog.models import Rule

SCRIPT = str(Path(sys.executable).parent / "sd-watchdog")


def test_demo_fires_every_rule_and_exits_0() -> None:
    """A shortened demo shows each rule of the contract firing and some resolving."""
    result = subprocess.run(
        [SCRIPT, "demo", "--duration", "15", "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = {
        line.split()[0]: (int(line.split()[1]), int(line.split()[2]))
        for line in result.stderr.splitlines()
        if line.strip() and line.split()[0] in {r.value for r in Rule}
    }
    assert set(table) == {r.value for r in Rule}
    assert all(fired >= 1 for fired, _ in table.values())
    assert sum(resolved for _, resolved in table.values()) >= 3
    assert '"event": "task.stuck"' in result.stdout
    assert '"event": "watchdog.stopped"' in result.stdout
