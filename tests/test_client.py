"""The SmartDocumentor client against real aiohttp servers on 127.0.0.1.

Nothing HTTP is mocked and nothing is patched: the servers are small ``aiohttp.web`` apps, and
waits are checked through an injected clock whose ``sleep`` records and returns at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from watchdog.auth import parse_token_response, refusal_message
from watchdog.client import (
    STATUS_PATH,
    TOKEN_PATH,
    USER_AGENT,
    SmartDocumentorClient,
    parse_task_status,
)
from watchdog.clock import FakeClock
from watchdog.errors import ApiError, ConfigError
from watchdog.models import (
    ApiErrorInfo,
    Deferred,
    NotFound,
    Observed,
    PollFailed,
    TaskRef,
)
from watchdog.settings import ApiSettings

TOKEN = "st4tic-T0KEN-do-not-leak"
CLIENT_SECRET = "cl1ent-S3CRET-do-not-leak"
REF = TaskRef.by_id(44)

Maker = Callable[[], web.StreamResponse]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_body(task_id: int = 44, **changes: Any) -> dict[str, Any]:
    """The example response of SMARTDOCUMENTOR-API.md §2, with ``changes`` applied."""
    body: dict[str, Any] = {
        "taskId": task_id,
        "workspaceId": 1,
        "batchId": 1,
        "taskNumber": 1,
        "externalId": None,
        "displayName": "Task display name",
        "description": "Task description",
        "createdOn": "2022-03-16T16:59:55Z",
        "taskStatus": 4,
        "integrationStatus": 4,
        "taskStatusText": "InReview",
        "integrationStatusText": "Failed",
        "totalPages": 10,
        "restartCount": 2,
        "preProcessingStartedOn": "2022-03-16T16:59:55Z",
    }
    body.update(changes)
    return body


def ok(task_id: int = 44, headers: dict[str, str] | None = None) -> Maker:
    return lambda: web.json_response(status_body(task_id), headers=headers)


def code(status: int, headers: dict[str, str] | None = None, body: str = "") -> Maker:
    return lambda: web.Response(status=status, headers=headers, text=body)


@dataclass
class Seen:
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]
    at: float


@dataclass
class Endpoint:
    """A route that answers from a script, in order; the last answer repeats."""

    makers: list[Maker]
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.seen.append(Seen(dict(request.query), dict(request.headers), form, time.monotonic()))
        index = min(len(self.seen), len(self.makers)) - 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.makers[index]()


def script(*makers: Maker, delay: float = 0.0) -> Endpoint:
    return Endpoint(list(makers), delay)


class TokenEndpoint:
    """Issues tok-1, tok-2, … (or answers ``refuse``), recording each request."""

    def __init__(self, expires_in: int | None = 3600, refuse: Maker | None = None) -> None:
        self.expires_in = expires_in
        self.refuse = refuse
        self.forms: list[dict[str, str]] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.forms.append({k: str(v) for k, v in (await request.post()).items()})
        await asyncio.sleep(0.02)  # long enough for concurrent polls to pile up behind it
        if self.refuse is not None:
            return self.refuse()
        body: dict[str, Any] = {"access_token": f"tok-{len(self.forms)}", "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)


class RecordingClock(FakeClock):
    """A FakeClock whose sleeps are recorded (and, like FakeClock's, return at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def serve(
    aiohttp_server: AiohttpServer, status: Handler, token: Handler | None = None
) -> TestServer:
    app = web.Application()
    app.router.add_get(STATUS_PATH, _route(status))
    if token is not None:
        app.router.add_post(TOKEN_PATH, _route(token))
    return await aiohttp_server(app)


def _route(handler: Handler) -> Handler:
    """aiohttp wants a coroutine function, not an object with an async __call__."""

    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    return route


def api(server: TestServer | str, **changes: Any) -> ApiSettings:
    """Settings for a loopback server: static token, short timeout, quick retries."""
    base = server if isinstance(server, str) else f"http://127.0.0.1:{server.port}"
    values: dict[str, Any] = {
        "base_url": base,
        "token": TOKEN,
        "timeout": 2.0,
        "retries": 2,
        "retry_backoff": 0.01,
    }
    values.update(changes)
    return ApiSettings(**values)


def creds(server: TestServer, **changes: Any) -> ApiSettings:
    return api(server, token=None, client_id="cid", client_secret=CLIENT_SECRET, **changes)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def _no_ambient_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the runner's proxy and netrc settings out of these loopback tests."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NETRC"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# --- answers ------------------------------------------------------------------------------


async def test_poll_by_task_id(aiohttp_server: AiohttpServer) -> None:
    """A 200 is parsed; the request carries taskId, the bearer token, Accept and User-Agent."""
    endpoint = script(ok())
    server = await serve(aiohttp_server, endpoint)
    async with SmartDocumentorClient(api(server)) as client:
        result = await client.poll(REF)
        assert client.requests_sent == 1
    assert isinstance(result, Observed)
    assert result.ref == REF
    assert result.status.task_id == 44
    assert result.status.task_status_text == "InReview"
    assert result.status.restart_count == 2
    assert result.status.created_on == datetime(2022, 3, 16, 16, 59, 55, tzinfo=UTC)
    seen = endpoint.seen[0]
    assert seen.query == {"taskId": "44"}
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("sd-watchdog/")


