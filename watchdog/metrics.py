"""Prometheus metrics in their own registry: counters fed by hooks, gauges read at scrape time
from the live state (so they can never drift from it)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watchdog.errors import StoreError
from watchdog.logs import VERSION
from watchdog.models import DEFAULT_SEVERITY, ApiErrorInfo, Phase

if TYPE_CHECKING:
    from watchdog.cycle import CycleReport, Watcher
    from watchdog.notify import Notifier
    from watchdog.store import Store

PREFIX = "sd_watchdog"


class Metrics:
    """Every metric of the daemon; ``bind`` attaches the live objects the gauges read."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.cycles = Counter(f"{PREFIX}_cycles", "Poll cycles completed", registry=self.registry)
        self.overruns = Counter(
            f"{PREFIX}_cycle_overruns",
            "Cycles skipped because the previous one was still running",
            registry=self.registry,
        )
        self.cycle_duration = Histogram(
            f"{PREFIX}_cycle_duration_seconds",
            "Duration of a poll cycle",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.polls = Counter(
            f"{PREFIX}_polls",
            "Status polls by outcome (observed, not_found, failed, deferred)",
            ["outcome"],
            registry=self.registry,
        )
        self.api_errors = Counter(
            f"{PREFIX}_api_errors",
            "Failed SmartDocumentor request attempts by kind and endpoint",
            ["error", "endpoint"],
            registry=self.registry,
        )
        self.heartbeats = Counter(
            f"{PREFIX}_heartbeats",
            "Dead-man's-switch pings by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.last_success = 0.0
        self._live = _LiveCollector(self)
        self.registry.register(self._live)

    def bind(self, watcher: Watcher, store: Store | None, notifier: Notifier | None) -> None:
        self._live.watcher = watcher
        self._live.store = store
        self._live.notifier = notifier

    def on_api_error(self, info: ApiErrorInfo) -> None:
        self.api_errors.labels(info.error, info.endpoint).inc()

    def on_cycle(self, report: CycleReport) -> None:
        self.cycles.inc()
        self.cycle_duration.observe(report.duration_s)
        for outcome, count in report.outcomes.items():
            self.polls.labels(outcome).inc(count)
        if report.polled:
            self.last_success = time.time()

    def hook(self) -> Callable[[ApiErrorInfo], None]:
        return self.on_api_error


class _LiveCollector(Collector):
    """Gauges computed from the current state at every scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.watcher: Watcher | None = None
        self.store: Store | None = None
        self.notifier: Notifier | None = None

    def describe(self) -> list[Metric]:
        return []  # dynamic: nothing to check for collisions up front

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(f"{PREFIX}_info", "Build information", labels=["version"])
        info.add_metric([VERSION], 1)
        yield info
        last = GaugeMetricFamily(
            f"{PREFIX}_last_successful_cycle_timestamp_seconds",
            "Unix time of the last cycle in which the API answered at least one poll",
        )
        last.add_metric([], self.metrics.last_success)
        yield last
        watcher = self.watcher
        if watcher is not None:
            yield from _state_metrics(watcher)
        notifier = self.notifier
        if notifier is not None:
            # Two counts that add up on their own: how each delivery ended, and how each
            # attempt went (a delivery retried three times is one delivery, four attempts).
            deliveries = CounterMetricFamily(
                f"{PREFIX}_deliveries",
                "Deliveries by final outcome (delivered, or dropped: rejected or expired)",
                labels=["outcome"],
            )
            deliveries.add_metric(["delivered"], notifier.delivered)
            deliveries.add_metric(["dropped"], notifier.dropped)
            yield deliveries
            attempts = CounterMetricFamily(
                f"{PREFIX}_delivery_attempts",
                "Delivery attempts by outcome",
                labels=["outcome"],
            )
            attempts.add_metric(["ok"], notifier.delivered)
            attempts.add_metric(["failed"], notifier.failed_attempts)
            yield attempts
        if self.store is not None and self.store.is_open:
            try:
                outbox = self.store.outbox_depth()
            except StoreError:
                return  # one unreadable figure must not fail the whole scrape
            depth = GaugeMetricFamily(
                f"{PREFIX}_outbox_depth", "Deliveries waiting in the durable outbox"
            )
            depth.add_metric([], outbox)
            yield depth


def _state_metrics(watcher: Watcher) -> Iterator[Metric]:
    phases: Tally[str] = Tally({p.value: 0 for p in Phase})
    # Every rule at its default severity reads 0 rather than vanishing when nothing fires.
    firing: Tally[tuple[str, str]] = Tally(
        {(rule.value, severity.label): 0 for rule, severity in DEFAULT_SEVERITY.items()}
    )
    for state in watcher.tasks.values():
        phases[state.phase_name] += 1
        for alert in state.firing():
            firing[(alert.rule.value, alert.severity.label)] += 1
    for alert in watcher.api_alerts.values():
        if alert.firing:
            firing[(alert.rule.value, alert.severity.label)] += 1
    tasks = GaugeMetricFamily(f"{PREFIX}_tasks", "Watched tasks by phase", labels=["phase"])
    for phase, count in sorted(phases.items()):
        tasks.add_metric([phase], count)
    yield tasks
    alerts = GaugeMetricFamily(
        f"{PREFIX}_alerts_firing", "Firing alerts by rule and severity", labels=["rule", "severity"]
    )
    for (rule, severity), count in sorted(firing.items()):
        alerts.add_metric([rule, severity], count)
    yield alerts
    up = GaugeMetricFamily(f"{PREFIX}_api_up", "1 unless the api_unavailable alert is firing")
    up.add_metric([], 0 if watcher.api_down else 1)
    yield up
