"""Shared test plumbing: free ports, a real service binary run until ready, and the
store/notifier/watcher wiring that app.py does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from watchdog.client import SmartDocumentorClient
from watchdog.clock import SystemClock
from watchdog.cycle import Watcher
from watchdog.logs import get_logger
from watchdog.models import ApiErrorInfo, TaskRef
from watchdog.notify import Notifier
from watchdog.settings import Settings
from watchdog.store import Store

#: the installed console script, run as a real subprocess by the CLI-level tests
SCRIPT = str(Path(sys.executable).parent / "sd-watchdog")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child sd-watchdog: none of the developer's WATCHDOG_* variables,
    credentials folder or proxies (tests talk to loopback only), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WATCHDOG_")}
    for name in ("CREDENTIALS_DIRECTORY", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        env.pop(name, None)
        env.pop(name.lower(), None)
    env.update(extra)
    return env


async def run_script(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``sd-watchdog ARGS`` to completion (at most 60 s): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env or child_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


_RESERVED = frozenset({9090, 9093, 9465})  # Prometheus, Alertmanager, sd-watchdog defaults


def free_port() -> int:
    """A loopback port nobody listens on right now, never one a real service may hold."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _RESERVED:
            return port


@asynccontextmanager
async def running_service(
    name: str, argv: Sequence[str], url: str, log: Path, *, ready_within: float
) -> AsyncIterator[str]:
    """Run a real server binary with output to ``log`` until ``{url}/-/ready`` answers 200;
    yield ``url``; stop it (SIGTERM, then SIGKILL after 10 s) whatever happens."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent
        )
    try:
        await _wait_ready(name, url, process, log, ready_within)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_ready(
    name: str, url: str, process: asyncio.subprocess.Process, log: Path, within: float
) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{tail(log)}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    pytest.fail(f"{name} not ready within {within} s:\n{tail(log)}")


def tail(log: Path) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])


@asynccontextmanager
async def wired(
    settings: Settings, refs: Sequence[TaskRef]
) -> AsyncIterator[tuple[Watcher, Notifier, Store]]:
    """The real store, notifier, client and watcher wired as app.py wires them (no scheduler:
    the test runs the cycles)."""
    clock = SystemClock()
    store = Store(settings.state.path)
    store.open()
    notifier = Notifier(settings, store, clock, get_logger())
    holder: list[Watcher] = []

    def report_error(info: ApiErrorInfo) -> None:
        holder[0].on_api_error(info)  # the watcher exists before the first request

    try:
        async with SmartDocumentorClient(settings.api, on_error=report_error, clock=clock) as c:
            watcher = Watcher(settings, c, clock, store=store, notifier=notifier)
            holder.append(watcher)
            watcher.restore(store.load())
            watcher.set_tasks(refs)
            await notifier.start()
            try:
                yield watcher, notifier, store
            finally:
                await notifier.close()
    finally:
        store.close()