async def test_poll_by_external_id(aiohttp_server: AiohttpServer) -> None:
    """A task configured by external ID is asked for with the externalId parameter."""
    endpoint = script(lambda: web.json_response(status_body(7, externalId="INV-0042")))
    server = await serve(aiohttp_server, endpoint)
    ref = TaskRef.by_external_id("INV-0042")
    async with SmartDocumentorClient(api(server)) as client:
        result = await client.poll(ref)
    assert isinstance(result, Observed)
    assert result.status.external_id == "INV-0042"
    assert endpoint.seen[0].query == {"externalId": "INV-0042"}


async def test_404_is_not_found(aiohttp_server: AiohttpServer) -> None:
    """A 404 is NotFound, sent once and not reported as an error."""
    errors: list[ApiErrorInfo] = []
    endpoint = script(code(404))
    server = await serve(aiohttp_server, endpoint)
    async with SmartDocumentorClient(api(server), on_error=errors.append) as client:
        assert await client.poll(REF) == NotFound(REF)
    assert errors == []
    assert len(endpoint.seen) == 1


async def test_400_is_not_retried(aiohttp_server: AiohttpServer) -> None:
    """A 400 fails at once (no retry) and counts as the API answering."""
    errors: list[ApiErrorInfo] = []
    endpoint = script(code(400))
    server = await serve(aiohttp_server, endpoint)
    async with SmartDocumentorClient(api(server, retries=3), on_error=errors.append) as client:
        result = await client.poll(REF)
    assert result == PollFailed(REF, "http_status", 400, auth=False, api_ok=True)
    assert len(endpoint.seen) == 1
    assert [(e.error, e.status, e.attempt, e.will_retry) for e in errors] == [
        ("http_status", 400, 1, False)
    ]
    assert errors[0].endpoint == "status"
    assert errors[0].task_key == "id:44"


async def test_redirect_is_not_followed(aiohttp_server: AiohttpServer) -> None:
    """A 3xx is an http_status failure: the bearer token never follows a redirect."""
    elsewhere = script(ok())
    target = await serve(aiohttp_server, elsewhere)
    location = {"Location": f"http://127.0.0.1:{target.port}{STATUS_PATH}?taskId=44"}
    server = await serve(aiohttp_server, script(code(302, location)))
    async with SmartDocumentorClient(api(server)) as client:
        result = await client.poll(REF)
    assert isinstance(result, PollFailed)
    assert (result.error, result.status) == ("http_status", 302)
    assert elsewhere.seen == []


async def test_500_then_200_is_retried(aiohttp_server: AiohttpServer) -> None:
    """5xx answers are retried; each failed attempt is reported with will_retry."""
    errors: list[ApiErrorInfo] = []
    endpoint = script(code(500), code(502), ok())
    server = await serve(aiohttp_server, endpoint)
    clock = RecordingClock()
    settings = api(server, retries=3, retry_backoff=1.0)
    async with SmartDocumentorClient(settings, on_error=errors.append, clock=clock) as client:
        result = await client.poll(REF)
        assert client.requests_sent == 3
    assert isinstance(result, Observed)
    assert [(e.status, e.attempt, e.will_retry) for e in errors] == [
        (500, 1, True),
        (502, 2, True),
    ]
    # equal jitter around 1 s, then 2 s
    assert 0.5 <= clock.sleeps[0] <= 1.0
    assert 1.0 <= clock.sleeps[1] <= 2.0


async def test_retries_exhausted(aiohttp_server: AiohttpServer) -> None:
    """After `retries` extra attempts the poll fails with the last kind; api_ok stays False."""
    errors: list[ApiErrorInfo] = []
    endpoint = script(code(503))
    server = await serve(aiohttp_server, endpoint)
    async with SmartDocumentorClient(
        api(server, retries=2), on_error=errors.append, clock=FakeClock()
    ) as client:
        result = await client.poll(REF)
    assert result == PollFailed(REF, "http_status", 503, auth=False, api_ok=False)
    assert len(endpoint.seen) == 3
    assert [(e.attempt, e.will_retry) for e in errors] == [(1, True), (2, True), (3, False)]


