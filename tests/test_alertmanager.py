"""Alert pushes against a real Prometheus Alertmanager on 127.0.0.1.

The watchdog's cycle, store and notifier (wired as app.py wires them) push to the real
``alertmanager`` binary, which routes everything to a real webhook receiver (an ``aiohttp.web``
app): what arrives there is what an on-call engineer's pager would get. Nothing is mocked.
The binary comes from the Debian package ``prometheus-alertmanager``; without it these tests
skip, except under ``CI=true`` (where ``.ci/run`` installs it), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.conftest import LogCapture, make_settings
from tests.helpers import free_port, running_service, wired
from watchdog.alerts import Alert, Change
from watchdog.clock import SystemClock
from watchdog.cycle import Watcher
from watchdog.models import Rule, TaskRef
from watchdog.notify import Notifier
from watchdog.scenarios import stuck_in_queue
from watchdog.simulator import Simulator
from watchdog.store import Store

READY_TIMEOUT = 20.0  # the binary's start-up, generously
WAIT_TIMEOUT = 10.0  # any one thing we wait for at the receiver or the API
POLL = 0.1
TASK_IDS = (11, 12, 13)
LABELS = ("alertname", "task_id", "severity", "source", "workspace_id")

# group_wait/group_interval of 1 s: a group is notified about a second after it changes.
CONFIG = """\
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: "{url}"
        send_resolved: true
"""


# --- the Alertmanager binary and its webhook receiver ------------------------------------


@pytest.fixture
def alertmanager_binary() -> str:
    """The installed binary; skip without it, fail without it under CI."""
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        reason = (
            "Prometheus Alertmanager is not installed "
            "(apt-get install prometheus-alertmanager; .ci/run does it)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@dataclass
class Hook:
    """The webhook receiver Alertmanager notifies: every POST body, parsed, in order."""

    url: str = ""
    notifications: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.notifications.append(await request.json())
        return web.Response(text="ok")

    def with_status(self, status: str) -> list[dict[str, Any]]:
        return [n for n in self.notifications if n["status"] == status]


@pytest.fixture
async def hook(aiohttp_server: AiohttpServer) -> Hook:
    """A real webhook receiver on 127.0.0.1 (a free port)."""
    receiver = Hook()
    app = web.Application()
    app.router.add_post("/", receiver.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    receiver.url = f"http://127.0.0.1:{server.port}/"
    return receiver


@pytest.fixture
def alertmanager_log(tmp_path: Path) -> Path:
    """Where the binary's output goes (shown when it fails to start)."""
    return tmp_path / "alertmanager.log"


@pytest.fixture
async def alertmanager(
    alertmanager_binary: str, hook: Hook, tmp_path: Path, alertmanager_log: Path
) -> AsyncIterator[str]:
    """A real Alertmanager (clustering off) routing everything to ``hook``; its base URL."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=hook.url), encoding="utf-8")
    storage = tmp_path / "alertmanager-data"
    storage.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        alertmanager_binary,
        f"--config.file={config}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    async with running_service(
        "alertmanager", argv, url, alertmanager_log, ready_within=READY_TIMEOUT
    ):
        yield url


async def active_alerts(url: str) -> list[dict[str, Any]]:
    """Alertmanager's own view (``GET /api/v2/alerts``: active ones, not resolved)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"{url}/api/v2/alerts") as response,
    ):
        assert response.status == 200, await response.text()
        alerts: list[dict[str, Any]] = await response.json()
    return [a for a in alerts if a["labels"].get("source") == "sd-watchdog"]


async def eventually(check: Callable[[], Any], within: float = WAIT_TIMEOUT) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, at most ``within``
    seconds; its last result (falsy when time ran out)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(POLL)


# --- the watchdog, wired as app.py wires it -------------------------------------------------


