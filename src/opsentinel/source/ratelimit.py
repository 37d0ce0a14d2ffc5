"""One request budget shared by every stream of a token (API reference section 4.3).

The Events API allows 600 requests per minute and 30,000 per hour; exceeding either returns 429.
`RateLimiter` keeps a sliding-window log per limit, so no 60 s (or 3600 s) interval, wherever it
starts, ever holds more than the limit: whatever windows the server counts in, we stay inside them.

Defaults keep a small margin: 590/min and 29,500/h (about 2 %), leaving room for a concurrent
`op-sentinel check` or a second process on the same account (the docs do not say whether the limit
is per token or per account).

It limits rate, not concurrency: with budget left, any number of concurrent callers pass at once
(a burst of up to 590 requests is allowed). `pause_until` stops every caller until a moment, which is
how one stream's 429 makes all streams back off together. Clock and sleep are injected so tests
never wait.

Priority: a live cursor's request (`acquire(priority=True)`) goes before the history slices' requests
that are waiting. While one is waiting, others pass only if they leave it a free slot, so a first
run's backfill at the ceiling never delays the fresh events of the live chain by more than the time
one slot takes to free up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "RateLimit", "RateLimiter"]


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` in any `period` seconds."""

    requests: int
    period: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.period <= 0:
            raise ValueError(f"invalid rate limit: {self.requests} per {self.period} s")


DEFAULT_LIMITS: tuple[RateLimit, ...] = (RateLimit(590, 60.0), RateLimit(29_500, 3600.0))


class RateLimiter:
    """A shared async rate limiter; create one per token and hand it to every client using it.

    `acquire()` returns when a request may be sent now and counts it. Waiting callers are served
    in arrival order. Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        limits: Sequence[RateLimit] = DEFAULT_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not limits:
            raise ValueError("a rate limiter needs at least one limit")
        self._limits = tuple(limits)
        self._clock = clock
        self._sleep = sleep
        self._sent: tuple[deque[float], ...] = tuple(deque() for _ in self._limits)
        self._paused_until = float("-inf")
        self._lock: asyncio.Lock | None = None
        self._priority_waiting = 0
        self._share = 1.0

    @property
    def share(self) -> float:
        return self._share

    def set_share(self, share: float) -> None:
        """Use only this fraction (0-1] of every limit: a replica owning k of an account's n streams
        takes k/n of the token's budget, so replicas never exceed it together without talking."""
        if not 0 < share <= 1:
            raise ValueError(f"a share of the rate limit is in (0, 1], not {share}")
        self._share = share

    @property
    def limits(self) -> tuple[RateLimit, ...]:
        return self._limits

    @property
    def paused_until(self) -> float | None:
        """The clock value every caller waits for, or None when not paused."""
        return self._paused_until if self._paused_until > self._clock() else None

    def pause_until(self, moment: float) -> None:
        """Hold every caller until the clock reaches `moment` (a later pause never shortens one)."""
        self._paused_until = max(self._paused_until, moment)

    def pause_for(self, seconds: float) -> None:
        """`pause_until(now + seconds)`."""
        self.pause_until(self._clock() + max(seconds, 0.0))

    def _wait_needed(self, now: float, reserve: int = 0) -> float:
        """Seconds until one more request fits every limit with `reserve` slots still left over
        (0 when it fits now)."""
        wait = self._paused_until - now
        for limit, sent in zip(self._limits, self._sent, strict=True):
            while sent and sent[0] <= now - limit.period:
                sent.popleft()
            room = max(1, int(limit.requests * self._share)) - reserve
            if room < 1:
                room = 1
            if len(sent) >= room:
                # the (len - room + 1)-th oldest must leave the window first
                wait = max(wait, sent[len(sent) - room] + limit.period - now)
        return wait

    async def acquire(self, *, priority: bool = False) -> None:
        """Wait until a request fits the budget, then count it as sent. `priority` callers go first."""
        if priority:
            await self._acquire_priority()
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        # Serving waiters one at a time keeps arrival order and wakes one sleeper, not a herd.
        async with self._lock:
            yielded = False
            while True:
                now = self._clock()
                wait = self._wait_needed(now, self._priority_waiting)
                if wait <= 0:
                    if self._priority_waiting and not yielded:
                        yielded = True  # a priority caller woken at this same moment goes first
                        await asyncio.sleep(0)
                        continue
                    self._count(now)
                    return
                await self._sleep(wait)

    async def _acquire_priority(self) -> None:
        self._priority_waiting += 1
        try:
            while True:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._count(now)
                    return
                await self._sleep(wait)
        finally:
            self._priority_waiting -= 1

    def _count(self, now: float) -> None:
        for sent in self._sent:
            sent.append(now)