async def test_backoff_is_capped(aiohttp_server: AiohttpServer) -> None:
    """However large retry_backoff grows, no wait exceeds 60 s."""
    server = await serve(aiohttp_server, script(code(500), ok()))
    clock = RecordingClock()
    settings = api(server, retries=1, retry_backoff=1000.0)
    async with SmartDocumentorClient(settings, clock=clock, rng=random.Random(1)) as client:
        assert isinstance(await client.poll(REF), Observed)
    assert len(clock.sleeps) == 1
    assert 30.0 <= clock.sleeps[0] <= 60.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("0", 0.0),
        # an HTTP-date is measured against the server's own Date header
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("soon", None),  # unparseable: the ordinary backoff applies
    ],
)
async def test_429_retry_after_is_honoured(
    aiohttp_server: AiohttpServer, header: str, expected: float | None
) -> None:
    """A 429's Retry-After (seconds or HTTP-date) sets the wait before the retry."""
    headers = {"Retry-After": header, "Date": "Wed, 21 Oct 2015 07:28:00 GMT"}
    server = await serve(aiohttp_server, script(code(429, headers), ok()))
    clock = RecordingClock()
    settings = api(server, retry_backoff=0.5)
    async with SmartDocumentorClient(settings, clock=clock) as client:
        assert isinstance(await client.poll(REF), Observed)
    assert len(clock.sleeps) == 1
    if expected is None:
        assert 0.25 <= clock.sleeps[0] <= 0.5
    else:
        assert clock.sleeps[0] == pytest.approx(expected)


async def test_503_retry_after_is_capped(aiohttp_server: AiohttpServer) -> None:
    """A 503's Retry-After is honoured up to retry_after_max."""
    server = await serve(aiohttp_server, script(code(503, {"Retry-After": "3600"}), ok()))
    clock = RecordingClock()
    async with SmartDocumentorClient(api(server, retry_after_max=5), clock=clock) as client:
        assert isinstance(await client.poll(REF), Observed)
    assert clock.sleeps == [5.0]


async def test_retry_after_past_deadline_defers(aiohttp_server: AiohttpServer) -> None:
    """A Retry-After that ends past the deadline gives Deferred at once, without sleeping."""
    errors: list[ApiErrorInfo] = []
    endpoint = script(code(429, {"Retry-After": "120"}), ok())
    server = await serve(aiohttp_server, endpoint)
    clock = RecordingClock()
    settings = api(server, retry_after_max=90)
    async with SmartDocumentorClient(settings, clock=clock, on_error=errors.append) as client:
        result = await client.poll(REF, deadline=clock.monotonic() + 10)
    assert result == Deferred(REF, until=clock.monotonic() + 90, error="http_status", status=429)
    assert clock.sleeps == []
    assert len(endpoint.seen) == 1
    assert [(e.status, e.will_retry) for e in errors] == [(429, False)]


async def test_backoff_past_deadline_defers(aiohttp_server: AiohttpServer) -> None:
    """An ordinary backoff that would outlast the deadline defers as well."""
    server = await serve(aiohttp_server, script(code(500), ok()))
    clock = RecordingClock()
    async with SmartDocumentorClient(api(server, retry_backoff=30), clock=clock) as client:
        result = await client.poll(REF, deadline=clock.monotonic() + 1)
    assert isinstance(result, Deferred)
    assert (result.error, result.status) == ("http_status", 500)
    assert clock.monotonic() + 15 <= result.until <= clock.monotonic() + 30
    assert clock.sleeps == []


# --- transport failures -------------------------------------------------------------------


async def test_timeout(aiohttp_server: AiohttpServer) -> None:
    """A server slower than api.timeout is a "timeout" failure with no HTTP status."""
    errors: list[ApiErrorInfo] = []
    server = await serve(aiohttp_server, script(ok(), delay=0.6))
    settings = api(server, timeout=0.15, retries=1)
    async with SmartDocumentorClient(settings, on_error=errors.append) as client:
        result = await client.poll(REF)
    assert result == PollFailed(REF, "timeout", None, auth=False, api_ok=False)
    assert [(e.error, e.status, e.will_retry) for e in errors] == [
        ("timeout", None, True),
        ("timeout", None, False),
    ]


async def test_connection_refused() -> None:
    """A closed port is a "connection" failure, retried like a timeout."""
    errors: list[ApiErrorInfo] = []
    settings = api(f"http://127.0.0.1:{closed_port()}", retries=1)
    async with SmartDocumentorClient(settings, on_error=errors.append) as client:
        result = await client.poll(REF)
        assert client.requests_sent == 2
    assert result == PollFailed(REF, "connection", None, auth=False, api_ok=False)
    assert [e.error for e in errors] == ["connection", "connection"]


