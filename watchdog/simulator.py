"""A fake SmartDocumentor: the status, token and reprocess endpoints, scripted tasks, faults.

Used by ``sd-watchdog demo``, by the tests (a real HTTP server on 127.0.0.1) and by the
benchmarks (``python -m watchdog.simulator --port 0 --tasks 100000``, in its own process)::

    sim = Simulator(demo_scenarios(scale=2.0), token="t", clock=clock)
    base_url = await sim.start()          # http://127.0.0.1:<port>
    sim.set_faults(latency=0.2)           # or POST /_sim/faults {"latency": 0.2}
    sim.set_faults(101, down=True)        # per task: {"tasks": {"101": {"down": true}}}
    await sim.stop()

Two clocks: the task timeline (createdOn, script steps, token expiry, the ``Date`` header) runs
on the injected ``Clock``, so tests move it with ``FakeClock.advance``; network behaviour
(latency, held requests) runs in real time, because that is what a client's timeouts measure.
``date_skew`` (seconds) puts the server's clock ahead of (or behind) that clock: ``Date`` and
every timestamp in a status answer move together, as on a real server with a wrong clock.

Control endpoints (no auth; the simulator is meant for loopback):
``GET``/``POST /_sim/faults`` read / change faults (partial updates; ``"reset": true`` clears
first; ``"tasks": {"<id>": {...} | null}``; ``"date_skew": seconds``), ``GET /_sim/stats``,
``DELETE /_sim/stats`` (reset the counters). They are not counted in the stats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import http
import random
import signal
import sys
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from watchdog.clock import Clock, SystemClock
from watchdog.scenarios import (
    Run,
    Scenario,
    ScenarioSet,
    Snapshot,
    TaskSource,
    bulk,
    demo_scenarios,
    restart,
    settle,
    snapshot,
)

STATUS_PATH = "/api/v1.0/external/sdtask/status"
RESTART_PATH = "/api/v1.0/external/sdtask/restartprocessing"
TOKEN_PATH = "/connect/token"  # noqa: S105  # a URL path, not a password
_API_ROUTES = frozenset({"status", "restart", "token"})
_MAX_TOKENS = 10_000  # issued tokens kept; the oldest go first (a client should cache its token)


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, globally or for one task. Rates are probabilities per request.

    ``down`` answers 503 at once; ``hang`` never answers (until the server stops); ``latency``
    delays every answer. Then one seeded draw picks at most one of: a timeout (held
    ``timeout_hold`` s, then 504), a 5xx, a 429 (with ``Retry-After: retry_after`` unless None),
    malformed JSON, an HTML error page (``html_status``), a ``huge_bytes`` JSON body.
    """

    latency: float = 0.0
    timeout_rate: float = 0.0
    timeout_hold: float = 30.0
    error_rate: float = 0.0
    error_status: int = 500
    throttle_rate: float = 0.0
    retry_after: str | None = "1"
    malformed_rate: float = 0.0
    html_rate: float = 0.0
    html_status: int = 502
    huge_rate: float = 0.0
    huge_bytes: int = 2 * 1024 * 1024
    down: bool = False
    hang: bool = False

    def __post_init__(self) -> None:
        rates = [self.timeout_rate, self.error_rate, self.throttle_rate]
        rates += [self.malformed_rate, self.html_rate, self.huge_rate]
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must be in [0, 1] and add up to at most 1")
        if self.latency < 0 or self.timeout_hold < 0 or self.huge_bytes < 0:
            raise ValueError("latency, timeout_hold and huge_bytes must be ≥ 0")
        if not 500 <= self.error_status <= 599 or not 200 <= self.html_status <= 599:
            raise ValueError("error_status must be 5xx and html_status a valid HTTP status")
        if self.retry_after is not None and not self.retry_after.isprintable():
            raise ValueError("retry_after must be a printable header value")

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with ``changes`` (JSON-ish values) applied; ValueError names a bad key."""
        current = asdict(self)
        unknown = set(changes) - set(current)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        values = {key: _coerce(key, value, current[key]) for key, value in changes.items()}
        return replace(self, **values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def picks(self, draw: float) -> str | None:
        """The random fault that a draw in [0, 1) selects, if any."""
        edge = 0.0
        for f in fields(self):
            if f.name.endswith("_rate"):
                edge += getattr(self, f.name)
                if draw < edge:
                    return f.name.removesuffix("_rate")
        return None


def _coerce(key: str, value: object, current: object) -> Any:
    if isinstance(value, bool):  # before int: a bool is an int
        if isinstance(current, bool):
            return value
    elif isinstance(value, int | float):
        if key == "retry_after":
            return f"{value:g}"
        if isinstance(current, float):
            return float(value)
        if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, int):
            return value
    elif key == "retry_after" and (value is None or isinstance(value, str)):
        return value
    raise ValueError(f"{key}: bad value {value!r}")


class Stats:
    """Request counters of the API endpoints, bounded in memory whatever the load."""

    def __init__(self, seconds: int = 3600, recent: int = 4096) -> None:
        self.per_second: deque[list[int]] = deque(maxlen=seconds)  # [second, requests]
        self.recent: deque[float] = deque(maxlen=recent)  # arrival times, simulator seconds
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero everything but the requests in flight (they are still running)."""
        self.total = 0
        self.by_endpoint: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.max_in_flight = self.in_flight
        self.per_second.clear()
        self.recent.clear()

    def begin(self, endpoint: str, at: float) -> None:
        self.total += 1
        self.by_endpoint[endpoint] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.recent.append(at)
        second = int(at)
        if self.per_second and self.per_second[-1][0] == second:
            self.per_second[-1][1] += 1
        else:
            self.per_second.append([second, 1])

    def end(self, status: int | None) -> None:
        self.in_flight -= 1
        if status is not None:
            self.by_status[status] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "max_per_second": max((n for _, n in self.per_second), default=0),
            "per_second": [list(p) for p in self.per_second],
            "recent": list(self.recent),
        }


