"""Parallel backfill against the simulator: every event once, across slices, the live chain and restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from opsentinel.pipeline import Pipeline, StreamResult
from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.source.client import EventsClient
from opsentinel.source.ratelimit import RateLimit, RateLimiter
from opsentinel.source.retry import RetryPolicy
from opsentinel.source.token import ApiToken
from opsentinel.streams import get_stream
from opsentinel.timefmt import parse_rfc3339

STREAM = get_stream("auditevents")
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(events=3000, days=6, seed=7, rate_limit_per_minute=0)) as server:
        yield server


def _drain(
    sim: SimulatorServer,
    db: Path,
    *,
    workers: int = 8,
    cancel_after_pages: int | None = None,
    lookback: timedelta = timedelta(days=7),
    on_page: Callable[[int], None] | None = None,
) -> StreamResult | None:
    """One `run --once` of the auditevents stream; optionally killed (task cancelled) mid-way."""

    async def main() -> StreamResult | None:
        limiter = RateLimiter([RateLimit(100_000, 60.0)])
        async with EventsClient(
            sim.base_url, ApiToken(sim.token), limiter=limiter, retry=FAST_RETRY
        ) as client:
            store = DuckDBStore(db)
            pages = 0
            task: asyncio.Task[list[StreamResult]] | None = None

            def progress(stream: str, result: StreamResult) -> None:
                nonlocal pages
                pages += 1
                if on_page is not None:
                    on_page(pages)
                if cancel_after_pages is not None and pages >= cancel_after_pages and task is not None:
                    task.cancel()

            pipeline = Pipeline(
                client=client,
                sink=store,
                store=store,
                account=sim.account_uuid,
                first_start=datetime.now(UTC) - lookback,
                backfill_workers=workers,
                on_progress=progress,
            )
            task = asyncio.ensure_future(pipeline.poll_cycle([STREAM]))
            try:
                (result,) = await task
            except asyncio.CancelledError:
                return None
            finally:
                store.close()
            return result

    return asyncio.run(main())


def _stored(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT uuid_s FROM OnePasswordEventLogs_CL WHERE log_source = 'auditevents'"
        ).fetchall()
    return [r[0] for r in rows]


def _expected(sim: SimulatorServer) -> set[str]:
    return {e["uuid"] for e in sim.events("auditevents")}


def test_first_run_slices_history_and_stores_every_event_once(sim: SimulatorServer, tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    result = _drain(sim, db)
    assert result is not None and result.error is None
    stored = _stored(db)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(stored) == _expected(sim)
    # history was read through several time-bounded chains, not one cursor after another
    with duckdb.connect(str(db), read_only=True) as con:
        (cursor, backfill) = con.execute("SELECT cursor, backfill FROM opsentinel_checkpoints").fetchone()  # type: ignore[misc]
    assert cursor, "the live cursor is the stream's checkpoint"
    assert backfill is None, "a finished backfill leaves no plan behind"


def test_second_run_continues_from_the_live_cursor_only(sim: SimulatorServer, tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    _drain(sim, db)
    sim.clear_request_log()
    added = {e["uuid"] for e in sim.add_events("auditevents", 25)}
    result = _drain(sim, db)
    assert result is not None and result.error is None
    stored = _stored(db)
    assert len(stored) == len(set(stored))
    assert added <= set(stored)
    assert set(stored) == _expected(sim)
    cursors = [r for r in sim.request_log if r.path == STREAM.path]
    assert cursors and all(r.cursor for r in cursors), "the second run sends only continuing cursors"


def test_killed_backfill_resumes_unfinished_slices_only(tmp_path: Path) -> None:
    with SimulatorServer(SimulatorConfig(events=20_000, days=6, seed=5, rate_limit_per_minute=0)) as sim:
        _killed_then_resumed(sim, tmp_path / "s.duckdb")


def _killed_then_resumed(sim: SimulatorServer, db: Path) -> None:
    assert _drain(sim, db, workers=4, cancel_after_pages=6) is None
    partial = _stored(db)
    assert 0 < len(partial) < len(_expected(sim))
    with duckdb.connect(str(db), read_only=True) as con:
        (backfill,) = con.execute("SELECT backfill FROM opsentinel_checkpoints").fetchone()  # type: ignore[misc]
    assert backfill is not None, "the unfinished plan is in the checkpoint"
    result = _drain(sim, db, workers=4)
    assert result is not None and result.error is None
    stored = _stored(db)
    assert len(stored) == len(set(stored)), "a resumed backfill stored an event twice"
    assert set(stored) == _expected(sim)
    # only what was not yet committed was read again: finished slices were not re-read
    assert result.events == len(_expected(sim)) - len(partial)


@pytest.mark.parametrize("workers", [0, 1, 3, 8])
def test_late_indexed_history_is_complete_with_any_number_of_workers(workers: int, tmp_path: Path) -> None:
    """Item usages a device synced days late are indexed after newer events: every slice, however
    its range was cut, still reads them (the issue's 0 of 2 with 8 workers)."""
    with SimulatorServer(SimulatorConfig(events=3000, days=6, seed=11, rate_limit_per_minute=0)) as sim:
        now = datetime.now(UTC)
        for days in (5.5, 4, 3, 2, 2, 1.5):
            sim.add_events("auditevents", 2, at=now - timedelta(days=days))
        sim.faults.page_cap = 200  # many pages per slice: late ones come long after the slice's end
        db = tmp_path / "late.duckdb"
        result = _drain(sim, db, workers=workers)
        assert result is not None and result.error is None
        stored = _stored(db)
        assert len(stored) == len(set(stored)), "an event was stored twice"
        assert set(stored) == _expected(sim)


def test_a_dense_hour_is_read_by_several_slices(tmp_path: Path) -> None:
    # Nearly all events fall into one hour three days ago; the probe sees the density and the plan
    # cuts history finely enough that idle workers find slices to take.
    with SimulatorServer(SimulatorConfig(events=50, days=6, seed=3, rate_limit_per_minute=0)) as sim:
        burst_at = datetime.now(UTC) - timedelta(days=3)
        for i in range(30):
            sim.add_events("auditevents", 100, at=burst_at + timedelta(seconds=i * 100))
        sim.clear_request_log()
        db = tmp_path / "dense.duckdb"
        result = _drain(sim, db, workers=4)
        assert result is not None and result.error is None
        stored = _stored(db)
        assert len(stored) == len(set(stored))
        assert set(stored) == _expected(sim)
        resets = [r for r in sim.request_log if r.path == STREAM.path and not r.cursor]
        assert len(resets) > 1 + 4, "history was read by more slices than workers"


def test_events_arriving_during_the_backfill_are_stored_once(sim: SimulatorServer, tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    late = datetime.now(UTC) - timedelta(minutes=30)  # indexed late, but inside the live chain's hour

    def add_during(pages: int) -> None:
        if pages == 3:
            sim.add_events("auditevents", 10)
            sim.add_events("auditevents", 5, at=late)

    result = _drain(sim, db, workers=3, on_page=add_during)
    assert result is not None and result.error is None
    result = _drain(sim, db)  # the next poll picks up whatever arrived after the live chain drained
    assert result is not None and result.error is None
    stored = _stored(db)
    assert len(stored) == len(set(stored))
    assert set(stored) == _expected(sim)


def test_zero_workers_reads_history_with_one_cursor(sim: SimulatorServer, tmp_path: Path) -> None:
    db = tmp_path / "seq.duckdb"
    result = _drain(sim, db, workers=0)
    assert result is not None
    assert result.error is None
    assert set(_stored(db)) == _expected(sim)
    resets = [r for r in sim.request_log if r.path == STREAM.path and not r.cursor]
    assert len(resets) == 1, "one ResetCursor, then cursors only"


class _Recording(httpx.AsyncBaseTransport):
    """The real HTTP transport, remembering every request body."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.content:
            self.bodies.append(json.loads(request.content))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_no_request_asks_for_more_than_the_api_keeps(sim: SimulatorServer, tmp_path: Path) -> None:
    """A first start older than 120 days (given directly to the library, past the settings' clamp)
    and padded slice windows still never ask the API for a moment it no longer holds."""
    recording = _Recording()

    async def main() -> StreamResult:
        async with EventsClient(
            sim.base_url, ApiToken(sim.token), limiter=RateLimiter([RateLimit(100_000, 60.0)]),
            retry=FAST_RETRY, transport=recording,
        ) as client:  # fmt: skip
            store = DuckDBStore(tmp_path / "old.duckdb")
            try:
                pipeline = Pipeline(
                    client=client,
                    sink=store,
                    store=store,
                    account=sim.account_uuid,
                    first_start=datetime.now(UTC) - timedelta(days=200),
                    backfill_workers=4,
                )
                (result,) = await pipeline.poll_cycle([STREAM])
                return result
            finally:
                store.close()

    started = datetime.now(UTC)
    result = asyncio.run(main())
    assert result.error is None
    starts = [parse_rfc3339(b["start_time"]) for b in recording.bodies if "start_time" in b]
    assert len(starts) > 2, "history was read in slices"
    assert min(starts) >= started - timedelta(days=120)


def test_a_cursor_rejected_before_the_live_chain_caught_up_reads_its_history_again(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """With one cursor for everything (0 workers), a rejection in the middle of the history must not
    restart near the newest event read so far: history not yet read (a late-indexed old event
    among it) would be skipped for good. It restarts where the chain began; DuckDB drops the
    repeats."""
    old = sim.add_events("auditevents", 3, at=datetime.now(UTC) - timedelta(days=4))
    sim.faults.page_cap = 50
    db = tmp_path / "mid.duckdb"
    assert _drain(sim, db, workers=0, cancel_after_pages=10) is None  # killed mid-history
    sim.faults.invalidate_cursors()
    result = _drain(sim, db, workers=0)
    assert result is not None and result.error is None
    stored = _stored(db)
    assert {e["uuid"] for e in old} <= set(stored)
    assert len(stored) == len(set(stored)) and set(stored) == _expected(sim)
