"""The shared limiter: bursts within budget, no sliding window over its limits, pauses hold everyone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from opsentinel.source.ratelimit import DEFAULT_LIMITS, RateLimit, RateLimiter

pytestmark = pytest.mark.anyio


def max_in_window(times: Sequence[float], period: float) -> int:
    """The most requests any window (t - period, t] holds."""
    return max(sum(1 for other in times if t - period < other <= t) for t in times)


def test_default_budget_is_just_under_the_api_limits() -> None:
    assert [(limit.requests, limit.period) for limit in DEFAULT_LIMITS] == [(590, 60.0), (29_500, 3600.0)]


async def test_concurrent_callers_burst_without_waiting(clock: Any) -> None:
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    await asyncio.gather(*(limiter.acquire() for _ in range(300)))
    assert clock.sleeps == []


async def test_budget_holds_across_concurrent_tasks(clock: Any) -> None:
    limiter = RateLimiter([RateLimit(10, 60.0), RateLimit(25, 3600.0)], clock=clock, sleep=clock.sleep)
    start = clock.now
    times: list[float] = []

    async def stream() -> None:
        for _ in range(10):
            await limiter.acquire()
            times.append(clock.now)

    await asyncio.gather(stream(), stream(), stream())

    assert len(times) == 30
    assert max_in_window(times, 60.0) == 10
    assert max_in_window(times, 3600.0) == 25
    # Not over-cautious: the first minute's budget is spent at once, and the 26th request waits
    # for the hour window, not longer.
    assert times.count(start) == 10
    assert sorted(times)[25] == pytest.approx(start + 3600.0)


async def test_pause_holds_every_caller(clock: Any) -> None:
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause_until(clock.now + 30.0)
    assert limiter.paused_until == clock.now + 30.0
    times: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        times.append(clock.now)

    await asyncio.gather(call(), call(), call())
    assert times == [1030.0, 1030.0, 1030.0]
    assert limiter.paused_until is None


async def test_a_shorter_pause_never_shortens_a_longer_one(clock: Any) -> None:
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause_for(20.0)
    limiter.pause_for(5.0)
    await limiter.acquire()
    assert clock.now == 1020.0


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimit(0, 60.0)
    with pytest.raises(ValueError):
        RateLimiter([])


async def test_priority_callers_go_before_waiting_bulk_ones() -> None:
    """A live cursor's request that arrives while history slices wait for the budget goes first
    (on the real clock: the order of wake-ups is what is tested, not the time)."""
    limiter = RateLimiter([RateLimit(10, 0.3)])
    order: list[str] = []

    async def call(name: str, priority: bool) -> None:
        await limiter.acquire(priority=priority)
        order.append(name)

    await asyncio.gather(*(call(f"slice{i}", False) for i in range(10)))  # the budget is spent
    bulk = [asyncio.create_task(call(f"late-slice{i}", False)) for i in range(3)]
    await asyncio.sleep(0.05)  # the slices are waiting for the window
    live = asyncio.create_task(call("live", True))
    await asyncio.gather(*bulk, live)
    assert order[10] == "live", order


async def test_a_share_of_the_budget(clock: Any) -> None:
    limiter = RateLimiter([RateLimit(600, 60.0)], clock=clock, sleep=clock.sleep)
    limiter.set_share(1 / 3)  # this replica owns one of the account's three streams
    times: list[float] = []
    for _ in range(250):
        await limiter.acquire()
        times.append(clock.now)
    assert max_in_window(times, 60.0) == 200
    with pytest.raises(ValueError, match="share"):
        limiter.set_share(0)
