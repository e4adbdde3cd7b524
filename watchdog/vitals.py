"""Is the daemon alive and ready? Tracked from the scheduler loop, never from the SaaS.

Also the two outward signs of life that depend on it: systemd's WATCHDOG=1 pings and the
``[alerts.heartbeat]`` dead-man's-switch GET after every completed cycle.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from watchdog.clock import Clock
from watchdog.logs import VERSION, Logger
from watchdog.metrics import Metrics
from watchdog.server import Health
from watchdog.settings import redact_url
from watchdog.systemd import SystemdNotifier


class Vitals:
    """Liveness: cycles keep starting (a wedged scheduler or a cycle stuck far past its
    interval is not alive). Readiness: config loaded, store open, first cycle completed."""

    def __init__(self, interval: float, clock: Clock) -> None:
        self._clock = clock
        self.stall_after = max(3 * interval, 60.0)
        self._activity = clock.monotonic()
        self.ready = False
        self.stopping = False
        self.cycles = 0
        self.in_cycle = False

    def cycle_started(self) -> None:
        self._activity = self._clock.monotonic()
        self.in_cycle = True

    def cycle_finished(self) -> None:
        self._activity = self._clock.monotonic()
        self.in_cycle = False
        self.cycles += 1
        self.ready = True

    def health(self) -> Health:
        quiet = self._clock.monotonic() - self._activity
        healthy = not self.stopping and quiet <= self.stall_after
        return Health(
            healthy=healthy,
            ready=self.ready and not self.stopping,
            detail={
                "cycles": self.cycles,
                "in_cycle": self.in_cycle,
                "seconds_since_cycle_activity": round(quiet, 3),
                "version": VERSION,
            },
        )


async def systemd_watchdog(vitals: Vitals, systemd: SystemdNotifier) -> None:
    """Ping WATCHDOG=1 at half systemd's interval while alive, so a wedged loop is restarted."""
    interval = systemd.watchdog_interval
    if interval is None:
        return
    while True:
        if vitals.health().healthy:
            systemd.ping()
        await asyncio.sleep(interval / 2)


class Heartbeat:
    """GET the dead-man's-switch URL after every completed cycle (healthchecks.io-style)."""

    def __init__(self, url: str, timeout: float, log: Logger, metrics: Metrics) -> None:
        self._url = url
        self._timeout = timeout
        self._log = log
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._url:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": f"sd-watchdog/{VERSION}"},
            )

    def beat(self) -> None:
        """Start one ping; at most one in flight, tracked so shutdown can wait or cancel it."""
        if self._session is None or self._pending:
            return
        task = asyncio.create_task(self._ping(), name="heartbeat")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _ping(self) -> None:
        assert self._session is not None  # noqa: S101 (beat checks it)
        try:
            async with self._session.get(self._url, allow_redirects=False) as response:
                await response.content.read(4096)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._fail(None, type(exc).__name__)
            return
        if 200 <= status < 300:
            self._metrics.heartbeats.labels("ok").inc()
        else:
            self._fail(status, "http_status")

    def _fail(self, status: int | None, error: str) -> None:
        self._metrics.heartbeats.labels("failed").inc()
        self._log.warning(
            "alert.delivery_failed",
            receiver=redact_url(self._url),
            receiver_kind="heartbeat",
            status=status,
            error=error,
            will_retry=False,  # the next completed cycle pings again
        )

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
