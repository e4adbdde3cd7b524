"""Shared fixtures: captured structured logs, settings built from arguments, the simulator."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from watchdog import logs
from watchdog.settings import Settings, load_settings
from watchdog.simulator import Simulator

pytest_plugins = ("tests.secretscan",)  # session-wide scan for leaked fake secrets (issue 5)

TOKEN = "test-token-7f3a9c"  # scanned for in captured output: it must never be logged


class LogCapture:
    """The JSON lines the code under test wrote, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stream.getvalue().splitlines() if line.strip()]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    def clear(self) -> None:
        self.stream.seek(0)
        self.stream.truncate()


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    """Route every log line (structlog and stdlib) into a buffer as JSON."""
    capture = LogCapture()
    logs.configure("debug", "json", stream=capture.stream)
    yield capture
    logs.configure("info", "json", stream=io.StringIO())


def make_settings(base_url: str = "http://127.0.0.1:9", **sections: dict[str, Any]) -> Settings:
    """Settings from arguments only (never the process environment or /run/secrets)."""
    api: dict[str, Any] = {"base_url": base_url, "token": TOKEN, "retry_backoff": 0.01}
    api.update(sections.pop("api", {}))
    if "client_id" in api:
        api.pop("token", None)
    return load_settings(None, use_default_secrets_dir=False, overrides={"api": api, **sections})


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No WATCHDOG_* variable of the developer's shell reaches a test; state goes to tmp."""
    for name in list(os.environ):
        if name.upper().startswith("WATCHDOG_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))


SimulatorFactory = Callable[..., "Any"]


@pytest.fixture
async def start_simulator() -> AsyncIterator[Callable[..., Any]]:
    """Start simulators on 127.0.0.1 (free ports); all are stopped after the test."""
    started: list[Simulator] = []

    async def start(*args: Any, **kwargs: Any) -> Simulator:
        kwargs.setdefault("token", TOKEN)
        sim = Simulator(*args, **kwargs)
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()
