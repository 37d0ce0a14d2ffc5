"""Pipeline events/s at zero latency with every rate limit out of the way, against download-only.

One simulator in a child process (rate limits off, no latency), one stream of `events` events.
In the same run, best of `repeat` each:

- `download only (EventsClient)`: sequential paging with the project's client and an unlimited
  limiter; pages fetched and parsed (`fetch_page` -> Page), nothing stored. The reference: 1.00x;
- `download only (httpx + orjson)`: the same with bare httpx, to show the client's own overhead;
- `op-sentinel run --once -> DuckDB`: `Connector.start(settings, limiter=unlimited)` + `poll_cycle`
  into a fresh DuckDB file.

Goal (issue 6): `run --once` into DuckDB takes no more than 2x the download-only time.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from bench.runs import (
    RunResult,
    raw_download,
    run_once,
    sequential_download,
    settings_for,
    stored_rows,
    unlimited,
)
from bench.simproc import BenchError, SimulatorProcess
from bench.table import Table, count, num, progress

GOAL = 2.0
DAYS = 7.0


def run(*, events: int, repeat: int) -> list[Table]:
    best: dict[str, RunResult] = {}

    def keep(name: str, result: RunResult) -> None:
        if result.error:
            raise BenchError(f"{name} failed: {result.error}")
        progress(f"pipeline {name}: {result.seconds:.2f} s")
        if name not in best or result.seconds < best[name].seconds:
            best[name] = result

    with (
        tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp,
        SimulatorProcess(events=events, days=DAYS, workdir=Path(tmp)) as sim,
    ):
        token = sim.token
        stored = 0
        for attempt in range(repeat):
            keep(
                "download",
                asyncio.run(sequential_download(sim.base_url, token, days=DAYS, limiter=unlimited())),
            )
            keep("raw", asyncio.run(raw_download(sim.base_url, token, days=DAYS)))
            db = Path(tmp) / f"pipeline-{attempt}.duckdb"
            settings = settings_for(sim.base_url, token, days=DAYS, db=db)
            keep("op-sentinel", asyncio.run(run_once(settings, limiter=unlimited())))
            stored = stored_rows(db)

    reference = best["download"].seconds
    table = Table(
        f"pipeline: events/s at 0 ms latency, no rate limit ({count(events)} events, one stream, "
        f"best of {repeat})",
        ["client", "pages", "events", "seconds", "events/s", "x download-only"],
    )
    labels = {
        "download": "download only (EventsClient)",
        "raw": "download only (httpx + orjson)",
        "op-sentinel": "op-sentinel run --once -> DuckDB",
    }
    for key, label in labels.items():
        result = best[key]
        table.add(
            label,
            count(result.pages),
            count(result.events),
            num(result.seconds, 2),
            count(round(result.events / result.seconds)),
            f"{result.seconds / reference:.2f}",
        )
    ratio = best["op-sentinel"].seconds / reference
    verdict = "meets" if ratio <= GOAL else "MISSES"
    table.notes.append(
        f"ratio run --once / download-only = {ratio:.2f} ({verdict} the goal of <= {GOAL:g}x); "
        f"rows stored: {count(stored)} of {count(events)}" + ("" if stored == events else " (MISMATCH)")
    )
    table.notes.append("simulator in a child process; page generation (~10 ms/page) is in every row's time.")
    return [table]
