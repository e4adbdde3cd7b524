"""The running daemon in-process: health, readiness, /tasks, the heartbeat, reloads, and a
taken port; real HTTP on 127.0.0.1 throughout."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import TOKEN, LogCapture, make_settings
from tests.helpers import free_port
from watchdog.app import App
from watchdog.errors import StartupError
from watchdog.scenarios import stuck_in_queue
from watchdog.settings import Settings
from watchdog.simulator import Simulator


@asynccontextmanager
async def running(app: App) -> AsyncIterator[asyncio.Task[int]]:
    task = asyncio.create_task(app.serve(install_signals=False), name="app-under-test")
    try:
        yield task
    finally:
        if not task.done():
            app.handle_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 15)


async def until(predicate: Callable[[], bool]) -> None:
    """Poll a condition another task changes, at most 10 s."""
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110 (the condition lives in another task)
            await asyncio.sleep(0.02)


def settings_for(sim: Simulator, tmp_path: Path, port: int, **sections: Any) -> Settings:
    sections.setdefault("tasks", {"ids": [1, 2]})
    sections.setdefault("rules", {"queued_max": 0.001})
    poll = {"interval": 0.3, "shutdown_timeout": 1, **sections.pop("poll", {})}
    return make_settings(
        sim.base_url,
        server={"listen": f"127.0.0.1:{port}", **sections.pop("server", {})},
        poll=poll,
        state={"path": str(tmp_path / "state.db")},
        **sections,
    )


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_health_ready_metrics_and_tasks(
    tmp_path: Path, start_simulator: Callable[..., Any], captured_logs: LogCapture
) -> None:
    """/healthz is 200 while cycles run, /readyz after the first cycle; /tasks shows state."""
    sim: Simulator = await start_simulator([stuck_in_queue(i, scale=600) for i in (1, 2)])
    port = free_port()
    app = App(settings_for(sim, tmp_path, port))
    base = f"http://127.0.0.1:{port}"
    async with running(app), aiohttp.ClientSession() as session:
        await until(lambda: bool(captured_logs.named("watchdog.started")))
        assert captured_logs.named("watchdog.started")[0]["server"] == f"127.0.0.1:{port}"
        await until(lambda: app.cycles_completed >= 1)
        status, body = await get(session, base + "/healthz")
        assert (status, body["status"]) == (200, "ok")
        status, body = await get(session, base + "/readyz")
        assert (status, body["status"]) == (200, "ready")
        status, text = await get(session, base + "/metrics")
        assert status == 200
        assert "sd_watchdog_cycles_total" in text
        assert TOKEN not in text
        status, body = await get(session, base + "/tasks")
        assert status == 200
        tasks = {t["task_id"]: t for t in body["tasks"]}
        assert set(tasks) == {1, 2}
        assert tasks[1]["phase"] == "queued"
        assert tasks[1]["alerts"][0]["rule"] == "queued_too_long"
        assert tasks[1]["status"]["taskId"] == 1
        assert TOKEN not in str(body)
        status, _ = await get(session, base + "/nope")
        assert status == 404


async def test_probes_stay_green_while_the_saas_is_down(
    tmp_path: Path, start_simulator: Callable[..., Any], captured_logs: LogCapture
) -> None:
    """An API outage fires api_unavailable but neither liveness nor readiness fail."""
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=600)])
    sim.set_faults(down=True)
    port = free_port()
    app = App(settings_for(sim, tmp_path, port, tasks={"ids": [1]}, api={"retries": 0}))
    base = f"http://127.0.0.1:{port}"
    async with running(app), aiohttp.ClientSession() as session:
        await until(lambda: bool(captured_logs.named("api.unavailable")))
        assert (await get(session, base + "/healthz"))[0] == 200
        assert (await get(session, base + "/readyz"))[0] == 200
        _, text = await get(session, base + "/metrics")
        assert "sd_watchdog_api_up 0.0" in text


async def test_readyz_is_503_before_the_first_cycle(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """Until the first cycle completes the daemon is alive but not ready."""
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=600)])
    sim.set_faults(latency=1.0)  # the first cycle takes a second
    port = free_port()
    app = App(settings_for(sim, tmp_path, port, tasks={"ids": [1]}, poll={"interval": 5}))
    base = f"http://127.0.0.1:{port}"
    async with running(app), aiohttp.ClientSession() as session:
        await until(lambda: app.server is not None and app.server.address is not None)
        status, body = await get(session, base + "/readyz")
        assert (status, body["status"]) == (503, "starting")
        assert (await get(session, base + "/healthz"))[0] == 200
        await until(lambda: app.cycles_completed >= 1)
        assert (await get(session, base + "/readyz"))[0] == 200


async def test_tasks_hidden_on_public_binds_unless_exposed(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """A wildcard bind serves probes and metrics, but /tasks only with expose_tasks."""
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=600)])
    for expose, expected in ((False, 404), (True, 200)):
        port = free_port()
        settings = settings_for(
            sim, tmp_path, port, server={"listen": f"0.0.0.0:{port}", "expose_tasks": expose}
        )
        app = App(settings)
        async with running(app), aiohttp.ClientSession() as session:
            await until(lambda app=app: app.cycles_completed >= 1)  # type: ignore[misc]
            assert (await get(session, f"http://127.0.0.1:{port}/tasks"))[0] == expected
            assert (await get(session, f"http://127.0.0.1:{port}/healthz"))[0] == 200


async def test_taken_port_is_a_startup_error(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """A port already in use stops start-up with StartupError (exit 3 in the CLI)."""
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=600)])
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        app = App(settings_for(sim, tmp_path, port))
        with pytest.raises(StartupError, match="listen"):
            await app.serve(install_signals=False)


async def test_heartbeat_after_every_cycle(
    tmp_path: Path, start_simulator: Callable[..., Any], aiohttp_server: Any
) -> None:
    """The dead-man's-switch URL is hit after each completed cycle."""
    hits: list[str] = []

    async def ping(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="OK")

    hook = web.Application()
    hook.router.add_get("/ping/{uuid}", ping)
    server = await aiohttp_server(hook, access_log=None)
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=600)])
    url = f"http://127.0.0.1:{server.port}/ping/abc"
    app = App(settings_for(sim, tmp_path, free_port(), alerts={"heartbeat": {"url": url}}))
    async with running(app):
        await until(lambda: app.cycles_completed >= 3 and len(hits) >= 3)
    assert set(hits) == {"/ping/abc"}


