"""The installed console script as a real subprocess: exit codes, stdout documents, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN
from tests.helpers import SCRIPT, child_env
from tests.helpers import run_script as run
from watchdog.scenarios import healthy, stuck_in_queue
from watchdog.simulator import Simulator


def write_config(
    tmp_path: Path, base_url: str, body: str = "", token: str = TOKEN, api: str = ""
) -> Path:
    path = tmp_path / "watchdog.toml"
    path.write_text(
        f'[api]\nbase_url = "{base_url}"\ntoken = "{token}"\nretry_backoff = 0.01\n{api}'
        f'[server]\nlisten = ""\n{body}',
        encoding="utf-8",
    )
    return path


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_validate_prints_masked_config(tmp_path: Path) -> None:
    """validate exits 0 and prints the effective config with the token masked."""
    config = write_config(tmp_path, "http://127.0.0.1:1", "[tasks]\nids = [1, 2]\n")
    code, out, err = await run("validate", "--config", str(config))
    assert code == 0, err
    document = json.loads(out)
    assert document["tasks"]["ids"] == [1, 2]
    assert document["api"]["token"] == "********"
    assert TOKEN not in out + err


async def test_validate_names_every_bad_key_without_traceback(tmp_path: Path) -> None:
    """A bad config exits 2 naming each key and why; no traceback, no secret."""
    config = write_config(
        tmp_path,
        "http://127.0.0.1:1",
        '[poll]\ninterval = "soon"\n[tasks]\nids = ["x"]\nbogus = 1\n',
    )
    code, out, err = await run("validate", "--config", str(config))
    assert code == 2
    assert out == ""
    for key in ("poll.interval", "tasks.ids.0", "tasks.bogus"):
        assert key in err
    assert "Traceback" not in err
    assert TOKEN not in err


async def test_env_variables_configure_and_missing_file_is_exit_2(tmp_path: Path) -> None:
    """WATCHDOG_* variables alone are a configuration; a missing --config file is exit 2."""
    env = child_env(
        WATCHDOG_API__TOKEN="env-token",
        WATCHDOG_API__BASE_URL="http://127.0.0.1:1",
        WATCHDOG_TASKS__IDS="[5]",
    )
    code, out, _ = await run("validate", env=env)
    assert code == 0
    assert json.loads(out)["tasks"]["ids"] == [5]
    code, _, err = await run("validate", "--config", str(tmp_path / "missing.toml"), env=env)
    assert code == 2
    assert "not found" in err
    env["WATCHDOG_CONFIG"] = str(tmp_path / "missing.toml")
    code, _, _ = await run("validate", env=env)
    assert code == 2


async def test_usage_errors_exit_2() -> None:
    """An unknown command or option is a usage error: exit 2."""
    assert (await run("frobnicate"))[0] == 2
    assert (await run("check", "--format", "xml"))[0] == 2
    assert (await run())[0] == 2


async def test_check_reports_stuck_tasks_as_json(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """check prints one JSON document and exits 1 when a task is stuck."""
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=60), healthy(2, scale=0.001)])
    await asyncio.sleep(0.05)  # let the healthy task finish its (tiny) script
    config = write_config(
        tmp_path, sim.base_url, "[tasks]\nids = [1, 2, 404]\n[rules]\nqueued_max = 0.001\n"
    )
    code, out, err = await run("check", "--format", "json", "--config", str(config))
    assert code == 1, err
    document = json.loads(out)
    tasks = {t["task_id"]: t for t in document["tasks"]}
    assert tasks[1]["phase"] == "queued"
    assert tasks[1]["alerts"] == ["queued_too_long"]
    assert tasks[2]["phase"] == "done"
    assert tasks[2]["alerts"] == []
    assert tasks[404]["phase"] == "not_found"
    assert document["stuck"] == 1
    assert document["failed"] == 0
    assert "error" not in document
    # logs go to stderr in check, as JSON lines
    events = {e["event"] for e in json_lines(err)}
    assert "cycle.completed" in events
    assert "task.stuck" in events


async def test_check_exit_0_when_nothing_is_stuck(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """check exits 0 with a table when no task is stuck (also with no tasks at all)."""
    sim: Simulator = await start_simulator([healthy(1, scale=60)])
    config = write_config(tmp_path, sim.base_url, "[tasks]\nids = [1]\n")
    code, out, err = await run("check", "--config", str(config))
    assert code == 0, err
    assert out.splitlines()[0].split()[:3] == ["TASK", "EXTERNAL", "ID"]
    assert "queued" in out
    empty = write_config(tmp_path, sim.base_url)
    code, out, err = await run("check", "--format", "json", "--config", str(empty))
    assert code == 0
    assert json.loads(out)["tasks"] == []
    assert "config.no_tasks" in err


async def test_check_exit_3_when_no_task_could_be_polled(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """Rejected credentials or a dead API: exit 3, and the document still has an error field."""
    sim: Simulator = await start_simulator([healthy(1, scale=60)])
    config = write_config(tmp_path, sim.base_url, "[tasks]\nids = [1]\n", token="wrong-token")
    code, out, _ = await run("check", "--format", "json", "--config", str(config))
    assert code == 3
    document = json.loads(out)
    assert "credentials" in document["error"]
    assert document["tasks"][0]["phase"] == "unknown"
    dead = write_config(tmp_path, "http://127.0.0.1:9", "[tasks]\nids = [1]\n", api="retries = 0\n")
    code, out, _ = await run("check", "--format", "json", "--config", str(dead))
    assert code == 3
    assert json.loads(out)["failed"] == 1


async def _start_daemon(config: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        SCRIPT,
        "run",
        "--config",
        str(config),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )


async def _read_until(
    proc: asyncio.subprocess.Process, event: str, seen: list[dict[str, Any]]
) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"stdout closed before {event}: {seen}")
            record: dict[str, Any] = json.loads(line)
            seen.append(record)
            if record["event"] == event:
                return record


async def _finish(proc: asyncio.subprocess.Process, seen: list[dict[str, Any]]) -> int:
    assert proc.stdout is not None
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    seen.extend(json_lines(out.decode()))
    assert proc.returncode is not None
    return proc.returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_run_stops_cleanly_on_signal(
    tmp_path: Path, start_simulator: Callable[..., Any], sig: signal.Signals
) -> None:
    """run polls at start-up and on schedule; SIGTERM/SIGINT → watchdog.stopped, exit 0."""
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=60)])
    config = write_config(tmp_path, sim.base_url, '[tasks]\nids = [1]\n[poll]\ninterval = "0.3s"\n')
    proc = await _start_daemon(config)
    seen: list[dict[str, Any]] = []
    started = await _read_until(proc, "watchdog.started", seen)
    assert started["tasks"] == 1
    await _read_until(proc, "cycle.completed", seen)
    await _read_until(proc, "cycle.completed", seen)
    proc.send_signal(sig)
    assert await _finish(proc, seen) == 0
    stopped = [e for e in seen if e["event"] == "watchdog.stopped"]
    assert stopped[-1]["reason"] == "signal"
    for event in seen:
        assert {"event", "level", "timestamp", "service", "version"} <= set(event)
        assert event["timestamp"].endswith("Z")
    assert not any(TOKEN in json.dumps(e) for e in seen)


async def test_drain_deadline_and_second_sigint(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """A cycle stuck on a hung API is cut at shutdown_timeout; a second SIGINT exits 130."""
    sim: Simulator = await start_simulator([stuck_in_queue(1, scale=60)])
    sim.set_faults(hang=True)
    body = '[tasks]\nids = [1]\n[poll]\nshutdown_timeout = "0.5s"\n'
    config = write_config(tmp_path, sim.base_url, body, api='timeout = "60s"\n')
    proc = await _start_daemon(config)
    seen: list[dict[str, Any]] = []
    await _read_until(proc, "watchdog.started", seen)
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert await _finish(proc, seen) == 0
    assert seen[-1]["event"] == "watchdog.stopped"
    assert seen[-1]["reason"] == "deadline"

    slow = body.replace('"0.5s"', '"30s"')
    config = write_config(tmp_path, sim.base_url, slow, api='timeout = "60s"\n')
    proc = await _start_daemon(config)
    seen = []
    await _read_until(proc, "watchdog.started", seen)
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    assert await _finish(proc, seen) == 130


async def test_python_dash_m_and_health_without_server(tmp_path: Path) -> None:
    """python -m watchdog is the same program; health exits 1 when the server is disabled."""
    config = write_config(tmp_path, "http://127.0.0.1:1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watchdog", "validate", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert json.loads(out)["api"]["base_url"] == "http://127.0.0.1:1"
    code, _, err = await run("health", "--config", str(config))
    assert code == 1
    assert "disabled" in err


def test_secrets_dir_supplies_the_token(tmp_path: Path) -> None:
    """--secrets-dir files named like the variables provide secrets (validate sees them)."""
    import subprocess

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "watchdog_api__token").write_text("file-token\n", encoding="utf-8")
    config = tmp_path / "c.toml"
    config.write_text('[api]\nbase_url = "http://127.0.0.1:1"\n', encoding="utf-8")
    result = subprocess.run(
        [SCRIPT, "validate", "--config", str(config), "--secrets-dir", str(secrets)],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "file-token" not in result.stdout


async def test_check_keeps_state_across_runs_and_notify_sends_the_backlog(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """Cron-style checks share the store: no repeat task.stuck, and --notify sends what
    earlier runs recorded but did not deliver."""
    from aiohttp import web

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        sim: Simulator = await start_simulator([stuck_in_queue(1, scale=600)])
        body = (
            "[tasks]\nids = [1, 404]\n[rules]\nqueued_max = 0.001\n"
            f'[[alerts.webhooks]]\nurl = "http://127.0.0.1:{port}/hook"\n'
        )
        config = write_config(tmp_path, sim.base_url, body)
        code, _, err = await run("check", "--format", "json", "--config", str(config))
        assert code == 1
        assert '"task.stuck"' in err
        assert received == []  # no --notify: recorded, not sent
        code, out, err = await run("check", "--format", "json", "--config", str(config))
        assert code == 1
        stuck = [e["rule"] for e in json_lines(err) if e["event"] == "task.stuck"]
        assert stuck == ["task_not_found"]  # queued_too_long is the same alert, not a new one
        tasks = {t["task_id"]: t for t in json.loads(out)["tasks"]}
        assert tasks[404]["alerts"] == ["task_not_found"]  # two 404s across two runs
        code, _, err = await run("check", "--format", "json", "--notify", "--config", str(config))
        assert code == 1
        assert '"alert.delivered"' in err
    finally:
        await runner.cleanup()
    rules = sorted(a["rule"] for payload in received for a in payload["alerts"])
    assert rules == ["queued_too_long", "task_not_found"]


async def test_run_exit_3_when_it_cannot_start(
    tmp_path: Path, start_simulator: Callable[..., Any]
) -> None:
    """A taken port or an unusable state file stops start-up with exit 3 and a clear message."""
    import socket

    sim: Simulator = await start_simulator([healthy(1, scale=60)])
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        config = write_config(tmp_path, sim.base_url, "[tasks]\nids = [1]\n")
        config.write_text(
            config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"'),
            encoding="utf-8",
        )
        code, _, err = await run("run", "--config", str(config))
    assert code == 3
    assert "listen" in err
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x", encoding="utf-8")
    config = write_config(
        tmp_path, sim.base_url, f'[tasks]\nids = [1]\n[state]\npath = "{blocked}/s.db"\n'
    )
    for command in ("run", "check"):
        code, _, err = await run(command, "--config", str(config))
        assert code == 3, err
        assert "state" in err
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    config = write_config(
        tmp_path, sim.base_url, f'[tasks]\nids = [1]\n[state]\npath = "{corrupt}"\n'
    )
    code, _, err = await run("run", "--config", str(config))
    assert code == 3
    assert "corrupt" in err
    assert corrupt.read_bytes() == b"this is not sqlite" * 100  # never a silent reset
