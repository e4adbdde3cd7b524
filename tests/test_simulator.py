"""The SmartDocumentor simulator: API shapes, auth, scripted lifecycles, faults, stats, CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import tracemalloc
from collections import Counter
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from watchdog.clock import FakeClock
from watchdog.scenarios import (
    DEFAULT_MIX,
    PROCESSED,
    QUEUED,
    SCENARIOS,
    Bulk,
    Scenario,
    Snapshot,
    Step,
    bulk,
    by_external,
    demo_scenarios,
    demo_thresholds,
    healthy,
    recovering,
    restart,
    settle,
    snapshot,
)
from watchdog.simulator import (
    RESTART_PATH,
    STATUS_PATH,
    TOKEN_PATH,
    Faults,
    Simulator,
    Stats,
    api_time,
    main,
)

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def serve(aiohttp_client: AiohttpClient, sim: Simulator, *, auth: bool = True) -> Client:
    return await aiohttp_client(sim.app, headers=AUTH if auth else None)


async def status(client: Client, **query: str | int) -> dict[str, Any]:
    async with client.get(STATUS_PATH, params={k: str(v) for k, v in query.items()}) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


# --- the status endpoint --------------------------------------------------------------


async def test_status_by_task_id_has_the_api_fields(
    aiohttp_client: AiohttpClient, clock: FakeClock
) -> None:
    """GET status?taskId= answers a GetTaskStatusResponse with Z timestamps, no restartCount."""
    sim = Simulator([healthy(101)], token=TOKEN, clock=clock)
    client = await serve(aiohttp_client, sim)
    body = await status(client, taskId=101)
    assert list(body) == [
        "taskId", "workspaceId", "batchId", "taskNumber", "externalId", "displayName",
        "description", "createdOn", "taskStatus", "integrationStatus", "taskStatusText",
        "integrationStatusText", "totalPages", "preProcessingStartedOn",
    ]  # fmt: skip
    assert body["taskId"] == 101
    assert body["createdOn"] == "2026-11-28T12:00:00Z"
    assert (body["taskStatus"], body["taskStatusText"]) == QUEUED
    assert body["preProcessingStartedOn"] is None
    assert body["totalPages"] == 0


@pytest.mark.parametrize("param", ["taskId", "taskid", "TASKID"])
async def test_status_task_id_parameter_spellings(
    aiohttp_client: AiohttpClient, param: str
) -> None:
    """The task ID parameter is accepted as taskId (examples) and taskid (parameter table)."""
    client = await serve(aiohttp_client, Simulator([healthy(7)], token=TOKEN))
    assert (await status(client, **{param: 7}))["taskId"] == 7


async def test_status_by_external_id(aiohttp_client: AiohttpClient) -> None:
    """GET status?externalId= finds the task by its external ID."""
    client = await serve(aiohttp_client, Simulator([by_external(114)], token=TOKEN))
    body = await status(client, externalId="INV-0042")
    assert (body["taskId"], body["externalId"]) == (114, "INV-0042")


@pytest.mark.parametrize(
    "query", ["", "?taskId=abc", "?taskId=1.5", "?taskId=%C2%B2", "?externalId=", "?x=1"]
)
async def test_status_bad_request_has_empty_body(aiohttp_client: AiohttpClient, query: str) -> None:
    """No usable taskId/externalId → 400 with an empty body."""
    client = await serve(aiohttp_client, Simulator([healthy(1)], token=TOKEN))
    async with client.get(STATUS_PATH + query) as resp:
        assert (resp.status, await resp.read()) == (400, b"")


@pytest.mark.parametrize("query", ["?taskId=999", "?externalId=nope"])
async def test_status_unknown_task_is_404_with_empty_body(
    aiohttp_client: AiohttpClient, query: str
) -> None:
    """An unknown task → 404 with an empty body."""
    client = await serve(aiohttp_client, Simulator([healthy(1)], token=TOKEN))
    async with client.get(STATUS_PATH + query) as resp:
        assert (resp.status, await resp.read()) == (404, b"")


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdA==", "Bearer "])
async def test_status_rejects_missing_or_wrong_token(
    aiohttp_client: AiohttpClient, header: str | None
) -> None:
    """A missing or wrong bearer token → 401 with a WWW-Authenticate challenge."""
    client = await serve(aiohttp_client, Simulator([healthy(1)], token=TOKEN), auth=False)
    headers = {} if header is None else {"Authorization": header}
    async with client.get(STATUS_PATH, params={"taskId": "1"}, headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_no_credentials_configured_means_open(aiohttp_client: AiohttpClient) -> None:
    """Without a token or client credentials the simulator accepts every request."""
    client = await serve(aiohttp_client, Simulator([healthy(1)]), auth=False)
    assert (await status(client, taskId=1))["taskId"] == 1


# --- tokens ---------------------------------------------------------------------------

CREDS = {"grant_type": "client_credentials", "scope": "WebAPI", "client_id": "cid"}


async def test_token_is_issued_accepted_and_expires(
    aiohttp_client: AiohttpClient, clock: FakeClock
) -> None:
    """/connect/token issues a Bearer token that works until expires_in has passed."""
    sim = Simulator([healthy(1)], client_id="cid", client_secret="sec", expires_in=60, clock=clock)
    client = await serve(aiohttp_client, sim, auth=False)
    async with client.post(TOKEN_PATH, data={**CREDS, "client_secret": "sec"}) as resp:
        assert resp.status == 200
        issued = await resp.json()
    assert set(issued) == {"access_token", "expires_in", "token_type", "scope"}
    assert (issued["expires_in"], issued["token_type"], issued["scope"]) == (60, "Bearer", "WebAPI")
    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    async with client.get(STATUS_PATH, params={"taskId": "1"}, headers=headers) as resp:
        assert resp.status == 200
    clock.advance(61)
    async with client.get(STATUS_PATH, params={"taskId": "1"}, headers=headers) as resp:
        assert resp.status == 401


async def test_static_token_works_beside_client_credentials(aiohttp_client: AiohttpClient) -> None:
    """A token configured up front is accepted even when client credentials are configured."""
    sim = Simulator([healthy(1)], token=TOKEN, client_id="cid", client_secret="sec")
    client = await serve(aiohttp_client, sim)
    assert (await status(client, taskId=1))["taskId"] == 1


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({**CREDS, "client_secret": "wrong"}, "invalid_client"),
        ({**CREDS, "client_id": "other", "client_secret": "sec"}, "invalid_client"),
        ({"grant_type": "client_credentials", "scope": "WebAPI"}, "invalid_client"),
        ({**CREDS, "client_secret": "sec", "grant_type": "password"}, "unsupported_grant_type"),
        ({**CREDS, "client_secret": "sec", "scope": "Admin"}, "invalid_scope"),
    ],
)
async def test_token_errors(
    aiohttp_client: AiohttpClient, form: dict[str, str], error: str
) -> None:
    """Wrong credentials → 400 invalid_client; a wrong grant type or scope is refused too."""
    sim = Simulator(client_id="cid", client_secret="sec")
    client = await serve(aiohttp_client, sim, auth=False)
    async with client.post(TOKEN_PATH, data=form) as resp:
        assert (resp.status, await resp.json()) == (400, {"error": error})


# --- scripted lifecycles --------------------------------------------------------------


async def test_lifecycle_moves_with_the_injected_clock(
    aiohttp_client: AiohttpClient, clock: FakeClock
) -> None:
    """A healthy task goes queued → processing → done as the fake clock advances."""
    client = await serve(aiohttp_client, Simulator([healthy(5)], token=TOKEN, clock=clock))
    seen = []
    for _ in range(5):
        body = await status(client, taskId=5)
        seen.append((body["taskStatusText"], body["totalPages"], body["preProcessingStartedOn"]))
        clock.advance(2)
    started = "2026-11-28T12:00:02Z"
    assert seen == [
        ("QueuedForPreProcessing", 0, None),
        ("PreProcessingInProgress", 0, started),
        ("PreProcessingInProgress", 3, started),
        ("PreProcessingSuccessful", 3, started),
        ("Processed", 3, started),
    ]


async def test_restartprocessing_counts_and_recovers(
    aiohttp_client: AiohttpClient, clock: FakeClock
) -> None:
    """restartCount is omitted until a PATCH restartprocessing, which restarts the script."""
    sim = Simulator([recovering(9, restart_at=None)], token=TOKEN, clock=clock)
    client = await serve(aiohttp_client, sim)
    clock.advance(100)
    stuck = await status(client, taskId=9)
    assert "restartCount" not in stuck
    assert (stuck["taskStatus"], stuck["totalPages"]) == (31, 0)
    async with client.patch(RESTART_PATH, params={"taskId": "9"}) as resp:
        assert (resp.status, await resp.read()) == (204, b"")
    body = await status(client, taskId=9)
    assert body["restartCount"] == 1
    assert body["preProcessingStartedOn"] == "2026-11-28T12:01:40Z"
    clock.advance(6)
    assert (await status(client, taskId=9))["taskStatusText"] == "Processed"
    async with client.patch(RESTART_PATH, params={"taskId": "9"}) as resp:
        assert resp.status == 204
    assert (await status(client, taskId=9))["restartCount"] == 2


@pytest.mark.parametrize(("query", "code"), [("?taskId=404", 404), ("", 400), ("?taskId=x", 400)])
async def test_restartprocessing_errors(
    aiohttp_client: AiohttpClient, query: str, code: int
) -> None:
    """PATCH restartprocessing: 404 for an unknown task, 400 without a usable parameter."""
    client = await serve(aiohttp_client, Simulator([healthy(1)], token=TOKEN))
    async with client.patch(RESTART_PATH + query) as resp:
        assert resp.status == code


async def test_restartprocessing_needs_auth(aiohttp_client: AiohttpClient) -> None:
    """PATCH restartprocessing without a token → 401 and no restart."""
    sim = Simulator([healthy(1)], token=TOKEN)
    client = await serve(aiohttp_client, sim, auth=False)
    async with client.patch(RESTART_PATH, params={"taskId": "1"}) as resp:
        assert resp.status == 401
    snap = sim.task_state(healthy(1))
    assert snap is not None
    assert snap.restart_count is None


async def test_scripted_operator_restart(aiohttp_client: AiohttpClient, clock: FakeClock) -> None:
    """recovering(): stuck until restart_at, then restartCount 1 and done 6 units later."""
    client = await serve(aiohttp_client, Simulator([recovering(3)], token=TOKEN, clock=clock))
    clock.advance(15)
    assert "restartCount" not in await status(client, taskId=3)
    clock.advance(2)
    body = await status(client, taskId=3)
    assert body["restartCount"] == 1
    assert body["preProcessingStartedOn"] == "2026-11-28T12:00:16Z"
    clock.advance(5)
    assert (await status(client, taskId=3))["taskStatusText"] == "Processed"


def pages(snap: Snapshot | None) -> tuple[Any, ...] | None:
    if snap is None:
        return None
    return (*snap.status, snap.pages, snap.restart_count, snap.started)


@pytest.mark.parametrize(
    ("name", "at", "expected"),
    [
        ("healthy", 0, (30, "QueuedForPreProcessing", 0, None, None)),
        ("healthy", 8, (60, "Processed", 3, None, 2.0)),
        ("slow_but_ok", 6.9, (30, "QueuedForPreProcessing", 0, None, None)),
        ("slow_but_ok", 25, (60, "Processed", 9, None, 7.0)),
        ("stuck_in_queue", 1000, (30, "QueuedForPreProcessing", 0, None, None)),
        ("stuck_in_processing", 30, (31, "PreProcessingInProgress", 10, None, 1.0)),
        ("zero_pages", 10, (34, "PreProcessingSuccessful", 0, None, 1.0)),
        ("zero_pages", 15, (34, "PreProcessingSuccessful", 6, None, 1.0)),
        ("restart_loop", 10, (31, "PreProcessingInProgress", 0, 3, 10.0)),
        ("restart_loop", 13, (31, "PreProcessingInProgress", 0, 4, 13.0)),
        ("failed", 3, (32, "PreProcessingFailed", 0, None, 1.0)),
        ("integration_failed", 5, (60, "Processed", 2, None, 1.0)),
        ("no_progress", 0, (31, "PreProcessingInProgress", 7, None, 0.0)),
        ("no_progress", 1000, (31, "PreProcessingInProgress", 7, None, 0.0)),
        ("in_review", 4, (50, "ToReview", 3, None, 1.0)),
        ("vanishing", 5.9, (31, "PreProcessingInProgress", 2, None, 1.0)),
        ("vanishing", 6, None),
        ("unknown_status", 3, (41, "Recognizing", 4, None, 1.0)),
        ("unknown_status", 9, (60, "Processed", 4, None, 1.0)),
        ("recovering", 100, (31, "PreProcessingInProgress", 0, None, 1.0)),
        ("by_external", -5, None),
        ("by_external", 8, (30, "QueuedForPreProcessing", 0, None, None)),
        ("by_external", 15, (60, "Processed", 3, None, 9.0)),
    ],
)
def test_scenario_timelines(name: str, at: float, expected: tuple[Any, ...] | None) -> None:
    """Each ready-made scenario shows the scripted fields at the scripted times."""
    assert pages(snapshot(SCENARIOS[name](1), at)) == expected


def test_scale_stretches_every_time_constant() -> None:
    """scale multiplies steps, createdOn offsets and restart_at alike."""
    assert pages(snapshot(healthy(1, scale=0.5), 1.0)) == (
        31,
        "PreProcessingInProgress",
        0,
        None,
        1,
    )
    assert by_external(1, scale=3).created == -12
    assert recovering(1, scale=2).restart_at == 32
    assert demo_thresholds(2)["queued_max"] == 20
    assert demo_thresholds(2)["max_restarts"] == 3


def test_integration_failed_scenario_sets_integration_text() -> None:
    """integration_failed ends Processed with integrationStatusText "Failed"."""
    snap = snapshot(SCENARIOS["integration_failed"](1), 10)
    assert snap is not None
    assert (snap.status, snap.integration[1]) == (PROCESSED, "Failed")


def test_restart_pure_functions() -> None:
    """restart() adds one to the count, settle() applies restart_at once, 404 cannot restart."""
    sc = SCENARIOS["restart_loop"](1)
    run = restart(sc, None, 11)
    assert run is not None
    assert (run.start, run.count) == (11, 4)  # scripted 3, plus this one
    later = snapshot(sc, 15, run)  # its first scripted restart, 4 units after ours
    assert later is not None
    assert later.restart_count == 5  # the restarted script keeps climbing on top
    assert restart(SCENARIOS["vanishing"](1), None, 7) is None
    rec = recovering(1)
    settled = settle(rec, None, 20)
    assert settled is not None
    assert (settled.start, settled.auto_done) == (16, True)
    assert settle(rec, settled, 30) is settled


def test_demo_scenarios_expose_ids_for_a_config() -> None:
    """demo_scenarios: one of each, distinct IDs from 101, refs/keys ready for a config."""
    scenarios = demo_scenarios()
    assert [s.name for s in scenarios] == list(SCENARIOS)
    assert [s.task_id for s in scenarios] == list(range(101, 101 + len(SCENARIOS)))
    ext = [s for s in scenarios if s.by_external]
    assert [(s.external_id, s.key) for s in ext] == [("INV-0042", "ext:INV-0042")]
    assert scenarios[0].key == "id:101"
    expected = {rule for s in scenarios for rule in s.expect}
    assert expected >= {
        "queued_too_long", "processing_too_long", "too_many_restarts", "no_pages",
        "no_progress", "failed_status", "integration_failed", "task_not_found", "review_overdue",
    }  # fmt: skip


def test_scenario_validation() -> None:
    """Steps out of time order, duplicate IDs and overlapping sources are refused."""
    with pytest.raises(ValueError, match="time order"):
        Scenario("x", 1, (Step(2), Step(1)))
    with pytest.raises(ValueError, match="external_id"):
        Scenario("x", 1, (), by_external=True)
    with pytest.raises(ValueError, match="used twice"):
        Simulator([healthy(1), healthy(1)])
    with pytest.raises(ValueError, match="also in"):
        Simulator([healthy(5), bulk(10)])


# --- faults ---------------------------------------------------------------------------


async def test_latency_global_and_per_task(aiohttp_client: AiohttpClient) -> None:
    """Global latency delays every answer; a per-task override changes it for one task."""
    sim = Simulator([healthy(1), healthy(2)], token=TOKEN, faults=Faults(latency=0.15))
    sim.set_faults(2, latency=0.0)
    client = await serve(aiohttp_client, sim)
    began = time.perf_counter()
    await status(client, taskId=1)
    assert time.perf_counter() - began >= 0.15
    began = time.perf_counter()
    await status(client, taskId=2)
    assert time.perf_counter() - began < 0.15


@pytest.mark.parametrize(
    ("faults", "code", "content_type"),
    [
        (Faults(error_rate=1.0), 500, "application/problem+json"),
        (Faults(error_rate=1.0, error_status=503), 503, "application/problem+json"),
        (Faults(down=True), 503, "text/plain"),
        (Faults(html_rate=1.0), 502, "text/html"),
        (Faults(html_rate=1.0, html_status=200), 200, "text/html"),
        (Faults(timeout_rate=1.0, timeout_hold=0.05), 504, "application/octet-stream"),
    ],
)
async def test_error_faults(
    aiohttp_client: AiohttpClient, faults: Faults, code: int, content_type: str
) -> None:
    """5xx, down, HTML error page and a short timeout hold are visible over HTTP."""
    client = await serve(aiohttp_client, Simulator([healthy(1)], token=TOKEN, faults=faults))
    async with client.get(STATUS_PATH, params={"taskId": "1"}) as resp:
        assert (resp.status, resp.content_type) == (code, content_type)
        if content_type == "text/html":
            assert "<html>" in await resp.text()


@pytest.mark.parametrize(("retry_after", "header"), [("7", "7"), (None, None)])
async def test_throttle_fault_sends_retry_after(
    aiohttp_client: AiohttpClient, retry_after: str | None, header: str | None
) -> None:
    """throttle_rate answers 429 with the configured Retry-After (or none)."""
    sim = Simulator([healthy(1)], faults=Faults(throttle_rate=1.0, retry_after=retry_after))
    client = await serve(aiohttp_client, sim)
    async with client.get(STATUS_PATH, params={"taskId": "1"}) as resp:
        assert (resp.status, resp.headers.get("Retry-After")) == (429, header)


async def test_malformed_and_huge_bodies(aiohttp_client: AiohttpClient) -> None:
    """malformed_rate sends broken JSON; huge_rate sends valid JSON of exactly huge_bytes."""
    sim = Simulator([healthy(1)], faults=Faults(malformed_rate=1.0))
    client = await serve(aiohttp_client, sim)
    async with client.get(STATUS_PATH, params={"taskId": "1"}) as resp:
        assert (resp.status, resp.content_type) == (200, "application/json")
        with pytest.raises(ValueError, match="Expecting value"):
            json.loads(await resp.text())
    sim.set_faults(malformed_rate=0.0, huge_rate=1.0, huge_bytes=50_000)
    async with client.get(STATUS_PATH, params={"taskId": "1"}) as resp:
        body = await resp.read()
    assert len(body) == 50_000
    assert set(json.loads(body)) == {"padding"}


async def test_error_rate_is_seeded(aiohttp_client: AiohttpClient) -> None:
    """The same seed gives the same sequence of failures."""

    async def codes(seed: int) -> list[int]:
        sim = Simulator([healthy(1)], faults=Faults(error_rate=0.5), seed=seed)
        client = await serve(aiohttp_client, sim)
        out = []
        for _ in range(20):
            async with client.get(STATUS_PATH, params={"taskId": "1"}) as resp:
                out.append(resp.status)
        return out

    first = await codes(7)
    assert first == await codes(7)
    assert set(first) == {200, 500}


@pytest.mark.parametrize("mode", ["hang", "timeout"])
async def test_held_requests_time_out_and_do_not_block_shutdown(mode: str) -> None:
    """hang / timeout hold the request past a client timeout; stop() still returns at once."""
    faults = Faults(hang=True) if mode == "hang" else Faults(timeout_rate=1.0)
    sim = Simulator([healthy(1)], faults=faults)
    base = await sim.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session:
            with pytest.raises(TimeoutError):
                await session.get(f"{base}{STATUS_PATH}?taskId=1")
            stats = await (await session.get(f"{base}/_sim/stats")).json()
            assert stats["in_flight"] == 1  # still held after the client gave up
    finally:
        began = time.perf_counter()
        await sim.stop()
    assert time.perf_counter() - began < 1.5


async def test_hang_does_not_block_the_test_server(aiohttp_client: AiohttpClient) -> None:
    """A hung request ends when a pytest-aiohttp test server closes."""
    sim = Simulator([healthy(1)], faults=Faults(hang=True))
    client = await serve(aiohttp_client, sim)
    pending = asyncio.create_task(client.get(STATUS_PATH, params={"taskId": "1"}), name="hung")
    await asyncio.sleep(0.1)
    assert not pending.done()
    began = time.perf_counter()
    await client.close()
    assert time.perf_counter() - began < 1.5
    with pytest.raises(aiohttp.ClientError):
        await pending


async def test_per_task_faults_follow_external_ids(aiohttp_client: AiohttpClient) -> None:
    """A per-task fault applies to that task only, also when it is asked for by external ID."""
    sim = Simulator([healthy(1), by_external(2)], task_faults={2: {"down": True}})
    client = await serve(aiohttp_client, sim)
    async with client.get(STATUS_PATH, params={"externalId": "INV-0042"}) as resp:
        assert resp.status == 503
    assert (await status(client, taskId=1))["taskId"] == 1
    sim.clear_faults(2)
    assert (await status(client, externalId="INV-0042"))["taskId"] == 2


def test_faults_validation() -> None:
    """Out-of-range fault settings are refused with a message naming them."""
    for bad in (
        {"error_rate": 1.5},
        {"error_rate": 0.6, "timeout_rate": 0.6},
        {"latency": -1.0},
        {"error_status": 404},
        {"retry_after": "1\r\nX-Evil: 1"},
    ):
        with pytest.raises(ValueError, match=r"rate|must"):
            Faults().updated(bad)
    for key, value in (("nope", 1), ("down", 1), ("huge_bytes", 1.5), ("latency", "1")):
        with pytest.raises(ValueError, match=key):
            Faults().updated({key: value})
    assert Faults().updated({"latency": 1, "retry_after": 2.5}).retry_after == "2.5"


# --- the control endpoint ---------------------------------------------------------------


async def test_control_endpoint_changes_faults(aiohttp_client: AiohttpClient) -> None:
    """POST /_sim/faults changes global and per-task faults at runtime; reset clears them."""
    client = await serve(aiohttp_client, Simulator([healthy(1), healthy(2)]))
    change = {"error_rate": 1, "tasks": {"2": {"throttle_rate": 1, "error_rate": 0}}}
    async with client.post("/_sim/faults", json=change) as resp:
        state = await resp.json()
    assert state["global"]["error_rate"] == 1.0
    assert state["tasks"] == {"2": {"throttle_rate": 1.0, "error_rate": 0.0}}
    async with client.get(STATUS_PATH, params={"taskId": "1"}) as resp:
        assert resp.status == 500
    async with client.get(STATUS_PATH, params={"taskId": "2"}) as resp:
        assert resp.status == 429
    async with client.post("/_sim/faults", json={"tasks": {"2": None}}) as resp:
        assert (await resp.json())["tasks"] == {}
    async with client.post("/_sim/faults", json={"reset": True, "latency": 0.01}) as resp:
        assert (await resp.json())["global"] == {**Faults().to_json(), "latency": 0.01}
    async with client.get("/_sim/faults") as resp:
        assert (await resp.json())["global"]["error_rate"] == 0.0


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"latency": "slow"}',
        b'{"nope": 1}',
        b'{"tasks": {"abc": {}}}',
        b'{"tasks": {"1": 5}}',
        b'{"tasks": [1]}',
        b'{"date_skew": "soon"}',
        b'{"error_rate": 1, "tasks": {"1": {"bad": 1}}}',
    ],
)
async def test_control_endpoint_refuses_bad_documents(
    aiohttp_client: AiohttpClient, payload: bytes
) -> None:
    """A bad POST /_sim/faults is a 400 with an error message, and changes nothing."""
    sim = Simulator([healthy(1)])
    client = await serve(aiohttp_client, sim)
    async with client.post("/_sim/faults", data=payload) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]
    assert sim.faults_json() == {"global": Faults().to_json(), "tasks": {}, "date_skew": 0.0}


async def test_date_skew_moves_the_server_clock(
    aiohttp_client: AiohttpClient, clock: FakeClock
) -> None:
    """date_skew shifts Date and the status timestamps together, up front and at runtime."""
    client = await serve(aiohttp_client, Simulator([healthy(1)], clock=clock, date_skew=120))
    async with client.get(STATUS_PATH, params={"taskId": "1"}) as resp:
        date = parsedate_to_datetime(resp.headers["Date"])
        body = await resp.json()
    assert date == clock.now() + timedelta(seconds=120)
    assert body["createdOn"] == "2026-11-28T12:02:00Z"
    async with client.post("/_sim/faults", json={"date_skew": -300}):
        pass
    clock.advance(10)
    async with client.get(STATUS_PATH, params={"taskId": "404"}) as resp:
        assert resp.status == 404  # error answers carry the skewed Date too
        date = parsedate_to_datetime(resp.headers["Date"])
    assert date == clock.now() - timedelta(seconds=300)
    assert (await status(client, taskId=1))["createdOn"] == "2026-11-28T11:55:00Z"


# --- stats ----------------------------------------------------------------------------


async def test_stats_count_requests(aiohttp_client: AiohttpClient, clock: FakeClock) -> None:
    """Stats count API requests per endpoint, status and second, and peak concurrency."""
    sim = Simulator([healthy(1)], clock=clock, faults=Faults(latency=0.1))
    client = await serve(aiohttp_client, sim)
    await asyncio.gather(*(status(client, taskId=1) for _ in range(5)))
    clock.advance(1.5)
    async with client.patch(RESTART_PATH, params={"taskId": "1"}) as resp:
        assert resp.status == 204
    async with client.get(STATUS_PATH, params={"taskId": "2"}) as resp:
        assert resp.status == 404
    async with client.get("/_sim/stats") as resp:
        stats = await resp.json()
    assert stats["total"] == 7  # control requests are not counted
    assert stats["by_endpoint"] == {"status": 6, "restart": 1}
    assert stats["by_status"] == {"200": 5, "204": 1, "404": 1}
    assert stats["max_in_flight"] == 5
    assert stats["in_flight"] == 0
    assert stats["per_second"] == [[0, 5], [1, 2]]
    assert stats["max_per_second"] == 5
    assert stats["recent"] == [0.0] * 5 + [1.5] * 2
    async with client.delete("/_sim/stats") as resp:
        assert resp.status == 204
    assert sim.stats.to_json()["total"] == 0


def test_stats_memory_is_bounded() -> None:
    """The per-second and recent rings keep a fixed number of entries."""
    stats = Stats(seconds=3, recent=5)
    for i in range(100):
        stats.begin("status", i / 2)
        stats.end(200)
    assert len(stats.per_second) == 3
    assert len(stats.recent) == 5
    assert stats.total == 100


# --- bulk -----------------------------------------------------------------------------


async def test_bulk_100k_answers_fast(aiohttp_client: AiohttpClient) -> None:
    """bulk(100_000) answers any of its IDs (and BULK-<id> external IDs) quickly."""
    tasks = bulk(100_000)
    client = await serve(aiohttp_client, Simulator([tasks], token=TOKEN))
    await status(client, taskId=1)  # connection set-up
    began = time.perf_counter()
    body = await status(client, taskId=99_999)
    assert time.perf_counter() - began < 0.5
    assert (body["taskId"], body["externalId"]) == (99_999, "BULK-99999")
    assert (await status(client, externalId="BULK-42"))["taskId"] == 42
    for query in ("?taskId=100001", "?taskId=0", "?externalId=BULK-x", "?externalId=X-1"):
        async with client.get(STATUS_PATH + query) as resp:
            assert resp.status == 404


def test_bulk_stays_small_and_follows_the_mix() -> None:
    """Generating 100,000 tasks stores nothing per task; kinds follow the mix weights."""
    tracemalloc.start()
    try:
        tasks = Bulk(100_000, seed=3)
        sim = Simulator([tasks])
        for task_id in range(1, 100_001, 10):
            sc = sim.find(task_id)
            assert sc is not None
            sim.task_state(sc)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 1_000_000
    kinds = Counter(tasks.kind(i) for i in tasks.task_ids)
    total = sum(DEFAULT_MIX.values())
    assert abs(kinds["healthy"] / 100_000 - DEFAULT_MIX["healthy"] / total) < 0.01
    with pytest.raises(ValueError, match="bad mix"):
        bulk(10, mix={"nonsense": 1})


# --- running it -------------------------------------------------------------------------


async def test_start_and_stop() -> None:
    """start() serves on a free loopback port and returns its URL; stop() is idempotent."""
    sim = Simulator([healthy(1)], token=TOKEN)
    with pytest.raises(RuntimeError, match="not running"):
        _ = sim.base_url
    base = await sim.start()
    try:
        assert base == sim.base_url
        assert base.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="already running"):
            await sim.start()
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(f"{base}{STATUS_PATH}?taskId=1") as resp,
        ):
            assert resp.status == 200
    finally:
        await sim.stop()
    await sim.stop()


def test_api_time_format() -> None:
    """Timestamps are UTC with Z, and 7 fractional digits like the real API when non-zero."""
    clock = FakeClock()
    assert api_time(clock.now()) == "2026-11-28T12:00:00Z"
    assert api_time(clock.now() + timedelta(microseconds=1500)) == "2026-11-28T12:00:00.0015000Z"


async def test_cli_prints_url_serves_and_stops_on_sigterm() -> None:
    """python -m watchdog.simulator prints its URL, serves bulk tasks, exits 0 on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watchdog.simulator", "--port", "0", "--tasks", "50",
        "--latency", "0.01", "--token", TOKEN,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        base = line.decode().strip()
        assert base.startswith("http://127.0.0.1:")
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(f"{base}{STATUS_PATH}?taskId=50") as resp,
        ):
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=10)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("argv", [["--error-rate", "2"], ["--demo", "--tasks", "200"]])
def test_cli_rejects_bad_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Impossible options are a usage error (exit 2), not a traceback."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err
