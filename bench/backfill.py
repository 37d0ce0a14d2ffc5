"""Backfill pages/s against the API's 600 requests/min ceiling (10 pages/s), at several latencies.

Per latency, two runs against a fresh simulator each, in a child process (its own rate-limit
windows: 600/min and 30,000/h, as the real API), one stream of `pages` x 1,000 events:

- `sequential`: strict sequential paging with `EventsClient` and its default 590/min limiter, pages
  parsed but not stored: what a one-request-after-another connector can do at best;
- `op-sentinel`: `Connector.start` + `poll_cycle` (= `run --once --streams auditevents`) into a fresh
  DuckDB file, with the connector's own default limiter.

Requests, pages and 429s are counted from the simulator's request log (`--verbose`), so the figures
do not depend on how the connector splits its work. The simulator must not share this process: its
page generation and JSON encoding (~17 ms of CPU a page) held the GIL the connector needs, and an
in-process simulator capped op-sentinel at ~9 pages/s whatever the latency (a real API is remote).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

from bench.runs import PAGE_SIZE, STREAM, RunResult, run_once, sequential_download, settings_for, stored_rows
from bench.simproc import BenchError, SimulatorProcess
from bench.table import Table, count, num, progress

CEILING = 10.0  # pages/s: 600 requests per minute, one page per request
CLIENT_BUDGET = 590  # requests per 60 s: op-sentinel's default limiter
DAYS = 7.0


def best_pages_per_s(pages: int, requests: int) -> float | None:
    """The most pages/s a fresh 590-per-60-s budget allows for `requests` in all (None: one burst).

    Request number k (1-based) cannot go before 60 * floor((k-1) / 590) s, so the last one bounds
    the run; shorter runs fit in the first burst and are not limited by the budget at all.
    """
    floor_s = 60.0 * ((requests - 1) // CLIENT_BUDGET)
    return pages / floor_s if floor_s else None


def _counts(requests: Counter[tuple[str, int]]) -> tuple[int, int, int]:
    """(requests, event pages answered 200, 429s) from the simulator's (path, status) tally."""
    path = f"/api/v2/{STREAM}"
    pages = requests[path, 200]
    limited = sum(n for (_, status), n in requests.items() if status == 429)
    return sum(requests.values()), pages, limited


def _measure(
    pages: int, latency_ms: float, client: str, workdir: Path
) -> tuple[RunResult, int, int, int, int]:
    """(run, events stored or received, requests, pages served, 429s)."""
    sim = SimulatorProcess(
        events=pages * PAGE_SIZE,
        days=DAYS,
        latency_ms=latency_ms,
        rate_limited=True,
        count_statuses=True,
        workdir=workdir,
    )
    with sim:
        if client == "sequential":
            result = asyncio.run(sequential_download(sim.base_url, sim.token, days=DAYS))
            stored = result.events
        else:
            db = workdir / f"backfill-{latency_ms:g}ms.duckdb"
            settings = settings_for(sim.base_url, sim.token, days=DAYS, db=db)
            result = asyncio.run(run_once(settings))
            if result.error:
                raise BenchError(f"op-sentinel run failed at {latency_ms:g} ms: {result.error}")
            stored = stored_rows(db)
    requests, served, limited = _counts(sim.requests)  # complete once the simulator has stopped
    return result, stored, requests, served, limited


def run(*, pages: int, latencies_ms: list[float]) -> list[Table]:
    table = Table(
        f"backfill: pages/s against the 600/min ceiling ({count(pages)} pages x {count(PAGE_SIZE)} events, "
        "one stream)",
        [
            "latency",
            "client",
            "requests",
            "pages",
            "events stored",
            "seconds",
            "pages/s",
            "% of 10/s",
            "events/s",
            "speed-up",
            "429s",
        ],
    )
    expected = pages * PAGE_SIZE
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        for latency in latencies_ms:
            sequential_seconds = 0.0
            for client in ("sequential", "op-sentinel"):
                result, stored, requests, served, limited = _measure(pages, latency, client, Path(tmp))
                progress(f"backfill {latency:g} ms {client}: {result.seconds:.1f} s, {served} pages")
                if client == "sequential":
                    sequential_seconds = result.seconds
                rate = served / result.seconds
                check = count(stored) if stored == expected else f"{count(stored)} of {count(expected)}!"
                table.add(
                    f"{latency:g} ms",
                    client,
                    count(requests),
                    count(served),
                    check,
                    num(result.seconds),
                    num(rate, 2),
                    f"{100 * rate / CEILING:.0f} %",
                    count(round(stored / result.seconds)),
                    f"{sequential_seconds / result.seconds:.2f}",
                    count(limited),
                )
    best = best_pages_per_s(pages, pages + 1)
    table.notes.append(
        "sequential = EventsClient in a plain loop (parse only, no store); op-sentinel = Connector.start + "
        "poll_cycle into DuckDB; both with the client's default 590/min limiter; simulator enforces 600/min."
    )
    table.notes.append(
        "pages = event pages answered 200 (a time-sliced backfill makes more, partly filled pages); "
        "requests also count introspect; speed-up = sequential seconds / this row's seconds."
    )
    if best is None:
        table.notes.append(
            f"{pages} pages fit in the limiter's first burst of {CLIENT_BUDGET}: the ceiling does not bind, "
            "so pages/s here can exceed 10 (smoke-size run, not a measurement of the ceiling)."
        )
    else:
        table.notes.append(
            f"a fresh 590-per-60-s budget lets {count(pages)} pages finish no faster than {best:.2f} pages/s "
            "(burst, then one window per 590 requests)."
        )
    return [table]
