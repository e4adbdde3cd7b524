"""Alert delivery: plans deliveries into the durable outbox and sends them, one lane per
receiver (a webhook URL or an Alertmanager replica), so one receiver that is down never delays
another, and deliveries to one receiver keep their order.

Each delivery has an id that is the same on every attempt, also after a restart; it is retried
on connection errors, timeouts, 429 and 5xx with exponential backoff and jitter (first retry
after ``[alerts] retry_initial``, doubling, at most 60 s apart) until delivered or older than
``max_delivery_age``. Other answers are final. Only this module and client.py speak HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from watchdog.alerts import Alert, Change, Transition
from watchdog.clock import Clock
from watchdog.errors import StoreError
from watchdog.logs import VERSION, Logger
from watchdog.models import Severity, TaskStatus
from watchdog.payloads import (
    Notice,
    alertmanager_body,
    chunks,
    notices,
    signature,
    slack_body,
    webhook_body,
)
from watchdog.settings import Settings, redact_url
from watchdog.store import Delivery, Store

MAX_RETRY_WAIT = 60.0
_USER_AGENT = f"sd-watchdog/{VERSION}"


@dataclass(frozen=True, slots=True)
class Receiver:
    """Where deliveries go. ``target`` identifies it in the store without naming the URL
    (URLs may carry credentials; the state file should not)."""

    target: str
    kind: str  # "webhook" | "alertmanager"
    url: str
    shown: str
    format: str = "json"
    secret: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    min_severity: Severity = Severity.INFO


def receivers_from(settings: Settings) -> list[Receiver]:
    result: list[Receiver] = []
    for hook in settings.alerts.webhooks:
        key = hook.signing_key()
        result.append(
            Receiver(
                target="webhook:" + _digest(hook.url, hook.format),
                kind="webhook",
                url=hook.url,
                shown=redact_url(hook.url),
                format=hook.format,
                secret=key.get_secret_value() if key is not None else None,
                headers=dict(hook.headers),
                min_severity=Severity.parse(hook.min_severity),
            )
        )
    for url in settings.alerts.alertmanager.urls:
        result.append(
            Receiver(
                target="alertmanager:" + _digest(url),
                kind="alertmanager",
                url=url + "/api/v2/alerts",
                shown=redact_url(url),
            )
        )
    return result


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    retry: bool
    status: int | None
    error: str
    retry_after: float | None = None


class Notifier:
    """Plans deliveries (pure, into the store's transaction) and runs the delivery lanes."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        log: Logger,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._alerts = settings.alerts
        self._store = store
        self._clock = clock
        self._log = log
        self._rng = rng or random.Random()
        self.receivers = receivers_from(settings)
        self._by_target = {r.target: r for r in self.receivers}
        self._session: aiohttp.ClientSession | None = None
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._stopping = False
        self.delivered = 0
        self.failed_attempts = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.receivers)

    # --- planning (no I/O: the caller writes these in the cycle's transaction) --------------

    def plan(
        self, changes: Sequence[Transition], statuses: Mapping[str, TaskStatus | None]
    ) -> list[Delivery]:
        """One delivery per receiver for this cycle's changes (split above the cap)."""
        if not self.receivers or not changes:
            return []
        now = self._clock.now()
        webhook_notices = notices(changes, statuses, send_resolved=self._alerts.send_resolved)
        # Alertmanager needs every resolve (endsAt) whatever send_resolved says: its own
        # receivers decide whether to notify about it.
        am_notices = notices(changes, statuses, send_resolved=True)
        deliveries: list[Delivery] = []
        for receiver in self.receivers:
            if receiver.kind == "webhook":
                batch = [n for n in webhook_notices if n.alert.severity >= receiver.min_severity]
            else:
                batch = am_notices
            deliveries += self._deliveries(receiver, batch, now, kind=receiver.kind)
        return deliveries

    def plan_resend(
        self, firing: Sequence[Alert], statuses: Mapping[str, TaskStatus | None]
    ) -> tuple[list[Delivery], list[tuple[str, str]]]:
        """Re-push every firing alert to each Alertmanager (endsAt moves forward); older
        resends not yet attempted are superseded."""
        now = self._clock.now()
        batch = [Notice(a, Change.REPEATED, statuses.get(a.key)) for a in firing]
        deliveries: list[Delivery] = []
        superseded: list[tuple[str, str]] = []
        for receiver in self.receivers:
            if receiver.kind != "alertmanager":
                continue
            superseded.append((receiver.target, "alertmanager-resend"))
            deliveries += self._deliveries(receiver, batch, now, kind="alertmanager-resend")
        return deliveries, superseded

    def _deliveries(
        self, receiver: Receiver, batch: Sequence[Notice], now: datetime, *, kind: str
    ) -> list[Delivery]:
        result = []
        stamp = now.timestamp()
        for part in chunks(batch, self._alerts.max_alerts_per_request):
            if receiver.kind == "alertmanager":
                body = alertmanager_body(part, now, self._alerts.alertmanager.resend_interval)
            elif receiver.format == "slack":
                body = slack_body(part)
            else:
                body = webhook_body(part)
            result.append(
                Delivery(
                    delivery_id=str(uuid.uuid4()),
                    target=receiver.target,
                    kind=kind,
                    body=body,
                    alerts=len(part),
                    created_at=stamp,
                    next_attempt_at=stamp,
                )
            )
        return result

    # --- lanes -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session, forget deliveries of receivers no longer configured, start lanes."""
        self._drop_orphans()
        if not self.receivers:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._alerts.timeout),
            headers={"User-Agent": _USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        for receiver in self.receivers:
            self._wake[receiver.target] = asyncio.Event()
            self._idle[receiver.target] = asyncio.Event()
            self._lanes[receiver.target] = asyncio.create_task(
                self._lane(receiver), name=f"delivery-{receiver.kind}-{receiver.shown}"
            )

    def _drop_orphans(self) -> None:
        """Deliveries queued for receivers no longer configured can never go out."""
        for target in self._store.targets():
            if target not in self._by_target:
                for delivery in self._store.drop_target(target):
                    self.dropped += 1
                    self._log.warning(
                        "alert.delivery_failed",
                        delivery_id=delivery.delivery_id,
                        receiver=target,
                        error="receiver_removed",
                        attempt=delivery.attempts,
                        will_retry=False,
                        alerts=delivery.alerts,
                    )

    def wake(self) -> None:
        """New deliveries were committed: every lane looks at its queue again."""
        for target, event in self._wake.items():
            self._idle[target].clear()
            event.set()

    async def drain(self, within: float) -> bool:
        """Wait until every queue is empty or ``within`` seconds passed; True when all went."""
        if not self._lanes:
            return True
        self.wake()
        waits = [asyncio.create_task(e.wait(), name="delivery-idle") for e in self._idle.values()]
        try:
            _, pending = await asyncio.wait(waits, timeout=max(0.0, within))
        finally:
            for task in waits:
                task.cancel()
        return not pending and self._store.outbox_depth() == 0

    async def close(self) -> None:
        self._stopping = True
        for lane in self._lanes.values():
            lane.cancel()
        for lane in self._lanes.values():
            with contextlib.suppress(asyncio.CancelledError):
                await lane
        self._lanes.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _lane(self, receiver: Receiver) -> None:
        wake = self._wake[receiver.target]
        idle = self._idle[receiver.target]
        while not self._stopping:
            wake.clear()
            try:
                delivery = self._store.next_delivery(receiver.target)
            except StoreError as exc:
                self._log.error("alert.delivery_failed", receiver=receiver.shown,
                                error="store", message=str(exc), will_retry=True)  # fmt: skip
                delivery = None
            if delivery is None:
                idle.set()
                await wake.wait()
                continue
            wait = delivery.next_attempt_at - self._clock.now().timestamp()
            if wait > MAX_RETRY_WAIT:
                # No retry is ever scheduled further ahead: the wall clock was stepped back.
                # Try now rather than wait out the step (hours); a retry is rescheduled anew.
                wait = 0.0
            if wait > 0:
                idle.set()  # nothing due: a drain need not wait for this retry
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(wait, MAX_RETRY_WAIT))
                continue
            idle.clear()
            try:
                await self._attempt(receiver, delivery)
            except StoreError as exc:  # the outbox keeps the delivery; try again shortly
                self._log.error("alert.delivery_failed", receiver=receiver.shown,
                                error="store", message=str(exc), will_retry=True)  # fmt: skip
                await asyncio.sleep(1.0)

    async def _attempt(self, receiver: Receiver, delivery: Delivery) -> None:
        assert delivery.seq is not None  # noqa: S101 (rows from the store have one)
        now = self._clock.now().timestamp()
        max_age = self._alerts.max_delivery_age
        attempt = delivery.attempts + 1
        fields: dict[str, Any] = {
            "delivery_id": delivery.delivery_id,
            "receiver": receiver.shown,
            "receiver_kind": receiver.kind,
            "alerts": delivery.alerts,
            "attempt": attempt,
        }
        if max_age > 0 and now - delivery.created_at > max_age:
            self._store.delivered(delivery.seq)
            self.dropped += 1
            self._log.error(
                "alert.delivery_failed", **fields, error="expired", will_retry=False,
                reason="expired", status=None, age_s=round(now - delivery.created_at, 1),
            )  # fmt: skip
            return
        started = time.perf_counter()
        outcome = await self._send(receiver, delivery)
        if outcome.ok:
            self._store.delivered(delivery.seq)
            self.delivered += 1
            self._log.info(
                "alert.delivered", **fields, status=outcome.status,
                duration_s=round(time.perf_counter() - started, 3),
            )  # fmt: skip
            return
        self.failed_attempts += 1
        wait = self._backoff(attempt, outcome.retry_after)
        expired = False
        if max_age > 0:
            # Kept until it is older than max_delivery_age: the last try is at that moment.
            remaining = max_age - (now - delivery.created_at)
            expired = remaining <= 0
            wait = min(wait, max(remaining, 0.0))
        if not outcome.retry or expired:
            self._store.delivered(delivery.seq)  # final: nothing more will be tried
            self.dropped += 1
            self._log.error(
                "alert.delivery_failed", **fields, status=outcome.status, error=outcome.error,
                will_retry=False, reason="expired" if outcome.retry else "rejected",
            )  # fmt: skip
            return
        self._store.retry_later(
            delivery.seq, attempts=attempt, next_attempt_at=now + wait, error=outcome.error
        )
        self._log.warning(
            "alert.delivery_failed", **fields, status=outcome.status, error=outcome.error,
            will_retry=True, retry_in_s=round(wait, 2),
        )  # fmt: skip

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        base: float = min(MAX_RETRY_WAIT, self._alerts.retry_initial * 2.0 ** (attempt - 1))
        wait = base / 2 + self._rng.uniform(0, base / 2)  # equal jitter: spread, never zero
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_WAIT))
        return wait

    async def _send(self, receiver: Receiver, delivery: Delivery) -> _Outcome:
        assert self._session is not None  # noqa: S101 (lanes run only after start)
        body = delivery.body.encode()
        stamp = int(self._clock.now().timestamp())
        headers = {
            **receiver.headers,
            "Content-Type": "application/json",
            "X-Watchdog-Delivery": delivery.delivery_id,
            "X-Watchdog-Timestamp": str(stamp),
        }
        if receiver.secret:
            headers["X-Watchdog-Signature"] = signature(receiver.secret, stamp, body)
        try:
            async with self._session.post(
                receiver.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(65536)  # drain a little; the answer is the status
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            return _Outcome(False, True, None, "timeout")
        except aiohttp.ClientError as exc:
            return _Outcome(False, True, None, f"connection: {type(exc).__name__}")
        except ValueError as exc:  # aiohttp refuses the request itself (e.g. a bad header)
            return _Outcome(False, False, None, f"invalid_request: {type(exc).__name__}")
        if 200 <= status < 300:
            return _Outcome(True, False, status, "")
        retry = status == 429 or status >= 500
        return _Outcome(False, retry, status, "http_status", retry_after)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds: float = max(0.0, float(value.strip()))
    except ValueError:
        return None
    return seconds
