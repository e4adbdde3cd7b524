"""/metrics of the running daemon: scraped by a real Prometheus and read back through its query
API, and parsed directly (every metric family issue 4 names, true to an outage, a recovery and
alert deliveries, and free of secrets).

The daemon runs in-process (``App.serve``) against the simulator; everything speaks real HTTP on
127.0.0.1 with free ports (never 9090, 9093 or 9465). The Prometheus server comes from the
Debian package ``prometheus``; without it the Prometheus test skips, except under ``CI=true``
(where ``.ci/run`` installs it), where it fails. The direct test always runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpServer

from tests.conftest import TOKEN, LogCapture, make_settings
from tests.helpers import free_port, running_service
from watchdog.app import App
from watchdog.scenarios import stuck_in_queue
from watchdog.settings import Settings
from watchdog.simulator import Simulator

READY_TIMEOUT = 30.0  # Prometheus start-up, generously
WAIT_TIMEOUT = 15.0  # any one thing we wait for (a few scrapes at 1 s)
STOP_TIMEOUT = 15.0
POLL = 0.1
JOB = "sd-watchdog"
STUCK = (21, 22, 23)  # stuck_in_queue tasks: each fires queued_too_long in its first cycle
WEBHOOK_SECRET = "hook-secret-5d2e81"  # the webhook's HMAC key: must never show in /metrics

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {job}
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""

# Issue 4's metric families, as prometheus_client's parser names them (counters without
# ``_total``): type and label names.
FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "sd_watchdog_cycles": ("counter", frozenset()),
    "sd_watchdog_cycle_duration_seconds": ("histogram", frozenset({"le"})),
    "sd_watchdog_polls": ("counter", frozenset({"outcome"})),
    "sd_watchdog_api_errors": ("counter", frozenset({"error", "endpoint"})),
    "sd_watchdog_tasks": ("gauge", frozenset({"phase"})),
    "sd_watchdog_alerts_firing": ("gauge", frozenset({"rule", "severity"})),
    "sd_watchdog_deliveries": ("counter", frozenset({"outcome"})),
    "sd_watchdog_delivery_attempts": ("counter", frozenset({"outcome"})),
    "sd_watchdog_outbox_depth": ("gauge", frozenset()),
    "sd_watchdog_api_up": ("gauge", frozenset()),
    "sd_watchdog_last_successful_cycle_timestamp_seconds": ("gauge", frozenset()),
}
PHASES = ("queued", "processing", "review", "done", "failed")

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], within: float = WAIT_TIMEOUT) -> T:
    """Await ``check`` until it returns something truthy, at most ``within`` seconds; its last
    result (falsy when time ran out)."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(POLL)


# --- the daemon under test ------------------------------------------------------------------


@dataclass
class Daemon:
    """``App.serve`` running as a task; ``stop`` is what SIGTERM does."""

    app: App
    task: asyncio.Task[int]
    url: str

    async def stop(self) -> int:
        self.app.handle_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.task, STOP_TIMEOUT)


@asynccontextmanager
async def daemon(settings: Settings) -> AsyncIterator[Daemon]:
    """Run the daemon in-process; stopped (SIGTERM, bounded) even when the test failed."""
    app = App(settings)
    task = asyncio.create_task(app.serve(install_signals=False), name="sd-watchdog-under-test")
    address = settings.server.address
    assert address is not None
    running = Daemon(app, task, f"http://{address[0]}:{address[1]}")
    try:
        yield running
    finally:
        if not task.done():
            app.handle_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(task, STOP_TIMEOUT)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def daemon_settings(sim: Simulator, tmp_path: Path, port: int, **sections: Any) -> Settings:
    return make_settings(
        sim.base_url,
        server={"listen": f"127.0.0.1:{port}"},
        tasks={"ids": list(STUCK)},
        state={"path": str(tmp_path / "s.db")},
        rules={"queued_max": 0.001},  # every queued task is stuck in its first cycle
        **sections,
    )


@dataclass
class Scrape:
    """One GET /metrics: the raw text, its Content-Type and the parsed families."""

    text: str
    content_type: str
    families: dict[str, Metric]

    def value(self, sample: str, **labels: str) -> float | None:
        """The value of the one sample with this name and exactly these labels, if any."""
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    return float(s.value)
        return None

    def by_label(self, sample: str, label: str) -> dict[str, float]:
        return {
            s.labels[label]: float(s.value)
            for family in self.families.values()
            for s in family.samples
            if s.name == sample
        }


