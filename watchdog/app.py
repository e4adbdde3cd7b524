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
from watchdog.errors import EXIT_CRASHED, EXIT_FORCED, EXIT_OK, ConfigError, WatchdogError
from watchdog.logs import Logger, get_logger
from watchdog.metrics import Metrics
from watchdog.models import ApiErrorInfo, iso
from watchdog.notify import Notifier
from watchdog.server import HealthServer
from watchdog.settings import Settings, redact_url
from watchdog.store import Store
from watchdog.systemd import SystemdNotifier
from watchdog.tasks import file_signature, watched_tasks
from watchdog.vitals import Heartbeat, Vitals, systemd_watchdog

HOUSEKEEPING_INTERVAL = 3600.0


class App:
    """``sd-watchdog run``: poll on a schedule until SIGTERM/SIGINT."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        log: Logger | None = None,
        on_cycle: Callable[[CycleReport], None] | None = None,
        reload: Callable[[], Settings] | None = None,
        systemd: SystemdNotifier | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self._log = log or get_logger()
        self._on_cycle = on_cycle
        self._reload = reload
        self._systemd = systemd or SystemdNotifier()
        self.metrics = Metrics()
        self.vitals = Vitals(settings.poll.interval, self._clock)
        self._lock = asyncio.Lock()  # a cycle and a reload never run at the same time
        self._tasks_file: tuple[int, int, int] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.server: HealthServer | None = None
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
        if sig == signal.SIGHUP:
            if not self._stopping:
                self._spawn(self._reload_config("signal"), "reload")
            return
        if self._stopping and sig == signal.SIGINT:
            self._forced = True
            if self._main is not None:
                self._main.cancel()
            return
        self._stopping = True
        self._stop.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.handle_signal, sig)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _spawn(self, coro: Any, name: str) -> None:
        """Every background task is named and tracked; shutdown cancels what is left."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
                self.vitals.stopping = True
                self._systemd.stopping()
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
            self.metrics.on_api_error(info)
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
        self.metrics.bind(self.watcher, store, notifier)
        self._tasks_file = file_signature(settings.tasks.file)
        heartbeat = self._heartbeat = Heartbeat(
            settings.alerts.heartbeat.url, settings.alerts.timeout, self._log, self.metrics
        )
        await heartbeat.start()
        stack.push_async_callback(heartbeat.close)
        server = self.server = HealthServer(
            settings.server,
            health=self.vitals.health,
            metrics=self.metrics,
            watcher=lambda: self.watcher,
        )
        address = await server.start()  # StartupError (exit 3) when the port is taken
        stack.push_async_callback(server.stop)

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
            server=address,
            state_path=str(settings.state.path),
        )
        self._systemd.ready(f"watching {len(refs)} tasks; first cycle scheduled")
        self._spawn(systemd_watchdog(self.vitals, self._systemd), "systemd-watchdog")
        # Last in, first out: background tasks (reloads, pings) end before what they use.
        stack.push_async_callback(self._cancel_background)
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
        async with self._lock:
            if file_signature(self.settings.tasks.file) != self._tasks_file:
                self._apply_reload("tasks_file")
            self.vitals.cycle_started()
            try:
                report = await self.watcher.run_cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the cycle is the last catch: fatal)
                self._fatal(exc)
                return
            self.vitals.cycle_finished()
        self.cycles_completed += 1
        self.metrics.on_cycle(report)
        self._heartbeat.beat()
        self._systemd.status(
            f"{len(self.watcher.tasks)} tasks, {report.stuck} stuck, "
            f"last cycle {report.duration_s:.1f}s"
            + (", API unavailable" if report.api_unavailable else "")
        )
        if self._on_cycle is not None:
            self._on_cycle(report)

    # --- reload (SIGHUP, tasks file change) ------------------------------------------------

    async def _reload_config(self, trigger: str) -> None:
        async with self._lock:  # between cycles, never during one
            self._apply_reload(trigger)

    def _apply_reload(self, trigger: str) -> None:
        """Re-read the configuration; apply the watched set, rules and phases, keeping alert
        state for tasks that stay. A bad new configuration is refused and the old one kept."""
        assert self.watcher is not None  # noqa: S101 (reloads start after start-up)
        old = self.settings
        self._tasks_file = file_signature(old.tasks.file)
        try:
            new = self._reload() if self._reload is not None else old
            refs = watched_tasks(new.tasks)
        except ConfigError as err:
            self._log.error(
                "config.rejected",
                trigger=trigger,
                problems=[f"{key}: {msg}" if key else msg for key, msg in err.problems],
            )
            return
        self._tasks_file = file_signature(new.tasks.file)
        before = set(self.watcher.tasks)
        self.watcher.apply_settings(new)
        self.watcher.set_tasks(refs)
        after = set(self.watcher.tasks)
        restart_required = [
            name
            for name in ("api", "poll", "server", "state", "log")
            if getattr(new, name) != getattr(old, name)
        ]
        # repeat_interval and flapping are applied live; the rest of [alerts] is the notifier's
        live = {"repeat_interval", "flap_threshold", "flap_window"}
        if new.alerts.model_dump(exclude=live) != old.alerts.model_dump(exclude=live):
            restart_required.append("alerts")
        self.settings = new
        self._log.info(
            "config.reloaded",
            trigger=trigger,
            tasks=len(after),
            added=len(after - before),
            removed=len(before - after),
            restart_required=restart_required,
        )
        if not refs:
            self._log.warning("config.no_tasks")

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

    async def _cancel_background(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        if event.job_id != "poll-cycle":
            return
        self.metrics.overruns.inc()
        self._log.warning(
            "cycle.overrun",
            scheduled_at=iso(event.scheduled_run_time) if event.scheduled_run_time else None,
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
