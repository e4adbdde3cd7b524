"""The daemon's own HTTP endpoint: /healthz, /readyz, /metrics and /tasks.

Liveness and readiness never depend on SmartDocumentor being reachable: a SaaS outage must not
restart the watchdog nor take its pod out of service (the API's state is in /metrics and the
``api_unavailable`` alert). /tasks shows task names, so on a non-loopback bind it answers 404
unless ``expose_tasks`` is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from watchdog.alerts import Alert
from watchdog.cycle import Watcher
from watchdog.errors import StartupError
from watchdog.metrics import Metrics
from watchdog.models import iso
from watchdog.settings import ServerSettings, is_loopback_host


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    ready: bool
    detail: dict[str, Any]


class HealthServer:
    """Inert until ``start``; ``health`` is asked on every probe."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        health: Callable[[], Health],
        metrics: Metrics,
        watcher: Callable[[], Watcher | None],
    ) -> None:
        self._settings = settings
        self._health = health
        self._metrics = metrics
        self._watcher = watcher
        self._runner: web.AppRunner | None = None
        self.address: str | None = None

    @property
    def tasks_visible(self) -> bool:
        address = self._settings.address
        return address is not None and (self._settings.expose_tasks or is_loopback_host(address[0]))

    async def start(self) -> str | None:
        """Bind and serve; returns the bound address ("host:port"), None when disabled."""
        address = self._settings.address
        if address is None:
            return None
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_view)
        app.router.add_get("/tasks", self._tasks)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = address
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"cannot listen on {self._settings.listen} ([server] listen): {exc.strerror or exc}"
            ) from exc
        self._runner = runner
        bound = runner.addresses[0] if runner.addresses else (host, port)
        bound_host, bound_port = bound[0], bound[1]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self.address = f"{shown}:{bound_port}"
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        health = self._health()
        body = {"status": "ok" if health.healthy else "stalled", **health.detail}
        return web.json_response(body, status=200 if health.healthy else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        health = self._health()
        body = {"status": "ready" if health.ready else "starting", **health.detail}
        return web.json_response(body, status=200 if health.ready else 503)

    async def _metrics_view(self, request: web.Request) -> web.Response:
        payload = generate_latest(self._metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _tasks(self, request: web.Request) -> web.Response:
        if not self.tasks_visible:
            raise web.HTTPNotFound()
        watcher = self._watcher()
        tasks = [] if watcher is None else [_task_view(s) for s in watcher.tasks.values()]
        api = [] if watcher is None else [_alert_view(a) for a in watcher.api_alerts.values()]
        body = {"tasks": tasks, "api_alerts": [a for a in api if a["status"] == "firing"]}
        return web.Response(text=json.dumps(body, default=str), content_type="application/json")


def _alert_view(alert: Alert) -> dict[str, Any]:
    return {
        "rule": alert.rule.value,
        "severity": alert.severity.label,
        "status": alert.status.value,
        "fingerprint": alert.fingerprint,
        "summary": alert.summary,
        "starts_at": iso(alert.starts_at),
        "flapping": alert.flapping,
    }


def _task_view(state: Any) -> dict[str, Any]:
    status = state.status
    return {
        "key": state.ref.key,
        "task_id": state.ref.task_id
        if state.ref.task_id is not None
        else (status.task_id if status else None),
        "external_id": state.ref.external_id
        if state.ref.external_id is not None
        else (status.external_id if status else None),
        "phase": state.phase_name,
        "last_outcome": state.last_outcome,
        "polled_at": iso(state.polled_at),
        "status": status.to_api() if status is not None else None,
        "alerts": [_alert_view(a) for a in state.firing()],
    }