async def scrape(session: aiohttp.ClientSession, url: str) -> Scrape:
    async with session.get(f"{url}/metrics") as response:
        assert response.status == 200, await response.text()
        text = await response.text()
        content_type = response.headers.get("Content-Type", "")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return Scrape(text, content_type, families)


# --- a webhook receiver with scripted answers -----------------------------------------------


@dataclass
class Hook:
    """Answers each POST with the next scripted status (then 200) and records what it said."""

    script: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        status = self.script.pop(0) if self.script else 200
        self.answered.append(status)
        return web.Response(status=status, text="scripted")


@pytest.fixture
async def hook(aiohttp_server: AiohttpServer) -> Hook:
    """A webhook receiver on 127.0.0.1 that first answers 503 (retried), then 400 (final)."""
    receiver = Hook(script=[503, 400])
    app = web.Application()
    app.router.add_post("/", receiver.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    receiver.url = f"http://127.0.0.1:{server.port}/"
    return receiver


# --- the Prometheus server ------------------------------------------------------------------


@pytest.fixture
def prometheus_binary() -> str:
    """The installed binary; skip without it, fail without it under CI."""
    found = shutil.which("prometheus")
    if found is None:
        reason = "Prometheus is not installed (apt-get install prometheus; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture
def daemon_port() -> int:
    """The port the daemon will listen on (Prometheus is configured with it up front)."""
    return free_port()


@pytest.fixture
async def prometheus(
    prometheus_binary: str, daemon_port: int, tmp_path: Path
) -> AsyncIterator[str]:
    """A real Prometheus scraping 127.0.0.1:<daemon_port>/metrics every second; its URL."""
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(job=JOB, port=daemon_port), encoding="utf-8")
    storage = tmp_path / "prometheus-data"
    storage.mkdir()
    log_path = tmp_path / "prometheus.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        prometheus_binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    async with running_service("prometheus", argv, url, log_path, ready_within=READY_TIMEOUT):
        yield url


Vector = list[tuple[dict[str, str], float]]


