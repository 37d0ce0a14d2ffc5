"""Driving a real connector (`Connector.run_forever`, as `op-sentinel run` does) in this process
against the simulator until every simulator event is stored, while a test injects faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from opsentinel.config import Settings
from opsentinel.connector import Connector
from opsentinel.destination import Destination
from opsentinel.simulator import SimulatorServer
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.source.retry import RetryPolicy
from opsentinel.streams import STREAM_NAMES

FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.02, max_delay=0.2)
FAST_STARTUP = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=1.0)


def settings_for(sim: SimulatorServer, db: Path, *, history_days: float) -> Settings:
    return Settings(
        base_url=sim.base_url,
        token=SecretStr(sim.token),
        db=db,
        since=datetime.now(UTC) - timedelta(days=history_days, hours=1),
        poll_interval=timedelta(seconds=0.2),
    )


def _complete(store: DuckDBStore, sim: SimulatorServer) -> bool:
    rows = store.rows_by_stream()
    return all(rows.get(s, 0) >= sim.event_count(s) for s in STREAM_NAMES)


def run_until_stored(
    settings: Settings,
    sim: SimulatorServer,
    *,
    retry: RetryPolicy = FAST_RETRY,
    timeout: float = 40.0,
    during: Callable[[float], None] | None = None,
    destination: Destination | None = None,
    complete: Callable[[], bool] | None = None,
    also: Callable[[], bool] | None = None,
) -> float:
    """Run the connector until `complete()` (default: the DuckDB store holds as many rows per stream
    as the simulator has events; the test then checks them one by one) and `also()`, calling
    `during(elapsed)` every 50 ms. Returns the seconds it took; fails if `timeout` passes first."""

    async def main() -> float:
        connector = await Connector.start(
            settings, retry=retry, startup_retry=FAST_STARTUP, destination=destination
        )
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run_forever(stop))
        if complete is None:
            store = connector.destination.sink
            assert isinstance(store, DuckDBStore)
            done: Callable[[], bool] = lambda: _complete(store, sim)  # noqa: E731
        else:
            done = complete
        started = time.monotonic()
        try:
            while not task.done():
                elapsed = time.monotonic() - started
                if during is not None:
                    during(elapsed)
                if (also is None or also()) and done():  # here: worker threads may all be busy
                    return elapsed
                assert elapsed < timeout, f"not every event was stored within {timeout} s"
                await asyncio.sleep(0.05)
            task.result()
            raise AssertionError("the connector stopped by itself")
        finally:
            stop.set()
            await task
            await connector.close()

    return asyncio.run(main())


def drain_once(settings: Settings, *, retry: RetryPolicy = FAST_RETRY) -> None:
    """One `run --once`: start the connector, drain every stream once, close."""

    async def main() -> None:
        connector = await Connector.start(settings, retry=retry, startup_retry=FAST_STARTUP)
        try:
            results = await connector.poll_cycle()
        finally:
            await connector.close()
        assert all(r.error is None for r in results), results

    asyncio.run(main())
