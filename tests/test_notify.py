"""Webhook delivery against real receivers on 127.0.0.1: payload, signing, grouping, retries,
final failures, independence of receivers, formats and filters."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import LogCapture, make_settings
from tests.helpers import wired
from watchdog.cycle import Watcher
from watchdog.models import TaskRef
from watchdog.notify import Notifier
from watchdog.scenarios import failed, stuck_in_queue
from watchdog.simulator import Simulator
from watchdog.store import Store

SECRET = "hook-secret-0a1b2c"
ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Receiver:
    """A webhook receiver that answers from a script of statuses ('hang' waits forever)."""

    script: list[int | str] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    attempt_times: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        self.attempt_times.append(time.monotonic())
        answer = self.script.pop(0) if self.script else 200
        if answer == "hang":
            await asyncio.sleep(30)
            return web.Response(status=200)
        return web.Response(status=int(answer), text="ok")

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def delivery_ids(self) -> list[str]:
        return [headers["X-Watchdog-Delivery"] for headers, _ in self.requests]


async def start_receiver(aiohttp_server: ServerFactory, receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app, access_log=None)  # the receiver's own log is not ours
    return f"http://127.0.0.1:{server.port}/hook"


@asynccontextmanager
async def pipeline(
    sim: Simulator, tmp_path: Path, refs: list[TaskRef], **sections: Any
) -> AsyncIterator[tuple[Watcher, Notifier, Store]]:
    """The cycle, the store and the notifier wired as app.py wires them."""
    sections.setdefault("rules", {"queued_max": 0.001})
    alerts = {"retry_initial": 0.05, "timeout": 1, **sections.pop("alerts", {})}
    settings = make_settings(
        sim.base_url, alerts=alerts, state={"path": str(tmp_path / "state.db")}, **sections
    )
    async with wired(settings, refs) as parts:
        yield parts


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll until true, at most 10 s."""
    deadline = time.monotonic() + 10.0
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def verify(headers: dict[str, str], body: bytes, secret: str, max_age: float = 300) -> bool:
    """The receiver side of X-Watchdog-Signature, as the README shows it."""
    stamp = headers["X-Watchdog-Timestamp"]
    if abs(time.time() - int(stamp)) > max_age:
        return False
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Watchdog-Signature"], f"sha256={mac}")


async def test_alerts_of_one_cycle_go_in_one_signed_request(
    tmp_path: Path, start_simulator: Callable[..., Any], aiohttp_server: ServerFactory
) -> None:
    """One request per webhook per cycle carries every alert that changed, signed with HMAC."""
    scenarios = [stuck_in_queue(i, scale=60) for i in (1, 2, 3)]
    sim = await start_simulator(scenarios)
    receiver = Receiver()
    url = await start_receiver(aiohttp_server, receiver)
    hooks = [{"url": url, "secret": SECRET, "headers": {"X-Team": "ops"}}]
    async with pipeline(sim, tmp_path, [s.ref for s in scenarios], alerts={"webhooks": hooks}) as (
        watcher,
        _notifier,
        store,
    ):
        await watcher.run_cycle()
        await wait_for(lambda: len(receiver.requests) == 1)
        await asyncio.sleep(0.2)
        await watcher.run_cycle()  # nothing changed: nothing sent
        await asyncio.sleep(0.2)
        assert len(receiver.requests) == 1
        assert store.outbox_depth() == 0
    headers, body = receiver.requests[0]
    payload = json.loads(body)
    assert payload["version"] == "1"
    assert payload["source"] == "sd-watchdog"
    assert payload["status"] == "firing"
    assert sorted(a["task_id"] for a in payload["alerts"]) == [1, 2, 3]
    alert = payload["alerts"][0]
    assert alert["rule"] == "queued_too_long"
    assert alert["severity"] == "warning"
    assert alert["status"] == "firing"
    assert alert["ends_at"] is None
    assert alert["flapping"] is False
    assert alert["starts_at"].endswith("Z")
    assert alert["task"]["taskId"] == alert["task_id"]
    assert {"observed", "threshold"} <= set(alert["evidence"])
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Team"] == "ops"
    assert verify(headers, body, SECRET)
    assert not verify(headers, body + b" ", SECRET)


