"""Restarts of the real daemon process on the same state file: SIGKILL and SIGTERM in the
middle of deliveries lose nothing, repeat nothing recorded as delivered, and keep identities."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import TOKEN
from tests.helpers import free_port
from watchdog.scenarios import stuck_in_queue
from watchdog.simulator import Simulator

SCRIPT = str(Path(sys.executable).parent / "sd-watchdog")


class Receiver:
    """A webhook receiver on a fixed port that can be up or down, failing or healthy."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.status = 200
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.headers["X-Watchdog-Delivery"], body))
        return web.Response(status=self.status)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def alerts(self, status: int | None = None) -> list[dict[str, Any]]:
        return [a for _, body in self.requests for a in body["alerts"]]


def write_config(tmp_path: Path, sim: Simulator, receiver: Receiver, ids: list[int]) -> Path:
    config = tmp_path / "watchdog.toml"
    config.write_text(
        f'[api]\nbase_url = "{sim.base_url}"\ntoken = "{TOKEN}"\nretry_backoff = 0.01\n'
        f"[tasks]\nids = {ids}\n"
        '[poll]\ninterval = "0.5s"\nshutdown_timeout = "1s"\n'
        '[rules]\nqueued_max = "0.001s"\nno_progress = 0\n'
        '[alerts]\nretry_initial = "0.1s"\ntimeout = "1s"\n'
        f'[[alerts.webhooks]]\nurl = "{receiver.url}"\n'
        f'[state]\npath = "{tmp_path / "state.db"}"\n'
        '[server]\nlisten = ""\n',
        encoding="utf-8",
    )
    return config


class Daemon:
    """`sd-watchdog run` as a child process; its JSON log lines are collected as they come."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.events: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
        self.proc = await asyncio.create_subprocess_exec(
            SCRIPT, "run", "--config", str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read(), name="daemon-log-reader")

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Poll the collected log (bounded): the reader appends lines as they come."""
        async with asyncio.timeout(20):
            while not predicate():  # noqa: ASYNC110 (polling another task's list)
                await asyncio.sleep(0.05)

    async def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 15)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code


async def test_sigkill_mid_delivery_loses_nothing_and_keeps_the_delivery_id(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """Killed while a receiver fails, the daemon resumes the same deliveries after restart."""
    sim: Simulator = await start_simulator([stuck_in_queue(i, scale=600) for i in (1, 2)])
    receiver = Receiver(free_port())
    receiver.status = 503
    await receiver.up()
    try:
        config = write_config(tmp_path, sim, receiver, [1, 2])
        first = Daemon(config)
        await first.start()
        await first.until(lambda: len(receiver.requests) >= 2)
        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        stuck_before = first.named("task.stuck")
        assert len(stuck_before) == 2
        ids_before = {d for d, _ in receiver.requests}
        assert len(ids_before) == 1  # one delivery for the cycle, retried

        receiver.status = 200
        second = Daemon(config)
        await second.start()
        await second.until(lambda: bool(second.named("alert.delivered")))
        await second.until(lambda: len(second.named("cycle.completed")) >= 2)
        assert await second.stop(signal.SIGTERM) == 0
    finally:
        await receiver.down()
    ids = [d for d, _ in receiver.requests]
    assert set(ids) == ids_before  # every retry, before and after the kill, the same id
    delivered = [body for d, body in receiver.requests][-1]
    assert sorted(a["task_id"] for a in delivered["alerts"]) == [1, 2]
    # the same alerts after the restart: no new task.stuck, same starts_at
    assert second.named("task.stuck") == []
    starts = {a["fingerprint"]: a["starts_at"] for a in delivered["alerts"]}
    assert starts == {e["fingerprint"]: e["starts_at"] for e in stuck_before}


async def test_sigterm_with_receiver_down_exits_in_time_and_delivers_after_restart(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """SIGTERM with a dead receiver exits 0 within the deadline; the alert waits in the outbox."""
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=600)])
    receiver = Receiver(free_port())  # not listening yet: connection refused
    config = write_config(tmp_path, sim, receiver, [1])
    first = Daemon(config)
    await first.start()
    await first.until(lambda: bool(first.named("alert.delivery_failed")))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await first.stop(signal.SIGTERM) == 0
    assert loop.time() - started < 10
    stopped = first.named("watchdog.stopped")[-1]
    assert stopped["reason"] == "deadline"
    assert stopped["undelivered"] == 1

    await receiver.up()
    try:
        second = Daemon(config)
        await second.start()
        await second.until(lambda: bool(second.named("alert.delivered")))
        assert await second.stop(signal.SIGTERM) == 0
    finally:
        await receiver.down()
    assert len(receiver.requests) == 1
    assert receiver.requests[0][1]["alerts"][0]["task_id"] == 1
    assert second.named("task.stuck") == []


async def test_resolved_notification_survives_a_restart(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """A task dropped from the config while the daemon was down resolves (unwatched) on start."""
    sim: Simulator = await start_simulator([stuck_in_queue(i, scale=600) for i in (1, 2)])
    receiver = Receiver(free_port())
    await receiver.up()
    try:
        config = write_config(tmp_path, sim, receiver, [1, 2])
        first = Daemon(config)
        await first.start()
        await first.until(lambda: bool(first.named("alert.delivered")))
        assert await first.stop(signal.SIGTERM) == 0

        config = write_config(tmp_path, sim, receiver, [1])
        second = Daemon(config)
        await second.start()
        await second.until(lambda: len(second.named("alert.delivered")) >= 1)
        assert await second.stop(signal.SIGTERM) == 0
    finally:
        await receiver.down()
    recovered = second.named("task.recovered")
    assert [(e["task_id"], e["reason"]) for e in recovered] == [(2, "unwatched")]
    last = receiver.requests[-1][1]
    assert last["status"] == "resolved"
    assert [a["task_id"] for a in last["alerts"]] == [2]
    assert len(receiver.requests) == 2  # nothing delivered before is sent again