def _chunked(size: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(size // 512):
            await resp.write(b" " * 512)
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize(
    "handler",
    [
        script(lambda: web.Response(body=b" " * 2000, content_type="application/json")),
        _chunked(4096),
    ],
    ids=["content-length", "chunked"],
)
async def test_body_too_large(aiohttp_server: AiohttpServer, handler: Handler) -> None:
    """A body above max_body_bytes is "too_large", with or without a Content-Length."""
    errors: list[ApiErrorInfo] = []
    server = await serve(aiohttp_server, handler)
    settings = api(server, max_body_bytes=1024)
    async with SmartDocumentorClient(settings, on_error=errors.append) as client:
        result = await client.poll(REF)
    assert result == PollFailed(REF, "too_large", 200, auth=False, api_ok=True)
    assert [(e.error, e.will_retry) for e in errors] == [("too_large", False)]


async def test_endless_body_is_not_buffered(aiohttp_server: AiohttpServer) -> None:
    """The client stops reading just past max_body_bytes and hangs up on an endless body."""
    hung_up = asyncio.Event()
    written = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal written
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            while written < 256 * 1024 * 1024:  # a safety stop, far beyond any buffer
                await resp.write(b"x" * 65536)
                written += 65536
        except ConnectionError:
            hung_up.set()
        except asyncio.CancelledError:  # how the test server may end a handler on hang-up
            hung_up.set()
            raise
        return resp

    server = await serve(aiohttp_server, endless)
    async with SmartDocumentorClient(api(server, max_body_bytes=1024)) as client:
        result = await client.poll(REF)
    assert isinstance(result, PollFailed)
    assert result.error == "too_large"
    await asyncio.wait_for(hung_up.wait(), 5)
    assert written < 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("maker", "needle"),
    [
        (lambda: web.Response(text="<html>Bad gateway</html>", content_type="text/html"), "JSON"),
        (lambda: web.Response(text='{"taskId": 44,', content_type="application/json"), "JSON"),
        (lambda: web.json_response([status_body()]), "array"),
        (lambda: web.json_response(dict.fromkeys(status_body())), "taskId"),
        (lambda: web.json_response(status_body(taskStatus="abc")), "taskStatus"),
        (lambda: web.json_response(status_body(45)), "asked for 44"),
        (lambda: web.Response(status=204), "JSON"),
        (lambda: web.Response(body=b"[" * 100_000, content_type="application/json"), "JSON"),
    ],
    ids=["html", "malformed", "array", "nulls", "wrong-type", "other-task", "empty", "deep"],
)
async def test_invalid_response(aiohttp_server: AiohttpServer, maker: Maker, needle: str) -> None:
    """A 2xx that is not a valid status object of the asked task is invalid_response, once."""
    errors: list[ApiErrorInfo] = []
    endpoint = script(maker)
    server = await serve(aiohttp_server, endpoint)
    settings = api(server, retries=3, max_body_bytes=200_000)
    async with SmartDocumentorClient(settings, on_error=errors.append) as client:
        result = await client.poll(REF)
    assert isinstance(result, PollFailed)
    assert (result.error, result.auth, result.api_ok) == ("invalid_response", False, True)
    assert len(endpoint.seen) == 1
    assert len(errors) == 1
    assert needle in errors[0].message


async def test_concurrency_limit(aiohttp_server: AiohttpServer) -> None:
    """No more than api.concurrency requests are ever in flight at the server."""
    in_flight = peak = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return web.json_response(status_body(int(request.query["taskId"])))

    server = await serve(aiohttp_server, handler)
    async with SmartDocumentorClient(api(server, concurrency=4)) as client:
        results = await asyncio.gather(*(client.poll(TaskRef.by_id(i)) for i in range(1, 51)))
    assert all(isinstance(r, Observed) for r in results)
    assert peak == 4


async def test_rate_limit_measured_at_the_server(aiohttp_server: AiohttpServer) -> None:
    """rate_limit spaces requests out: 30 requests at 40/s span at least ~0.7 s."""
    endpoint = script(ok())
    server = await serve(aiohttp_server, endpoint)
    async with SmartDocumentorClient(api(server, rate_limit=40, concurrency=8)) as client:
        await asyncio.gather(*(client.poll(REF) for _ in range(30)))
    arrivals = [s.at for s in endpoint.seen]
    assert len(arrivals) == 30
    assert max(arrivals) - min(arrivals) >= 0.65  # 29 gaps of 25 ms, less timer slack


async def test_rate_limit_uses_the_injected_clock(aiohttp_server: AiohttpServer) -> None:
    """The limiter waits on the client's clock: 30 requests at 20/s take 1.45 s of it."""
    server = await serve(aiohttp_server, script(ok()))
    clock = FakeClock()
    start = clock.monotonic()
    settings = api(server, rate_limit=20, concurrency=1)
    async with SmartDocumentorClient(settings, clock=clock) as client:
        for _ in range(30):
            await client.poll(REF)
    assert clock.monotonic() - start == pytest.approx(1.45)


# --- authentication -----------------------------------------------------------------------


async def test_static_token_401_is_final(aiohttp_server: AiohttpServer) -> None:
    """With a static token, 401/403 fail at once as auth failures (no retry)."""
    for status in (401, 403):
        errors: list[ApiErrorInfo] = []
        endpoint = script(code(status))
        server = await serve(aiohttp_server, endpoint)
        async with SmartDocumentorClient(api(server, retries=3), on_error=errors.append) as client:
            result = await client.poll(REF)
        assert result == PollFailed(REF, "auth", status, auth=True, api_ok=False)
        assert len(endpoint.seen) == 1
        assert [(e.error, e.status, e.will_retry) for e in errors] == [("auth", status, False)]


async def test_one_token_request_for_many_polls(aiohttp_server: AiohttpServer) -> None:
    """20 concurrent polls share one token request, which carries the documented form."""
    tokens = TokenEndpoint()
    status = script(ok())
    server = await serve(aiohttp_server, status, tokens)
    async with SmartDocumentorClient(creds(server)) as client:
        results = await asyncio.gather(*(client.poll(REF) for _ in range(20)))
        assert client.requests_sent == 21
    assert all(isinstance(r, Observed) for r in results)
    assert tokens.forms == [
        {
            "grant_type": "client_credentials",
            "scope": "WebAPI",
            "client_id": "cid",
            "client_secret": CLIENT_SECRET,
        }
    ]
    assert {s.headers["Authorization"] for s in status.seen} == {"Bearer tok-1"}


@pytest.mark.parametrize(
    ("expires_in", "still_valid", "expired"),
    [(100, 85.0, 95.0), (None, 3500.0, 3545.0), (3600, 3500.0, 3545.0)],
)
async def test_token_refetched_after_expiry(
    aiohttp_server: AiohttpServer, expires_in: int | None, still_valid: float, expired: float
) -> None:
    """The token is cached until expires_in (default 3600) minus min(60 s, 10 %)."""
    tokens = TokenEndpoint(expires_in=expires_in)
    status = script(ok())
    server = await serve(aiohttp_server, status, tokens)
    clock = FakeClock()
    async with SmartDocumentorClient(creds(server), clock=clock) as client:
        await client.poll(REF)
        clock.advance(still_valid)
        await client.poll(REF)
        assert len(tokens.forms) == 1
        clock.advance(expired - still_valid)
        await client.poll(REF)
    assert len(tokens.forms) == 2
    assert status.seen[-1].headers["Authorization"] == "Bearer tok-2"


async def test_401_refreshes_the_token_once(aiohttp_server: AiohttpServer) -> None:
    """A 401 drops the cached token, fetches a fresh one and retries the request once."""
    errors: list[ApiErrorInfo] = []

    async def status(request: web.Request) -> web.StreamResponse:
        if request.headers["Authorization"] == "Bearer tok-1":
            return web.Response(status=401)
        return web.json_response(status_body())

    tokens = TokenEndpoint()
    server = await serve(aiohttp_server, status, tokens)
    async with SmartDocumentorClient(creds(server), on_error=errors.append) as client:
        result = await client.poll(REF)
    assert isinstance(result, Observed)
    assert len(tokens.forms) == 2
    assert [(e.endpoint, e.error, e.status, e.will_retry) for e in errors] == [
        ("status", "auth", 401, True)
    ]


async def test_revoked_token_is_replaced_once(aiohttp_server: AiohttpServer) -> None:
    """A token rejected for many concurrent polls is replaced once, not once per poll."""

    async def status(request: web.Request) -> web.StreamResponse:
        if request.headers["Authorization"] == "Bearer tok-1":
            return web.Response(status=401)
        return web.json_response(status_body())

    tokens = TokenEndpoint()
    server = await serve(aiohttp_server, status, tokens)
    async with SmartDocumentorClient(creds(server)) as client:
        results = await asyncio.gather(*(client.poll(REF) for _ in range(10)))
    assert all(isinstance(r, Observed) for r in results)
    assert len(tokens.forms) == 2  # the first token, then the one replacing it


async def test_second_401_fails_as_auth(aiohttp_server: AiohttpServer) -> None:
    """A 401 with the fresh token too is an auth failure, without further attempts."""
    tokens = TokenEndpoint()
    status = script(code(401))
    server = await serve(aiohttp_server, status, tokens)
    async with SmartDocumentorClient(creds(server, retries=3)) as client:
        result = await client.poll(REF)
    assert result == PollFailed(REF, "auth", 401, auth=True, api_ok=False)
    assert len(tokens.forms) == 2
    assert len(status.seen) == 2


async def test_invalid_client(aiohttp_server: AiohttpServer) -> None:
    """A refused token request fails every waiting poll as auth, with one token request."""
    errors: list[ApiErrorInfo] = []
    body = json.dumps({"error": "invalid_client", "error_description": f"bad {CLIENT_SECRET}"})
    tokens = TokenEndpoint(refuse=code(400, {"Content-Type": "application/json"}, body))
    status = script(ok())
    server = await serve(aiohttp_server, status, tokens)
    async with SmartDocumentorClient(creds(server), on_error=errors.append) as client:
        results = await asyncio.gather(*(client.poll(REF) for _ in range(5)))
    assert results == [PollFailed(REF, "auth", 400, auth=True, api_ok=False)] * 5
    assert len(tokens.forms) == 1
    assert status.seen == []
    assert [(e.endpoint, e.error, e.status, e.will_retry) for e in errors] == [
        ("token", "auth", 400, False)
    ]
    assert "invalid_client" in errors[0].message


async def test_token_endpoint_5xx_is_retried(aiohttp_server: AiohttpServer) -> None:
    """A 5xx from the token endpoint is retried and reported with endpoint="token"."""
    errors: list[ApiErrorInfo] = []
    issue = TokenEndpoint()
    answers = iter([code(500)()])

    async def tokens(request: web.Request) -> web.StreamResponse:
        failure = next(answers, None)
        return failure if failure is not None else await issue(request)

    server = await serve(aiohttp_server, script(ok()), tokens)
    async with SmartDocumentorClient(
        creds(server), on_error=errors.append, clock=FakeClock()
    ) as client:
        assert isinstance(await client.poll(REF), Observed)
    assert [(e.endpoint, e.status, e.attempt, e.will_retry) for e in errors] == [
        ("token", 500, 1, True)
    ]


async def test_token_endpoint_down_fails_the_poll(aiohttp_server: AiohttpServer) -> None:
    """When the token endpoint keeps failing, the poll fails with its kind, not as auth."""
    tokens = TokenEndpoint(refuse=code(502))
    status = script(ok())
    server = await serve(aiohttp_server, status, tokens)
    async with SmartDocumentorClient(creds(server, retries=1), clock=FakeClock()) as client:
        result = await client.poll(REF)
    assert result == PollFailed(REF, "http_status", 502, auth=False, api_ok=False)
    assert len(tokens.forms) == 2
    assert status.seen == []


async def test_token_endpoint_unreachable() -> None:
    """A token endpoint that cannot be reached fails the poll as "connection", not auth."""
    errors: list[ApiErrorInfo] = []
    settings = api(
        f"http://127.0.0.1:{closed_port()}",
        token=None,
        client_id="cid",
        client_secret=CLIENT_SECRET,
        retries=1,
    )
    async with SmartDocumentorClient(settings, on_error=errors.append) as client:
        result = await client.poll(REF)
    assert result == PollFailed(REF, "connection", None, auth=False, api_ok=False)
    assert [(e.endpoint, e.error, e.will_retry) for e in errors] == [
        ("token", "connection", True),
        ("token", "connection", False),
    ]
    assert all(e.task_key is None for e in errors)


async def test_token_endpoint_retry_after_defers(aiohttp_server: AiohttpServer) -> None:
    """A token wait past the deadline defers every poll waiting for the token, once."""
    tokens = TokenEndpoint(refuse=code(503, {"Retry-After": "120"}))
    status = script(ok())
    server = await serve(aiohttp_server, status, tokens)
    clock = RecordingClock()
    async with SmartDocumentorClient(creds(server), clock=clock) as client:
        deadline = clock.monotonic() + 10
        results = await asyncio.gather(*(client.poll(REF, deadline=deadline) for _ in range(3)))
    until = clock.monotonic() + 60  # retry_after_max
    assert results == [Deferred(REF, until=until, error="http_status", status=503)] * 3
    assert len(tokens.forms) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"access_token": "abc.def-ghi", "expires_in": 300}', ("abc.def-ghi", 300.0)),
        (b'{"access_token": "abc", "expires_in": "120"}', ("abc", 120.0)),
        (b'{"access_token": "abc", "expires_in": 1.5}', ("abc", 1.5)),
        (b'{"access_token": "abc"}', ("abc", 3600.0)),
        (b'{"access_token": "abc", "expires_in": null}', ("abc", 3600.0)),
        (b"<html>", None),
        (b'["abc"]', None),
        (b'{"expires_in": 300}', None),
        (b'{"access_token": ""}', None),
        (b'{"access_token": "two words"}', None),
        (b'{"access_token": "line\nbreak"}', None),
        (b'{"access_token": 42}', None),
        (b'{"access_token": "abc", "expires_in": 0}', None),
        (b'{"access_token": "abc", "expires_in": "soon"}', None),
        (b'{"access_token": "abc", "expires_in": true}', None),
    ],
)
def test_parse_token_response(body: bytes, expected: tuple[str, float] | None) -> None:
    """The token answer needs a header-safe access_token; expires_in defaults to 3600 s."""
    if expected is not None:
        assert parse_token_response(body) == expected
        return
    with pytest.raises(ApiError) as caught:
        parse_token_response(body)
    assert caught.value.kind == "invalid_response"
    assert "abc" not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "suffix"),
    [
        (b'{"error": "invalid_client", "error_description": "secret!"}', "(invalid_client)"),
        (b'{"error": "Invalid Client <script>"}', "credentials"),
        (b"not json", "credentials"),
        (b"", "credentials"),
    ],
)
def test_refusal_message(body: bytes, suffix: str) -> None:
    """A refusal names only a well-formed OAuth error code, never the description."""
    message = refusal_message(400, body)
    assert message.endswith(suffix)
    assert "secret" not in message
    assert "script" not in message