async def test_resolved_is_sent_once_and_repeat_interval_resends(
    tmp_path: Path, start_simulator: Callable[..., Any], aiohttp_server: ServerFactory
) -> None:
    """A firing alert is re-sent every repeat_interval and sent once as resolved when it ends."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    receiver = Receiver()
    url = await start_receiver(aiohttp_server, receiver)
    alerts = {"webhooks": [{"url": url}], "repeat_interval": 0.3}
    async with pipeline(sim, tmp_path, [scenario.ref], alerts=alerts) as (watcher, _, _):
        await watcher.run_cycle()
        await asyncio.sleep(0.4)
        await watcher.run_cycle()  # repeat due
        await watcher.run_cycle()  # not due yet
        await wait_for(lambda: len(receiver.requests) == 2)
        watcher.set_tasks([])  # unwatched: resolved
        await wait_for(lambda: len(receiver.requests) == 3)
    statuses = [b["alerts"][0]["status"] for b in receiver.bodies]
    assert statuses == ["firing", "firing", "resolved"]
    assert receiver.bodies[2]["status"] == "resolved"
    assert receiver.bodies[2]["alerts"][0]["ends_at"] is not None
    starts = {b["alerts"][0]["starts_at"] for b in receiver.bodies}
    assert len(starts) == 1  # the same alert throughout
    assert len(set(receiver.delivery_ids())) == 3


async def test_receiver_failing_then_recovering_gets_every_alert_same_delivery_id(
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    aiohttp_server: ServerFactory,
    captured_logs: LogCapture,
) -> None:
    """500, 503 and 429 are retried with backoff; every retry carries the same delivery id."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    receiver = Receiver(script=[500, 503, 429])
    url = await start_receiver(aiohttp_server, receiver)
    async with pipeline(sim, tmp_path, [scenario.ref], alerts={"webhooks": [{"url": url}]}) as (
        watcher,
        _notifier,
        store,
    ):
        await watcher.run_cycle()
        await wait_for(lambda: len(receiver.requests) == 4)
        await wait_for(lambda: store.outbox_depth() == 0)
    assert len(set(receiver.delivery_ids())) == 1
    gaps = [b - a for a, b in zip(receiver.attempt_times, receiver.attempt_times[1:], strict=False)]
    assert all(gap >= 0.02 for gap in gaps)  # backoff happened (retry_initial 0.05, jitter)
    failures = captured_logs.named("alert.delivery_failed")
    assert [f["will_retry"] for f in failures] == [True, True, True]
    assert [f["status"] for f in failures] == [500, 503, 429]
    assert [f["attempt"] for f in failures] == [1, 2, 3]
    delivered = captured_logs.named("alert.delivered")
    assert len(delivered) == 1
    assert delivered[0]["attempt"] == 4
    assert delivered[0]["receiver"].startswith("http://127.0.0.1")


async def test_hanging_receiver_times_out_and_is_retried(
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    aiohttp_server: ServerFactory,
    captured_logs: LogCapture,
) -> None:
    """A receiver that never answers hits the delivery timeout and is tried again."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    receiver = Receiver(script=["hang"])
    url = await start_receiver(aiohttp_server, receiver)
    alerts = {"webhooks": [{"url": url}], "timeout": 0.3}
    async with pipeline(sim, tmp_path, [scenario.ref], alerts=alerts) as (watcher, _, store):
        await watcher.run_cycle()
        await wait_for(lambda: store.outbox_depth() == 0)
    assert len(receiver.requests) == 2
    failure = captured_logs.named("alert.delivery_failed")[0]
    assert failure["error"] == "timeout"
    assert failure["will_retry"] is True


async def test_410_is_final(
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    aiohttp_server: ServerFactory,
    captured_logs: LogCapture,
) -> None:
    """A 4xx other than 429 is final: logged with will_retry false, never tried again."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    receiver = Receiver(script=[410])
    url = await start_receiver(aiohttp_server, receiver)
    async with pipeline(sim, tmp_path, [scenario.ref], alerts={"webhooks": [{"url": url}]}) as (
        watcher,
        _,
        store,
    ):
        await watcher.run_cycle()
        await wait_for(lambda: bool(captured_logs.named("alert.delivery_failed")))
        await asyncio.sleep(0.3)
        assert store.outbox_depth() == 0
    assert len(receiver.requests) == 1
    failure = captured_logs.named("alert.delivery_failed")[0]
    assert failure["will_retry"] is False
    assert failure["status"] == 410