@asynccontextmanager
async def pipeline(
    sim: Simulator, tmp_path: Path, refs: Sequence[TaskRef], am_url: str, resend: float
) -> AsyncIterator[tuple[Watcher, Notifier, Store]]:
    """Store, notifier and watcher as App._start builds them, pushing to ``am_url``."""
    settings = make_settings(
        sim.base_url,
        alerts={
            "alertmanager": {"urls": [am_url], "resend_interval": resend},
            "retry_initial": 0.05,
            "timeout": 2,
        },
        state={"path": str(tmp_path / "s.db")},
        rules={"queued_max": 0.001},  # every queued task is stuck in the first cycle
    )
    async with wired(settings, refs) as parts:
        yield parts


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def by_task(alerts: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["labels"]["task_id"]: a for a in alerts}


def expected_labels(task_id: int) -> dict[str, str]:
    return {
        "alertname": "queued_too_long",
        "task_id": str(task_id),
        "severity": "warning",
        "source": "sd-watchdog",
        "workspace_id": "1",  # the simulator's default workspace
    }


def assert_delivered_cleanly(logs: LogCapture, pushes: int) -> None:
    failed = logs.named("alert.delivery_failed")
    assert failed == [], f"Alertmanager refused a push: {failed}"
    delivered = [e for e in logs.named("alert.delivered") if e["receiver_kind"] == "alertmanager"]
    assert len(delivered) == pushes
    assert {e["status"] for e in delivered} == {200}


# --- the tests ------------------------------------------------------------------------------


async def test_alerts_fire_grouped_and_resolve_through_alertmanager(
    alertmanager: str,
    hook: Hook,
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    captured_logs: LogCapture,
) -> None:
    """Firing alerts reach AM's receiver as one group with our labels, and resolve on push."""
    # 2 s, not 1: the alerts then outlive the test's own resolve push by seconds, so a resolve
    # by Alertmanager's timeout (endsAt passed) cannot pass for the push under test.
    resend = 2.0
    scenarios = [stuck_in_queue(i, scale=60) for i in TASK_IDS]
    sim = await start_simulator(scenarios)
    async with pipeline(sim, tmp_path, [s.ref for s in scenarios], alertmanager, resend) as (
        watcher,
        notifier,
        _,
    ):
        before = datetime.now(UTC)
        report = await watcher.run_cycle()
        after = datetime.now(UTC)
        fired: dict[str, Alert] = {
            str(t.alert.task_id): t.alert for t in report.transitions if t.change is Change.FIRED
        }
        assert sorted(fired) == sorted(str(i) for i in TASK_IDS)
        assert {a.rule for a in fired.values()} == {Rule.QUEUED_TOO_LONG}
        assert await notifier.drain(5)

        # (1) + (2): one notification, grouped by alertname, carries all three firing alerts
        assert await eventually(lambda: hook.with_status("firing")), "no firing notification"
        in_am = by_task(await active_alerts(alertmanager))

        changes = watcher.set_tasks([])  # unwatched: resolved, pushed with endsAt = now
        resolved: dict[str, Alert] = {str(c.alert.task_id): c.alert for c in changes}
        assert {c.change for c in changes} == {Change.RESOLVED}
        assert {c.reason for c in changes} == {"unwatched"}
        assert sorted(resolved) == sorted(fired)
        assert await notifier.drain(5)

        # (3): the resolve push ends them at once, well before their pushed endsAt
        async def none_active() -> bool:
            return not await active_alerts(alertmanager)

        gone = await eventually(none_active, within=resend)
        assert gone, f"the resolve push left alerts active: {await active_alerts(alertmanager)}"
        notified = await eventually(lambda: hook.with_status("resolved"), within=resend * 2)
        assert notified, f"no resolved notification; received: {hook.notifications}"

    assert_delivered_cleanly(captured_logs, pushes=2)

    firing = hook.with_status("firing")
    assert len(firing) == 1, firing
    group = firing[0]
    assert group["groupLabels"] == {"alertname": "queued_too_long"}
    assert group["commonLabels"]["source"] == "sd-watchdog"
    assert group["receiver"] == "hook"
    alerts = by_task(group["alerts"])
    assert sorted(alerts) == sorted(fired)
    for task_id in TASK_IDS:
        alert = alerts[str(task_id)]
        mine = fired[str(task_id)]
        assert alert["status"] == "firing"
        assert {k: alert["labels"].get(k) for k in LABELS} == expected_labels(task_id)
        assert alert["annotations"]["summary"] == mine.summary
        evidence = json.loads(alert["annotations"]["evidence"])
        assert evidence == json.loads(json.dumps(dict(mine.evidence), default=str))
        assert mine.starts_at is not None
        assert abs(when(alert["startsAt"]) - mine.starts_at) < timedelta(milliseconds=1)

    # AM's own API held them before the resolve, ending four resend intervals after the push
    assert sorted(in_am) == sorted(fired)
    ends = timedelta(seconds=4 * resend)
    slack = timedelta(milliseconds=50)
    for key, alert in in_am.items():
        assert alert["status"]["state"] == "active"
        assert alert["labels"] == alerts[key]["labels"]
        assert before + ends - slack <= when(alert["endsAt"]) <= after + ends + slack

    resolved_groups = hook.with_status("resolved")
    assert len(resolved_groups) == 1, resolved_groups
    closing = resolved_groups[0]
    assert closing["groupLabels"] == {"alertname": "queued_too_long"}
    closed = by_task(closing["alerts"])
    assert sorted(closed) == sorted(fired)
    for key, alert in closed.items():
        assert alert["status"] == "resolved"
        assert alert["labels"] == alerts[key]["labels"]  # the same alert, not a new one
        ended = resolved[key].ends_at
        assert ended is not None
        assert abs(when(alert["endsAt"]) - ended) < timedelta(milliseconds=1)  # our endsAt