async def test_connector_factory(aiohttp_server: AiohttpServer) -> None:
    """A given connector factory replaces the default connector (a seam for tests/tuning)."""
    made: list[aiohttp.BaseConnector] = []

    def factory() -> aiohttp.BaseConnector:
        made.append(aiohttp.TCPConnector(limit=1))
        return made[-1]

    server = await serve(aiohttp_server, script(ok()))
    async with SmartDocumentorClient(api(server), connector_factory=factory) as client:
        assert isinstance(await client.poll(REF), Observed)
    assert len(made) == 1
    assert made[0].closed


# --- headers, secrets, lifecycle ----------------------------------------------------------


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Wed, 21 Oct 2015 07:28:00 GMT", datetime(2015, 10, 21, 7, 28, tzinfo=UTC)),
        ("Wed, 21 Oct 2015 09:28:00 +0200", datetime(2015, 10, 21, 7, 28, tzinfo=UTC)),
        ("yesterday", None),
    ],
)
async def test_server_date(
    aiohttp_server: AiohttpServer, date: str, expected: datetime | None
) -> None:
    """The Date header becomes Observed.server_date (aware UTC), or None when unparseable."""
    server = await serve(aiohttp_server, script(ok(headers={"Date": date})))
    async with SmartDocumentorClient(api(server)) as client:
        result = await client.poll(REF)
    assert isinstance(result, Observed)
    assert result.server_date == expected