async def test_one_receiver_down_does_not_delay_another(
    tmp_path: Path, start_simulator: Callable[..., Any], aiohttp_server: ServerFactory
) -> None:
    """Each receiver has its own lane: a dead one keeps retrying while the other gets alerts."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    receiver = Receiver()
    url = await start_receiver(aiohttp_server, receiver)
    hooks = [{"url": "http://127.0.0.1:9/dead"}, {"url": url}]
    async with pipeline(sim, tmp_path, [scenario.ref], alerts={"webhooks": hooks}) as (
        watcher,
        _,
        store,
    ):
        started = time.monotonic()
        await watcher.run_cycle()
        await wait_for(lambda: len(receiver.requests) == 1)
        assert time.monotonic() - started < 2
        assert store.outbox_depth() == 1  # the dead receiver's delivery waits for a retry


async def test_max_alerts_per_request_splits_and_min_severity_filters(
    tmp_path: Path, start_simulator: Callable[..., Any], aiohttp_server: ServerFactory
) -> None:
    """Above the cap a cycle's alerts are split; a webhook gets only alerts ≥ min_severity."""
    scenarios = [stuck_in_queue(i, scale=60) for i in range(1, 6)] + [failed(9, scale=0.001)]
    sim = await start_simulator(scenarios)
    await asyncio.sleep(0.05)  # the failed scenario reaches its failed step
    everything, critical = Receiver(), Receiver()
    hooks = [
        {"url": await start_receiver(aiohttp_server, everything)},
        {"url": await start_receiver(aiohttp_server, critical), "min_severity": "critical"},
    ]
    alerts = {"webhooks": hooks, "max_alerts_per_request": 2}
    async with pipeline(sim, tmp_path, [s.ref for s in scenarios], alerts=alerts) as (
        watcher,
        _,
        store,
    ):
        await watcher.run_cycle()
        await wait_for(lambda: store.outbox_depth() == 0)
    sizes = [len(b["alerts"]) for b in everything.bodies]
    assert sizes == [2, 2, 2]  # 5 queued_too_long + 1 failed_status
    assert [a["rule"] for b in critical.bodies for a in b["alerts"]] == ["failed_status"]


async def test_slack_format(
    tmp_path: Path, start_simulator: Callable[..., Any], aiohttp_server: ServerFactory
) -> None:
    """format = "slack" sends a text message an incoming-webhook understands."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    receiver = Receiver()
    hooks = [{"url": await start_receiver(aiohttp_server, receiver), "format": "slack"}]
    async with pipeline(sim, tmp_path, [scenario.ref], alerts={"webhooks": hooks}) as (
        watcher,
        _,
        _,
    ):
        await watcher.run_cycle()
        await wait_for(lambda: len(receiver.requests) == 1)
    message = receiver.bodies[0]
    assert set(message) == {"text"}
    assert "queued_too_long" in message["text"]
    assert "FIRING" in message["text"]


async def test_expired_delivery_is_dropped_with_final_event(
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    captured_logs: LogCapture,
) -> None:
    """A delivery older than max_delivery_age is dropped with a final alert.delivery_failed."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    alerts = {"webhooks": [{"url": "http://127.0.0.1:9/dead"}], "max_delivery_age": 0.3}
    async with pipeline(sim, tmp_path, [scenario.ref], alerts=alerts) as (watcher, _, store):
        await watcher.run_cycle()
        await wait_for(lambda: store.outbox_depth() == 0)
    final = [f for f in captured_logs.named("alert.delivery_failed") if not f["will_retry"]]
    assert len(final) == 1
    assert final[0]["reason"] == "expired" or final[0]["error"] == "expired"


async def test_no_secret_reaches_a_log_line(
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    aiohttp_server: ServerFactory,
    captured_logs: LogCapture,
) -> None:
    """Webhook secrets, header values and URL credentials never appear in the logs."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    receiver = Receiver(script=[500])
    url = await start_receiver(aiohttp_server, receiver)
    secret_url = url.replace("http://", "http://user:URLPASSWORD@") + "?token=QUERYTOKEN"
    hooks = [{"url": secret_url, "secret": SECRET, "headers": {"X-Api-Key": "HEADERKEY"}}]
    async with pipeline(sim, tmp_path, [scenario.ref], alerts={"webhooks": hooks}) as (
        watcher,
        _,
        store,
    ):
        await watcher.run_cycle()
        await wait_for(lambda: store.outbox_depth() == 0)
    text = "\n".join(captured_logs.lines)
    for secret in (SECRET, "URLPASSWORD", "QUERYTOKEN", "HEADERKEY"):
        assert secret not in text
    assert "alert.delivered" in text


@pytest.mark.parametrize("send_resolved", [True, False])
async def test_send_resolved_switch(
    tmp_path: Path,
    start_simulator: Callable[..., Any],
    aiohttp_server: ServerFactory,
    send_resolved: bool,
) -> None:
    """send_resolved = false sends no resolved notification to webhooks."""
    scenario = stuck_in_queue(1, scale=60)
    sim = await start_simulator([scenario])
    receiver = Receiver()
    alerts = {
        "webhooks": [{"url": await start_receiver(aiohttp_server, receiver)}],
        "send_resolved": send_resolved,
    }
    async with pipeline(sim, tmp_path, [scenario.ref], alerts=alerts) as (watcher, _, store):
        await watcher.run_cycle()
        watcher.set_tasks([])
        await wait_for(lambda: store.outbox_depth() == 0)
        await asyncio.sleep(0.1)
    statuses = [b["status"] for b in receiver.bodies]
    assert statuses == (["firing", "resolved"] if send_resolved else ["firing"])