def api_time(value: datetime) -> str:
    """The API's timestamp style: UTC, ``Z``, 7 fractional digits when there is a fraction."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}0"
    return text + "Z"


class Simulator:
    """The fake SmartDocumentor. ``tasks``: scenarios and task sources (e.g. ``bulk(n)``).

    Authentication: a request needs ``Bearer <token>`` or a token issued by ``/connect/token``
    (with ``client_id`` / ``client_secret``) that has not expired; when neither a token nor
    client credentials are configured, every request is accepted.
    """

    def __init__(
        self,
        tasks: Iterable[Scenario | TaskSource] = (),
        *,
        token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        expires_in: int = 3600,
        clock: Clock | None = None,
        faults: Faults | None = None,
        task_faults: Mapping[int, Mapping[str, object]] | None = None,
        date_skew: float = 0.0,
        seed: int = 0,
    ) -> None:
        items = list(tasks)
        self.scenarios = ScenarioSet(t for t in items if isinstance(t, Scenario))
        others = [t for t in items if not isinstance(t, Scenario)]
        for sc in self.scenarios:
            for source in others:
                if source.find_id(sc.task_id) or (
                    sc.external_id and source.find_external(sc.external_id)
                ):
                    raise ValueError(f"scenario {sc.name!r}: its task is also in {source!r}")
        self._sources: list[TaskSource] = [self.scenarios, *others]
        self._token = token
        self._client = (client_id, client_secret) if client_id and client_secret else None
        self._expires_in = expires_in
        self._clock: Clock = clock or SystemClock()
        self._faults = faults or Faults()
        self._task_changes: dict[int, dict[str, object]] = {}
        self._task_faults: dict[int, Faults] = {}
        for task_id, changes in (task_faults or {}).items():
            self.set_faults(task_id, **changes)
        self.date_skew = date_skew
        self._rng = random.Random(seed)
        self._token_rng = random.Random(seed + 1)  # own stream: tokens never shift fault draws
        self.stats = Stats()
        self._tokens: dict[str, float] = {}
        self._runs: dict[int, Run] = {}
        self._epoch: tuple[datetime, float] | None = None
        self._closing: asyncio.Event | None = None
        self._huge: tuple[int, bytes] = (0, b"")
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # --- time -----------------------------------------------------------------------

    def _origin(self) -> tuple[datetime, float]:
        """The wall and monotonic time of the start (taken at app start-up, or first use)."""
        if self._epoch is None:
            self._epoch = (self._clock.now(), self._clock.monotonic())
        return self._epoch

    def elapsed(self) -> float:
        """Seconds since the simulator started (the scripts' timeline)."""
        return self._clock.monotonic() - self._origin()[1]

    def at(self, elapsed: float) -> datetime:
        """The simulated server's wall time ``elapsed`` seconds after its start.

        ``date_skew`` sets the server's clock apart from ours, so it shifts every timestamp it
        writes (createdOn, preProcessingStartedOn) as well as its ``Date`` header.
        """
        return self._origin()[0] + timedelta(seconds=elapsed + self.date_skew)

    def now(self) -> datetime:
        return self.at(self.elapsed())

    # --- faults ---------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def faults_for(self, task_id: int | None) -> Faults:
        if task_id is None:
            return self._faults
        return self._task_faults.get(task_id, self._faults)

    def set_faults(self, task_id: int | None = None, /, **changes: object) -> None:
        """Change the global faults, or (with a task ID) override some of them for one task."""
        if task_id is None:
            self._faults = self._faults.updated(changes)
        else:
            merged = {**self._task_changes.get(task_id, {}), **changes}
            self._faults.updated(merged)  # validate before storing
            self._task_changes[task_id] = merged
        self._task_faults = {t: self._faults.updated(c) for t, c in self._task_changes.items()}

    def clear_faults(self, task_id: int | None = None) -> None:
        """Forget one task's overrides, or (no argument) every fault."""
        if task_id is None:
            self._faults, self._task_changes = Faults(), {}
        else:
            self._task_changes.pop(task_id, None)
        self._task_faults = {t: self._faults.updated(c) for t, c in self._task_changes.items()}

    def control(self, payload: Mapping[str, object]) -> None:
        """Apply a ``POST /_sim/faults`` document, all or nothing (ValueError when invalid)."""
        saved = (self._faults, dict(self._task_changes), self.date_skew)
        try:
            changes = dict(payload)
            if changes.pop("reset", False) is True:
                self.clear_faults()
            skew = changes.pop("date_skew", self.date_skew)
            if not isinstance(skew, int | float) or isinstance(skew, bool):
                raise ValueError("date_skew must be a number of seconds")
            self.date_skew = float(skew)
            tasks = changes.pop("tasks", {})
            if not isinstance(tasks, Mapping):
                raise ValueError("tasks must map task IDs to fault settings")
            self.set_faults(None, **changes)
            for key, task_changes in tasks.items():
                if not str(key).isdigit():
                    raise ValueError(f"tasks: {key!r} is not a task ID")
                if task_changes is None:
                    self.clear_faults(int(key))
                elif isinstance(task_changes, Mapping):
                    self.set_faults(int(key), **task_changes)
                else:
                    raise ValueError(f"tasks.{key}: expected an object or null")
        except (ValueError, TypeError):
            self._faults, self._task_changes, self.date_skew = saved
            self._task_faults = {t: self._faults.updated(c) for t, c in saved[1].items()}
            raise

    def faults_json(self) -> dict[str, Any]:
        return {
            "global": self._faults.to_json(),
            "tasks": {str(t): c for t, c in self._task_changes.items()},
            "date_skew": self.date_skew,
        }

    # --- tasks ----------------------------------------------------------------------

    def find(self, task_id: int | None = None, external_id: str | None = None) -> Scenario | None:
        for source in self._sources:
            found = (
                source.find_id(task_id)
                if task_id is not None
                else source.find_external(external_id or "")
            )
            if found is not None:
                return found
        return None

    def _run(self, sc: Scenario, elapsed: float) -> Run | None:
        run = settle(sc, self._runs.get(sc.task_id), elapsed)
        if run is not None:
            self._runs[sc.task_id] = run
        return run

    def task_state(self, sc: Scenario) -> Snapshot | None:
        """What the status endpoint shows for ``sc`` now (None: 404)."""
        elapsed = self.elapsed()
        return snapshot(sc, elapsed, self._run(sc, elapsed))

    def restart(self, sc: Scenario) -> bool:
        """Reprocess a task now, as ``PATCH restartprocessing`` does; False when it is a 404."""
        elapsed = self.elapsed()
        run = restart(sc, self._run(sc, elapsed), elapsed)
        if run is None:
            return False
        self._runs[sc.task_id] = run
        return True

    def render(self, sc: Scenario, snap: Snapshot) -> dict[str, Any]:
        """A GetTaskStatusResponse in the API's field names and order."""
        body: dict[str, Any] = {
            "taskId": sc.task_id,
            "workspaceId": sc.workspace_id,
            "batchId": sc.batch_id,
            "taskNumber": sc.task_id,
            "externalId": sc.external_id,
            "displayName": sc.display_name,
            "description": sc.description,
            "createdOn": api_time(self.at(sc.created)),
            "taskStatus": snap.status[0],
            "integrationStatus": snap.integration[0],
            "taskStatusText": snap.status[1],
            "integrationStatusText": snap.integration[1],
            "totalPages": snap.pages,
        }
        if snap.restart_count is not None:  # the API omits it until the first reprocess
            body["restartCount"] = snap.restart_count
        body["preProcessingStartedOn"] = (
            None if snap.started is None else api_time(self.at(snap.started))
        )
        return body

    # --- HTTP -----------------------------------------------------------------------

    @property
    def app(self) -> web.Application:
        """The aiohttp application (built once; serve it with ``start`` or a test server)."""
        if self._app is None:
            app = web.Application(middlewares=[self._middleware])
            app.router.add_get(STATUS_PATH, self._status, name="status")
            app.router.add_patch(RESTART_PATH, self._restart, name="restart")
            app.router.add_post(TOKEN_PATH, self._issue_token, name="token")
            app.router.add_get("/_sim/faults", self._get_faults)
            app.router.add_post("/_sim/faults", self._post_faults)
            app.router.add_get("/_sim/stats", self._get_stats)
            app.router.add_delete("/_sim/stats", self._reset_stats)
            app.on_startup.append(self._on_startup)
            app.on_shutdown.append(self._on_shutdown)
            app.on_response_prepare.append(self._on_prepare)
            self._app = app
        return self._app

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the simulator is not running (call start())")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        # Held requests end when the server stops, so a short shutdown timeout loses nothing.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{runner.addresses[0][1]}"
        return self._base_url

    async def stop(self) -> None:
        """Stop serving; requests being held (hang, timeout, latency) are let go first."""
        runner, self._runner, self._base_url = self._runner, None, None
        if runner is not None:
            self._closing_event().set()
            await runner.cleanup()

    async def _on_startup(self, app: web.Application) -> None:
        self.elapsed()  # the scripts' time zero
        self._closing_event()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing_event().set()

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[hdrs.DATE] = format_datetime(self.now().astimezone(UTC), usegmt=True)

    def _closing_event(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    async def _hold(self, seconds: float | None) -> None:
        """Wait ``seconds`` (None: forever) of real time, but never past the server's stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing_event().wait()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = request.match_info.route.name
        if endpoint not in _API_ROUTES:
            return await handler(request)
        self.stats.begin(endpoint, self.elapsed())
        status: int | None = None
        try:
            response = await self._inject_fault(request) or await handler(request)
            status = response.status
            return response
        finally:
            self.stats.end(status)

    async def _inject_fault(self, request: web.Request) -> web.StreamResponse | None:
        faults = self._faults
        if self._task_faults:
            params = _task_params(request)
            sc = self.find(*params) if params else None
            faults = self.faults_for(sc.task_id if sc else None)
        if faults.down:
            return web.Response(status=503, text="Service Unavailable")
        if faults.hang:
            await self._hold(None)
            return web.Response(status=503)
        if faults.latency:
            await self._hold(faults.latency)
        match faults.picks(self._rng.random()):
            case "timeout":
                await self._hold(faults.timeout_hold)
                return web.Response(status=504)
            case "error":
                problem = {"title": http.HTTPStatus(faults.error_status).phrase}
                return web.json_response(
                    {**problem, "status": faults.error_status},
                    status=faults.error_status,
                    content_type="application/problem+json",
                )
            case "throttle":
                retry = {} if faults.retry_after is None else {"Retry-After": faults.retry_after}
                return web.Response(status=429, headers=retry)
            case "malformed":
                return web.Response(body=b'{"taskId": 1, "taskStatus": ', content_type=_JSON)
            case "html":
                title = f"{faults.html_status} {http.HTTPStatus(faults.html_status).phrase}"
                page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body>"
                return web.Response(
                    status=faults.html_status, text=page + "</html>", content_type="text/html"
                )
            case "huge":
                return web.Response(body=self._huge_body(faults.huge_bytes), content_type=_JSON)
        return None

    def _huge_body(self, size: int) -> bytes:
        """Valid JSON of exactly ``size`` bytes (at least the padding's frame); one is cached."""
        if self._huge[0] != size:
            frame = b'{"padding": ""}'
            self._huge = (size, frame[:-2] + b"x" * max(0, size - len(frame)) + frame[-2:])
        return self._huge[1]

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None and self._client is None:
            return True
        scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            return False
        if self._token is not None and _same(value, self._token):
            return True
        expiry = self._tokens.get(value)
        return expiry is not None and self._clock.monotonic() < expiry

    async def _status(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _unauthorized()
        params = _task_params(request)
        if params is None:
            return web.Response(status=400)
        sc = self.find(*params)
        snap = None if sc is None else self.task_state(sc)
        if sc is None or snap is None:
            return web.Response(status=404)
        return web.json_response(self.render(sc, snap))

    async def _restart(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _unauthorized()
        params = _task_params(request)
        if params is None:
            return web.Response(status=400)
        sc = self.find(*params)
        if sc is None or not self.restart(sc):
            return web.Response(status=404)
        return web.Response(status=204)

    async def _issue_token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        field = {key: value for key, value in form.items() if isinstance(value, str)}
        if self._client is None or not (
            _same(field.get("client_id", ""), self._client[0])
            and _same(field.get("client_secret", ""), self._client[1])
        ):
            return web.json_response({"error": "invalid_client"}, status=400)
        if field.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if field.get("scope", "WebAPI") != "WebAPI":
            return web.json_response({"error": "invalid_scope"}, status=400)
        now = self._clock.monotonic()
        if len(self._tokens) >= _MAX_TOKENS:
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            while len(self._tokens) >= _MAX_TOKENS:
                del self._tokens[next(iter(self._tokens))]
        token = f"sim-{self._token_rng.getrandbits(128):032x}"
        self._tokens[token] = now + self._expires_in
        return web.json_response(
            {
                "access_token": token,
                "expires_in": self._expires_in,
                "token_type": "Bearer",
                "scope": "WebAPI",
            }
        )

    async def _get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults_json())

    async def _post_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise ValueError("expected a JSON object")
            self.control(payload)
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults_json())

    async def _get_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats.to_json())

    async def _reset_stats(self, request: web.Request) -> web.StreamResponse:
        self.stats.reset()
        return web.Response(status=204)


_JSON = "application/json"


def _same(given: str, expected: str) -> bool:
    """Constant-time equality, on bytes: compare_digest refuses non-ASCII str (was a 500)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _unauthorized() -> web.Response:
    return web.Response(status=401, headers={hdrs.WWW_AUTHENTICATE: 'Bearer error="invalid_token"'})


def _task_params(request: web.Request) -> tuple[int | None, str | None] | None:
    """(taskId, externalId) from the query — ``taskid`` in any case — or None for a 400."""
    task_id: int | None = None
    external_id: str | None = None
    for key, value in request.query.items():
        name = key.lower()
        if name == "taskid":
            try:
                task_id = int(value)
            except ValueError:
                return None
        elif name == "externalid" and value:
            external_id = value
    if task_id is None and external_id is None:
        return None
    return task_id, external_id


# --- python -m watchdog.simulator ----------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m watchdog.simulator",
        description="Serve a fake SmartDocumentor; prints its base URL when ready.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    p.add_argument("--tasks", type=int, default=0, help="generated tasks, IDs from --first-id")
    p.add_argument("--first-id", type=int, default=1)
    p.add_argument("--demo", action="store_true", help="add the demo scenarios (IDs 101…)")
    p.add_argument("--scale", type=float, default=1.0, help="seconds per scenario time unit")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of 5xx answers")
    p.add_argument("--token", default=None, help="a static bearer token to accept")
    p.add_argument("--client-id", default=None)
    p.add_argument("--client-secret", default=None)
    p.add_argument("--expires-in", type=int, default=3600, help="issued token lifetime, s")
    p.add_argument("--seed", type=int, default=0)
    return p


async def _serve(args: argparse.Namespace) -> None:
    tasks: list[Scenario | TaskSource] = []
    if args.demo:
        tasks.extend(demo_scenarios(scale=args.scale))
    if args.tasks:
        tasks.append(bulk(args.tasks, first_id=args.first_id, scale=args.scale, seed=args.seed))
    sim = Simulator(
        tasks,
        token=args.token,
        client_id=args.client_id,
        client_secret=args.client_secret,
        expires_in=args.expires_in,
        faults=Faults(latency=args.latency, error_rate=args.error_rate),
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(await sim.start(args.host, args.port), flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGTERM/SIGINT: 0 clean stop, 2 bad options, 3 cannot listen."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except ValueError as exc:  # a bad combination of options, found when building
        parser.error(str(exc))
    except OSError as exc:  # e.g. the port is taken
        print(f"simulator: {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
