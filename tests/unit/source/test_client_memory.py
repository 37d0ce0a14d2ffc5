"""Memory per page: a fetched page's body is freed by reference counting, not held until the cycle
collector runs (httpx keeps each Response in a reference cycle with its stream)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.source.client import EventsClient
from opsentinel.source.ratelimit import RateLimiter
from opsentinel.source.token import ApiToken
from opsentinel.streams import get_stream

pytestmark = pytest.mark.anyio

PAGES = 30


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(events=PAGES * 1000, days=7.0, seed=3)) as server:
        yield server


async def test_page_bodies_do_not_wait_for_the_cycle_collector(sim: SimulatorServer) -> None:
    spec = get_stream("auditevents")
    body: dict[str, Any] = {"limit": 1000, "start_time": "2020-01-01T00:00:00Z"}
    async with EventsClient(sim.base_url, ApiToken(sim.token), limiter=RateLimiter()) as client:
        await client.fetch_page(spec, {"limit": 1})  # connection and client set up outside the count
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            fetched = 0
            while True:
                page = await client.fetch_page(spec, body)
                fetched += len(page.events)
                if not page.has_more:
                    break
                body = {"cursor": page.cursor}
            del page
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            gc.enable()
    assert fetched == PAGES * 1000
    # Each body is ~0.75 MB: held bodies would add ~20 MB here.
    assert after - before < 6_000_000, f"{(after - before) / 1e6:.1f} MB still held after {PAGES} pages"
