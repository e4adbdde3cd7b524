"""The lifecycle owner: creates the resources, the scheduler and the signal handlers, runs until
asked to stop, drains within a deadline and tears everything down.

Only this module creates the HTTP session (through the client) and the scheduler; resources
go into one ``AsyncExitStack``. Signal handlers only set flags; a second SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from watchdog.client import SmartDocumentorClient
from watchdog.clock import Clock, SystemClock
from watchdog.cycle import CycleReport, Watcher
from watchdog.errors import WatchdogError
from watchdog.logs import Logger, get_logger
from watchdog.models import ApiErrorInfo
from watchdog.notify import Notifier
from watchdog.settings import Settings, redact_url
from watchdog.store import Store
from watchdog.tasks import watched_tasks

HOUSEKEEPING_INTERVAL = 3600.0

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_CRASHED = 4
EXIT_FORCED = 130


class App:
    """``sd-watchdog run``: poll on a schedule until SIGTERM/SIGINT."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        log: Logger | None = None,
        on_cycle: Callable[[CycleReport], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self._log = log or get_logger()
        self._on_cycle = on_cycle
        self._stop = asyncio.Event()
        self._stopping = False
        self._forced = False
        self._crash: BaseException | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._main: asyncio.Task[Any] | None = None
        self.watcher: Watcher | None = None
        self.store: Store | None = None
        self.notifier: Notifier | None = None
        self.cycles_completed = 0

    # --- signals (handlers only set flags; tests call this directly) ------------------------

    def handle_signal(self, sig: int) -> None:
        if self._stopping and sig == signal.SIGINT:
            self._forced = True
            if self._main is not None:
                self._main.cancel()
            return
        self._stopping = True
        self._stop.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_signal, sig)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    # --- the one serve method -------------------------------------------------------------

    async def serve(self, *, install_signals: bool = True) -> int:
        """Run until stopped; return the process exit code."""
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        try:
            async with AsyncExitStack() as stack:
                scheduler = await self._start(stack)
                if install_signals:
                    self._install_signals(loop)
                    stack.callback(self._remove_signals, loop)
                await self._stop.wait()
                return await self._drain(scheduler)
        except asyncio.CancelledError:
            if self._forced:
                self._log.warning("watchdog.stopped", reason="forced", exit_code=EXIT_FORCED)
                return EXIT_FORCED
            raise

    async def _start(self, stack: AsyncExitStack) -> AsyncIOScheduler:
        settings = self.settings
        refs = watched_tasks(settings.tasks)

        def report_error(info: ApiErrorInfo) -> None:
            if self.watcher is not None:
                self.watcher.on_api_error(info)

        store = self.store = Store(settings.state.path)
        store.open()  # StoreError (exit 3) before anything else starts
        stack.callback(store.close)
        client = SmartDocumentorClient(settings.api, on_error=report_error, clock=self._clock)
        await client.open()
        stack.push_async_callback(client.close)
        notifier = self.notifier = Notifier(settings, store, self._clock, self._log)
        self.watcher = Watcher(
            settings, client, self._clock, log=self._log, store=store, notifier=notifier
        )
        self.watcher.restore(store.load())
        self.watcher.set_tasks(refs)
        if not refs:
            self._log.warning("config.no_tasks")
        await notifier.start()
        stack.push_async_callback(notifier.close)

        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self._tick,
            "interval",
            seconds=settings.poll.interval,
            next_run_time=self._clock.now(),  # the first cycle runs at start-up
            id="poll-cycle",
            name="poll-cycle",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        scheduler.add_job(
            self._housekeeping,
            "interval",
            seconds=HOUSEKEEPING_INTERVAL,
            id="housekeeping",
            name="housekeeping",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        if settings.alerts.alertmanager.urls:
            resend = settings.alerts.alertmanager.resend_interval
            scheduler.add_job(
                self._resend,
                "interval",
                seconds=resend,
                id="alertmanager-resend",
                name="alertmanager-resend",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        scheduler.start()
        stack.callback(_shutdown_scheduler, scheduler)
        self._log.info(
            "watchdog.started",
            tasks=len(refs),
            interval_s=settings.poll.interval,
            api=redact_url(settings.api.base_url),
            server=None,
            state_path=str(settings.state.path),
        )
        return scheduler

    async def _tick(self) -> None:
        if self._stopping:
            return
        task = asyncio.create_task(self._cycle(), name=f"poll-cycle-{self.cycles_completed + 1}")
        self._inflight = task
        # APScheduler 3 cancels running coroutine jobs at shutdown; the drain owns the cycle.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    async def _cycle(self) -> None:
        assert self.watcher is not None  # noqa: S101 (set before the scheduler starts)
        try:
            report = await self.watcher.run_cycle()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (the cycle is the last catch; this is fatal)
            self._fatal(exc)
            return
        self.cycles_completed += 1
        if self._on_cycle is not None:
            self._on_cycle(report)

    async def _housekeeping(self) -> None:
        """Prune what ``[state] retention`` allows and give the space back."""
        if self.store is None or self.watcher is None or self._stopping:
            return
        try:
            self.store.prune(
                now=self._clock.now().timestamp(),
                retention=self.settings.state.retention,
                watched=self.watcher.tasks.keys(),
            )
        except WatchdogError as exc:
            self._fatal(exc)

    async def _resend(self) -> None:
        """Re-push every firing alert to Alertmanager so its endsAt keeps moving."""
        if self.store is None or self.watcher is None or self.notifier is None:
            return
        if self._stopping:
            return
        firing = [a for s in self.watcher.tasks.values() for a in s.firing()]
        firing += [a for a in self.watcher.api_alerts.values() if a.firing]
        if not firing:
            return
        deliveries, superseded = self.notifier.plan_resend(firing, self.watcher.statuses())
        try:
            self.store.save(
                now=self._clock.now().timestamp(),
                deliveries=deliveries,
                superseded_kinds=superseded,
            )
        except WatchdogError as exc:
            self._fatal(exc)
            return
        self.notifier.wake()

    def _fatal(self, exc: BaseException) -> None:
        self._crash = exc
        self._stopping = True
        self._stop.set()

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        if event.job_id != "poll-cycle":
            return
        self._log.warning(
            "cycle.overrun",
            scheduled_at=event.scheduled_run_time.isoformat() if event.scheduled_run_time else None,
            interval_s=self.settings.poll.interval,
        )

    async def _drain(self, scheduler: AsyncIOScheduler) -> int:
        scheduler.pause()
        timeout = self.settings.poll.shutdown_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        reason = "signal"
        cancelled = 0
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            done, _ = await asyncio.wait({inflight}, timeout=timeout)
            if not done:
                inflight.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await inflight
                reason = "deadline"
                cancelled = 1
        undelivered = 0
        if self.notifier is not None and self.notifier.enabled and self._crash is None:
            remaining = deadline - asyncio.get_running_loop().time()
            if not await self.notifier.drain(remaining):
                reason = "deadline"
            if self.store is not None:
                undelivered = self.store.outbox_depth()
        if self._crash is not None:
            exc = self._crash
            self._log.error(
                "watchdog.crashed",
                error=type(exc).__name__,
                message=str(exc)[:500],
                exc_info=exc,
            )
            return EXIT_CRASHED
        self._log.info(
            "watchdog.stopped",
            reason=reason,
            cycles=self.cycles_completed,
            cancelled_cycles=cancelled,
            undelivered=undelivered,
        )
        return EXIT_OK


def _shutdown_scheduler(scheduler: AsyncIOScheduler) -> None:
    with contextlib.suppress(WatchdogError, RuntimeError):
        scheduler.shutdown(wait=False)