async def query(session: aiohttp.ClientSession, url: str, expr: str) -> Vector:
    """An instant query through ``/api/v1/query``: (labels, value) per series."""
    async with session.get(f"{url}/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "success", body
    data = body["data"]
    if data["resultType"] == "scalar":
        return [({}, float(data["result"][1]))]
    return [(r["metric"], float(r["value"][1])) for r in data["result"]]


async def expect(session: aiohttp.ClientSession, url: str, expr: str) -> Vector:
    """Poll a filtering query until it returns a series, at most WAIT_TIMEOUT seconds; fail
    with what Prometheus says about the target otherwise."""

    async def check() -> Vector:
        return await query(session, url, expr)

    result = await eventually(check)
    if not result:
        async with session.get(f"{url}/api/v1/targets") as response:
            targets = (await response.json())["data"]["activeTargets"]
        health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
        pytest.fail(f"no series for {expr!r} within {WAIT_TIMEOUT} s; targets: {health}")
    return result


async def promtool_lint(text: str) -> str:
    """``promtool check metrics`` on an exposition: its complaints ("" when clean)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool ships in the same package as prometheus"
    process = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(text.encode()), timeout=10)
    return out.decode(errors="replace").strip() + ("" if process.returncode == 0 else " (failed)")


# --- the tests ------------------------------------------------------------------------------


async def test_prometheus_scrapes_the_daemon_and_answers_queries(
    prometheus: str,
    daemon_port: int,
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    captured_logs: LogCapture,
) -> None:
    """A real Prometheus scrapes the daemon's /metrics; its query API returns the live state."""
    sim: Simulator = await start_simulator([stuck_in_queue(i, scale=600) for i in STUCK])
    settings = daemon_settings(sim, tmp_path, daemon_port, poll={"interval": 0.5})
    job = f'job="{JOB}"'
    timeout = aiohttp.ClientTimeout(total=5)
    async with daemon(settings) as running, aiohttp.ClientSession(timeout=timeout) as session:
        [(up_labels, _)] = await expect(session, prometheus, f"up{{{job}}} == 1")
        assert up_labels["instance"] == f"127.0.0.1:{daemon_port}"

        await expect(session, prometheus, f"sd_watchdog_cycles_total{{{job}}} > 0")

        stuck = len(STUCK)
        [(labels, firing)] = await expect(
            session,
            prometheus,
            f'sd_watchdog_alerts_firing{{{job},rule="queued_too_long"}} == {stuck}',
        )
        assert firing == stuck
        assert labels["severity"] == "warning"
        # nothing else fires: the API answers
        alerts = await query(session, prometheus, f"sd_watchdog_alerts_firing{{{job}}}")
        nonzero = [(a["rule"], v) for a, v in alerts if v]
        assert nonzero == [("queued_too_long", stuck)]
        assert len(alerts) == 10  # every rule reads 0 rather than vanishing

        await expect(session, prometheus, f'sd_watchdog_tasks{{{job},phase="queued"}} == {stuck}')
        tasks = await query(session, prometheus, f"sd_watchdog_tasks{{{job}}}")
        assert {a["phase"]: v for a, v in tasks} == {
            p: stuck if p == "queued" else 0 for p in PHASES
        }

        await expect(session, prometheus, f"sd_watchdog_api_up{{{job}}} == 1")

        inf = f'sd_watchdog_cycle_duration_seconds_bucket{{{job},le="+Inf"}}'
        [(_, observed)] = await expect(session, prometheus, f"{inf} > 0")
        buckets = await query(
            session, prometheus, f"sd_watchdog_cycle_duration_seconds_bucket{{{job}}}"
        )
        assert len(buckets) > 2, buckets  # le buckets, not just +Inf
        assert max(v for _, v in buckets) == observed  # cumulative: +Inf holds every cycle
        # Prometheus reads it as a histogram: a quantile comes out (cycles here take ms)
        [(_, median)] = await expect(
            session,
            prometheus,
            f"histogram_quantile(0.5, sd_watchdog_cycle_duration_seconds_bucket{{{job}}}) >= 0",
        )
        assert median <= 30, median  # a cycle of a few loopback requests

        await expect(
            session, prometheus, f'sd_watchdog_polls_total{{{job},outcome="observed"}} > 0'
        )

        last = f"sd_watchdog_last_successful_cycle_timestamp_seconds{{{job}}}"
        await expect(session, prometheus, f"time() - {last} < 60")
        [(_, stamp)] = await query(session, prometheus, last)
        assert 0 <= time.time() - stamp < 60, stamp

        # and the exposition itself passes Prometheus's own linter
        lint = await promtool_lint((await scrape(session, running.url)).text)
        assert lint == "", lint

        assert await running.stop() == 0
    assert captured_logs.named("watchdog.stopped")[0]["reason"] == "signal"


async def test_metrics_exposition_has_every_family_and_no_secret(
    hook: Hook,
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    captured_logs: LogCapture,
) -> None:
    """GET /metrics parses, has each family of issue 4 and tracks an outage and deliveries."""
    sim: Simulator = await start_simulator([stuck_in_queue(i, scale=600) for i in STUCK])
    sim.set_faults(error_rate=1.0)  # every status request answers 500 until cleared
    settings = daemon_settings(
        sim,
        tmp_path,
        free_port(),
        api={"retries": 0},  # one failed poll = one failed request attempt
        poll={"interval": 0.3},
        alerts={
            "webhooks": [{"url": hook.url, "secret": WEBHOOK_SECRET}],
            "retry_initial": 0.05,
            "timeout": 2,
        },
    )
    stuck = len(STUCK)
    timeout = aiohttp.ClientTimeout(total=5)
    async with daemon(settings) as running, aiohttp.ClientSession(timeout=timeout) as session:
        app = running.app

        async def api_down() -> bool:
            return app.watcher is not None and app.watcher.api_down

        assert await eventually(api_down), "api_unavailable never fired"
        outage = await scrape(session, running.url)

        sim.clear_faults()

        async def settled() -> Scrape | None:
            now = await scrape(session, running.url)
            done = (
                now.value("sd_watchdog_api_up") == 1
                and now.value(
                    "sd_watchdog_alerts_firing", rule="queued_too_long", severity="warning"
                )
                == stuck
                and now.value("sd_watchdog_outbox_depth") == 0
                and (now.value("sd_watchdog_deliveries_total", outcome="delivered") or 0) >= 1
            )
            return now if done else None

        recovered = await eventually(settled)
        assert recovered is not None, (await scrape(session, running.url)).text
        answered = list(hook.answered)
        assert await running.stop() == 0

    # --- the format: Prometheus text, parsed by prometheus_client; every family; no secret
    for shot in (outage, recovered):
        assert shot.content_type.startswith("text/plain"), shot.content_type
        assert "version=" in shot.content_type, shot.content_type
        assert TOKEN not in shot.text
        assert WEBHOOK_SECRET not in shot.text
        for name, (kind, label_names) in FAMILIES.items():
            family = shot.families.get(name)
            if family is None:
                continue  # checked on the recovered scrape below (errors need an outage first)
            assert family.type == kind, (name, family.type)
            assert family.documentation, name
            seen = {key for s in family.samples for key in s.labels}
            assert seen <= label_names, (name, seen)
        # per-task labels would grow with the watched set (and name customer documents)
        every_label = {key for f in shot.families.values() for s in f.samples for key in s.labels}
        assert not every_label & {"task_id", "external_id", "task", "key"}, every_label
    missing = set(FAMILIES) - set(recovered.families)
    assert not missing, f"families missing from /metrics: {sorted(missing)}"
    for name, (_, label_names) in FAMILIES.items():
        samples = recovered.families[name].samples
        assert samples, f"{name} has no samples"
        assert {key for s in samples for key in s.labels} == label_names, name

    # --- during the outage: API down, failed polls counted as API errors by kind
    assert outage.value("sd_watchdog_api_up") == 0
    firing = {
        rule: value
        for rule, value in outage.by_label("sd_watchdog_alerts_firing", "rule").items()
        if value
    }
    assert firing == {"api_unavailable": 1}, outage.text
    critical = outage.value(
        "sd_watchdog_alerts_firing", rule="api_unavailable", severity="critical"
    )
    assert critical == 1, outage.text
    failed = outage.value("sd_watchdog_polls_total", outcome="failed") or 0
    assert failed >= 2 * stuck  # two all-failed cycles make the outage
    assert outage.value("sd_watchdog_polls_total", outcome="observed") == 0
    errors = outage.value("sd_watchdog_api_errors_total", error="http_status", endpoint="status")
    assert errors is not None, outage.text
    # retries = 0: one error per failed poll (+ those of a cycle still under way)
    assert failed <= errors <= failed + stuck
    assert outage.value("sd_watchdog_last_successful_cycle_timestamp_seconds") == 0
    assert outage.by_label("sd_watchdog_tasks", "phase") == {
        "unknown": stuck,  # never observed yet
        **dict.fromkeys(PHASES, 0.0),
    }

    # --- after the recovery: state, cycle counters and deliveries agree with reality
    assert recovered.by_label("sd_watchdog_tasks", "phase") == {
        p: stuck if p == "queued" else 0 for p in PHASES
    }
    after = recovered.by_label("sd_watchdog_alerts_firing", "rule")
    assert {rule: value for rule, value in after.items() if value} == {"queued_too_long": stuck}
    cycles = recovered.value("sd_watchdog_cycles_total")
    assert cycles is not None
    assert cycles >= 3
    assert recovered.value("sd_watchdog_cycle_duration_seconds_count") == cycles
    assert recovered.value("sd_watchdog_cycle_duration_seconds_bucket", le="+Inf") == cycles
    assert (recovered.value("sd_watchdog_polls_total", outcome="observed") or 0) >= stuck
    last = recovered.value("sd_watchdog_last_successful_cycle_timestamp_seconds")
    assert last is not None
    assert 0 <= time.time() - last < 60
    # the receiver answered 503 (retried), 400 (final: dropped), then 200s
    deliveries = recovered.by_label("sd_watchdog_deliveries_total", "outcome")
    assert answered[:2] == [503, 400], answered
    assert deliveries == {
        "delivered": sum(1 for s in answered if 200 <= s < 300),
        "dropped": 1,
    }, (deliveries, answered)
    attempts = recovered.by_label("sd_watchdog_delivery_attempts_total", "outcome")
    assert attempts == {
        "ok": sum(1 for s in answered if 200 <= s < 300),
        "failed": sum(1 for s in answered if s >= 300),
    }, (attempts, answered)
    assert len(captured_logs.named("alert.delivery_failed")) == 2