async def test_secrets_never_leak(aiohttp_server: AiohttpServer) -> None:
    """Neither the token nor the client secret appears in reports, results or reprs."""
    errors: list[ApiErrorInfo] = []
    texts: list[str] = []
    echo = f"token={TOKEN} secret={CLIENT_SECRET}"
    refused = json.dumps({"error": "invalid_client", "error_description": echo})
    status = script(code(500, body=echo), code(401, body=echo), code(403, body=echo))
    tokens = TokenEndpoint(refuse=code(401, {"Content-Type": "application/json"}, refused))
    server = await serve(aiohttp_server, status, tokens)
    for settings in (api(server, retries=1), creds(server, retries=1)):
        client = SmartDocumentorClient(settings, on_error=errors.append, clock=FakeClock())
        texts.append(repr(client))
        async with client:
            texts.append(repr(client))
            for _ in range(3):
                texts.append(repr(await client.poll(REF)))
    texts.extend(repr(e) for e in errors)
    assert len(errors) >= 4
    for text in texts:
        assert TOKEN not in text
        assert CLIENT_SECRET not in text
        assert "tok-" not in text


async def test_poll_needs_an_open_client() -> None:
    """poll() before open() or after close() is a programming error; close() is idempotent."""
    client = SmartDocumentorClient(api("http://127.0.0.1:9"))
    with pytest.raises(RuntimeError):
        await client.poll(REF)
    await client.open()
    with pytest.raises(RuntimeError):
        await client.open()
    await client.close()
    await client.close()
    with pytest.raises(RuntimeError):
        await client.poll(REF)