async def test_resend_keeps_alerts_alive_in_alertmanager(
    alertmanager: str,
    hook: Hook,
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    captured_logs: LogCapture,
) -> None:
    """A resend moves AM's endsAt forward, so a firing alert outlives its first endsAt."""
    resend = 1.0
    scenario = stuck_in_queue(TASK_IDS[0], scale=60)
    sim = await start_simulator([scenario])
    clock = SystemClock()
    async with pipeline(sim, tmp_path, [scenario.ref], alertmanager, resend) as (
        watcher,
        notifier,
        store,
    ):
        await watcher.run_cycle()
        assert await notifier.drain(5)
        shown = await eventually(lambda: active_alerts(alertmanager))
        assert shown, "the alert never showed in Alertmanager"
        first = shown[0]
        first_end = when(first["endsAt"])

        await asyncio.sleep(resend)
        # what App._resend does on its schedule
        firing = [a for s in watcher.tasks.values() for a in s.firing()]
        assert len(firing) == 1
        pushed = clock.now()
        deliveries, superseded = notifier.plan_resend(firing, watcher.statuses())
        store.save(now=clock.now().timestamp(), deliveries=deliveries, superseded_kinds=superseded)
        notifier.wake()
        assert await notifier.drain(5)

        async def moved() -> list[dict[str, Any]]:
            alerts = await active_alerts(alertmanager)
            return [a for a in alerts if when(a["endsAt"]) > first_end]

        later = await eventually(moved)
        assert later, f"endsAt did not move: {await active_alerts(alertmanager)}"
        second = later[0]

        # past the first endsAt: without the resend Alertmanager would have resolved it
        await asyncio.sleep(max(0.0, (first_end - clock.now()).total_seconds()) + 0.3)
        still = await active_alerts(alertmanager)
        statuses = [n["status"] for n in hook.notifications]

    assert_delivered_cleanly(captured_logs, pushes=2)
    assert second["labels"] == first["labels"]  # the same alert (same fingerprint)
    assert second["fingerprint"] == first["fingerprint"]
    assert second["startsAt"] == first["startsAt"]
    new_end = when(second["endsAt"])
    assert new_end - first_end >= timedelta(seconds=resend * 0.9)
    assert abs(new_end - (pushed + timedelta(seconds=4 * resend))) < timedelta(seconds=0.5)
    assert [a["fingerprint"] for a in still] == [first["fingerprint"]]
    assert still[0]["status"]["state"] == "active"
    # the resend is not news to the receiver: one firing notification, nothing resolved
    assert statuses == ["firing"]
