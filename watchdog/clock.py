"""The clock seam: wall time for ages, monotonic time for intervals, and sleep.

Production uses ``SystemClock``; tests inject ``FakeClock`` instead of patching anything.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The local UTC wall clock (aware)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for intervals, deadlines and backoff)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (of this clock)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told; ``sleep`` advances it and yields to the loop."""

    def __init__(self, start: datetime | None = None, monotonic: float = 1000.0) -> None:
        self._now = start or datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
        self._mono = monotonic

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set_wall(self, when: datetime) -> None:
        """Jump the wall clock only (the monotonic clock is unaffected), like NTP does."""
        self._now = when

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