async def test_sighup_reload_applies_tasks_and_rejects_bad_config(
    tmp_path: Path, start_simulator: Callable[..., Any], captured_logs: LogCapture
) -> None:
    """SIGHUP applies a new watched set keeping state; a bad config is refused, old one kept."""
    sim: Simulator = await start_simulator([stuck_in_queue(i, scale=600) for i in (1, 2, 3)])
    port = free_port()
    first = settings_for(sim, tmp_path, port, tasks={"ids": [1, 2]})
    candidates: list[Settings | Exception] = []

    def reload() -> Settings:
        candidate = candidates.pop(0)
        if isinstance(candidate, Exception):
            raise candidate
        return candidate

    app = App(first, reload=reload)
    async with running(app):
        await until(lambda: len(captured_logs.named("task.stuck")) == 2)
        candidates.append(settings_for(sim, tmp_path, port, tasks={"ids": [2, 3]}))
        app.handle_signal(signal.SIGHUP)
        await until(lambda: bool(captured_logs.named("config.reloaded")))
        await until(lambda: len(captured_logs.named("task.stuck")) == 3)
        from watchdog.errors import ConfigError

        candidates.append(ConfigError([("poll.interval", "invalid duration")]))
        app.handle_signal(signal.SIGHUP)
        await until(lambda: bool(captured_logs.named("config.rejected")))
        assert app.watcher is not None
        assert set(app.watcher.tasks) == {"id:2", "id:3"}
    reloaded = captured_logs.named("config.reloaded")[0]
    assert (reloaded["added"], reloaded["removed"], reloaded["trigger"]) == (1, 1, "signal")
    recovered = captured_logs.named("task.recovered")
    assert [(e["task_id"], e["reason"]) for e in recovered] == [(1, "unwatched")]
    stuck = [e["task_id"] for e in captured_logs.named("task.stuck")]
    assert sorted(stuck) == [1, 2, 3]  # task 2 kept its alert: no second task.stuck
    rejected = captured_logs.named("config.rejected")[0]
    assert rejected["problems"] == ["poll.interval: invalid duration"]


async def test_tasks_file_change_is_picked_up_without_restart(
    tmp_path: Path, start_simulator: Callable[..., Any], captured_logs: LogCapture
) -> None:
    """Editing the tasks file changes the watched set at the next cycle."""
    sim: Simulator = await start_simulator([stuck_in_queue(i, scale=600) for i in (1, 2)])
    tasks_file = tmp_path / "tasks.txt"
    tasks_file.write_text("1\n", encoding="utf-8")
    port = free_port()
    settings = settings_for(sim, tmp_path, port, tasks={"file": str(tasks_file)})
    app = App(settings, reload=lambda: settings)
    async with running(app):
        await until(lambda: app.cycles_completed >= 1)
        tasks_file.write_text("1\n2  # added later\n", encoding="utf-8")
        await until(lambda: bool(captured_logs.named("config.reloaded")))
        await until(lambda: len(captured_logs.named("task.stuck")) == 2)
        tasks_file.write_text("1\nnot-a-task\n", encoding="utf-8")
        await until(lambda: bool(captured_logs.named("config.rejected")))
        assert app.watcher is not None
        assert set(app.watcher.tasks) == {"id:1", "id:2"}
    assert captured_logs.named("config.reloaded")[0]["trigger"] == "tasks_file"