async def test_close_during_poll(aiohttp_server: AiohttpServer) -> None:
    """A poll whose client is closed during its backoff ends as "closed", without retrying."""
    errors: list[ApiErrorInfo] = []
    endpoint = script(code(500), ok())
    server = await serve(aiohttp_server, endpoint)

    class ClosingClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            await client.close()

    client = SmartDocumentorClient(
        api(server, retries=3), on_error=errors.append, clock=ClosingClock()
    )
    await client.open()
    result = await client.poll(REF)
    assert result == PollFailed(REF, "closed", None, auth=False, api_ok=False)
    assert len(endpoint.seen) == 1
    assert [(e.error, e.will_retry) for e in errors] == [("http_status", True), ("closed", False)]


async def test_proxy_from_environment(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY is honoured (with its credentials); NO_PROXY exempts a host."""
    proxy_seen: list[tuple[str, str]] = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        proxy_seen.append((str(request.url), request.headers.get("Proxy-Authorization", "")))
        return web.json_response(status_body())

    app = web.Application()
    app.router.add_get("/{tail:.*}", proxy)
    proxy_server = await aiohttp_server(app)
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{proxy_server.port}")
    # sd.test is never resolved: only the proxy is contacted
    settings = api("http://sd.test", allow_insecure=True)
    async with SmartDocumentorClient(settings) as client:
        assert isinstance(await client.poll(REF), Observed)
    assert proxy_seen == [(f"http://sd.test{STATUS_PATH}?taskId=44", "Basic dXNlcjpwdw==")]

    direct = script(ok())
    server = await serve(aiohttp_server, direct)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with SmartDocumentorClient(api(server)) as client:
        assert isinstance(await client.poll(REF), Observed)
    assert len(direct.seen) == 1
    assert len(proxy_seen) == 1


async def test_netrc_default_entry_is_ignored(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ~/.netrc "default" entry neither breaks the Bearer header nor replaces it."""
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    endpoint = script(ok())
    server = await serve(aiohttp_server, endpoint)
    async with SmartDocumentorClient(api(server)) as client:
        assert isinstance(await client.poll(REF), Observed)
    assert endpoint.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is required under CI=true")
        pytest.skip("openssl is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_is_verified(aiohttp_server: AiohttpServer, tmp_path: Path) -> None:
    """An unknown certificate is refused; api.ca_file makes it trusted; a bad one is config."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get(STATUS_PATH, _route(script(ok())))
    server = await aiohttp_server(app, ssl=context)
    base = f"https://127.0.0.1:{server.port}"

    errors: list[ApiErrorInfo] = []
    async with SmartDocumentorClient(api(base, retries=0), on_error=errors.append) as client:
        refused = await client.poll(REF)
    assert isinstance(refused, PollFailed)
    assert refused.error == "connection"
    assert "certificate verify failed" in errors[0].message

    async with SmartDocumentorClient(api(base, ca_file=cert)) as client:
        assert isinstance(await client.poll(REF), Observed)

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"api\.ca_file"):
        await SmartDocumentorClient(api(base, ca_file=garbage)).open()


# --- parse_task_status --------------------------------------------------------------------

T0 = datetime(2022, 3, 16, 16, 59, 55, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "attribute", "expected"),
    [
        ({}, "total_pages", 10),
        ({"createdOn": "2023-08-08T08:55:29.7831583Z"}, "created_on",
         datetime(2023, 8, 8, 8, 55, 29, 783158, tzinfo=UTC)),
        ({"createdOn": "2022-03-16T18:59:55+02:00"}, "created_on", T0),
        ({"createdOn": "2022-03-16T16:59:55"}, "created_on", T0),
        ({"createdOn": "2022-03-16T16:59:55.5-00:30"}, "created_on",
         T0 + timedelta(minutes=30, seconds=0.5)),
        ({"preProcessingStartedOn": None}, "pre_processing_started_on", None),
        ({"preProcessingStartedOn": "2022-03-16T17:00:00.1234567Z"}, "pre_processing_started_on",
         datetime(2022, 3, 16, 17, 0, 0, 123456, tzinfo=UTC)),
        ({"restartCount": None}, "restart_count", 0),
        ({"totalPages": None}, "total_pages", None),
        ({"totalPages": 0}, "total_pages", 0),
        ({"taskStatus": None}, "task_status_text", "InReview"),
        ({"taskStatusText": None}, "task_status", 4),
        ({"batchId": None, "taskNumber": None}, "batch_id", None),
        ({"externalId": "INV-0042"}, "external_id", "INV-0042"),
        ({"somethingNew": {"nested": [1]}}, "task_id", 44),
    ],
)  # fmt: skip
def test_parse_valid(changes: dict[str, Any], attribute: str, expected: object) -> None:
    """Valid variants of the status object parse to the expected field values."""
    assert getattr(parse_task_status(status_body(**changes)), attribute) == expected


def test_parse_minimal() -> None:
    """Only taskId, createdOn and one status field are required; the rest default."""
    status = parse_task_status(
        {"taskId": 1, "createdOn": "2022-03-16T16:59:55Z", "taskStatusText": "Queued"}
    )
    assert status.task_id == 1
    assert status.created_on == T0
    assert status.task_status is None
    assert status.total_pages is None
    assert status.restart_count == 0
    assert status.pre_processing_started_on is None
    assert status.display_name is None
    assert status.created_on.tzinfo is UTC


def test_parse_round_trips_to_api() -> None:
    """Parsing the example answer and writing it back gives the same object."""
    assert parse_task_status(status_body()).to_api() == status_body()


_MISSING = object()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("taskId", _MISSING),
        ("taskId", None),
        ("taskId", "44"),
        ("taskId", True),
        ("taskId", 44.0),
        ("createdOn", _MISSING),
        ("createdOn", None),
        ("createdOn", "yesterday"),
        ("createdOn", 1647449995),
        ("createdOn", "2022-13-16T16:59:55Z"),
        ("taskStatus", "abc"),
        ("taskStatus", True),
        ("taskStatus", 1.5),
        ("taskStatusText", 5),
        ("integrationStatus", "4"),
        ("integrationStatusText", 4),
        ("totalPages", -1),
        ("totalPages", "10"),
        ("totalPages", False),
        ("restartCount", -1),
        ("restartCount", "2"),
        ("preProcessingStartedOn", "soon"),
        ("preProcessingStartedOn", 0),
        ("workspaceId", "1"),
        ("batchId", [1]),
        ("taskNumber", 1.0),
        ("externalId", 42),
        ("displayName", ["x"]),
        ("description", {"text": "x"}),
    ],
)
def test_parse_wrong_type(key: str, value: object) -> None:
    """A missing required field or a wrong-typed one is invalid_response naming the field."""
    body = status_body()
    if value is _MISSING:
        del body[key]
    else:
        body[key] = value
    with pytest.raises(ApiError) as caught:
        parse_task_status(body)
    assert caught.value.kind == "invalid_response"
    assert key in str(caught.value)


@pytest.mark.parametrize("data", [[], "x", None, 5, [status_body()]])
def test_parse_not_an_object(data: object) -> None:
    """Anything but a JSON object is invalid_response."""
    with pytest.raises(ApiError, match="JSON object") as caught:
        parse_task_status(data)
    assert caught.value.kind == "invalid_response"


def test_parse_needs_a_status() -> None:
    """Without taskStatus and taskStatusText (missing or null) the object is invalid."""
    for body in (
        status_body(taskStatus=None, taskStatusText=None),
        {k: v for k, v in status_body().items() if k not in ("taskStatus", "taskStatusText")},
    ):
        with pytest.raises(ApiError, match="taskStatus") as caught:
            parse_task_status(body)
        assert caught.value.kind == "invalid_response"


def test_parse_is_fast() -> None:
    """Parsing stays cheap for 100,000 tasks per cycle: far below 100 µs a task, even traced."""
    body = status_body(createdOn="2023-08-08T08:55:29.7831583Z")
    start = time.perf_counter()
    for _ in range(5_000):
        parse_task_status(body)
    assert time.perf_counter() - start < 1.0
