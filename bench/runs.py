"""The measured runs: op-sentinel's `run --once` through the library, and the download-only loops.

`run_once` is what `op-sentinel run --once --streams auditevents` does: `Connector.start(settings)` then
`poll_cycle()`, timed from before start to after the cycle (closing is not timed). The loops are the
comparison points: `sequential_download` is strict sequential paging with the project's client (one
ResetCursor, then cursor after cursor, one request after another; pages parsed, nothing stored), and
`raw_download` the same with bare httpx + orjson.
"""

# ruff: noqa: S608  (SQL here is built from the table-name constant only)
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
from pydantic import SecretStr

from opsentinel.config import Settings
from opsentinel.connector import Connector
from opsentinel.destination import Destination
from opsentinel.schema import TABLE_NAME
from opsentinel.source import ApiToken, EventsClient, RateLimit, RateLimiter
from opsentinel.streams import get_stream
from opsentinel.timefmt import format_rfc3339

STREAM = "auditevents"
PAGE_SIZE = 1000  # events per page (the API's maximum `limit`, which op-sentinel asks for)


def unlimited() -> RateLimiter:
    """A limiter that never waits: takes the client's own 590/min budget out of the way."""
    return RateLimiter([RateLimit(1_000_000_000, 1.0)])


def lookback(days: float) -> timedelta:
    """A first-run start that covers the simulator's whole history (which ends at its start-up)."""
    return timedelta(days=days + 1)


BACKFILL_WORKERS: int | None = None
"""`--backfill-workers` for every op-sentinel run of this process (None: the connector's default).
Set by `python -m bench --backfill-workers N`; the memory benchmark passes it to its child runs."""


def settings_for(base_url: str, token: str, *, days: float, **fields: Any) -> Settings:
    """Settings for one stream (`auditevents`) from `base_url`; `fields` adds sink, db, state..."""
    if BACKFILL_WORKERS is not None:
        fields.setdefault("backfill_workers", BACKFILL_WORKERS)
    return Settings(
        base_url=base_url,
        token=SecretStr(token),
        streams=(STREAM,),
        lookback=lookback(days),
        **fields,
    )


@dataclass
class RunResult:
    """One measured run. `pages`/`events` as the run itself reported them."""

    seconds: float
    pages: int
    events: int
    error: str | None = None


async def run_once(
    settings: Settings,
    *,
    limiter: RateLimiter | None = None,
    destination: Destination | None = None,
) -> RunResult:
    """`Connector.start(settings)` + `poll_cycle()` (= `run --once`), timed; closes afterwards."""
    started = time.perf_counter()
    connector = await Connector.start(settings, limiter=limiter, destination=destination)
    try:
        results = await connector.poll_cycle()
        seconds = time.perf_counter() - started
    finally:
        await connector.close()
    errors = [f"{r.stream}: {r.error}" for r in results if r.error]
    return RunResult(
        seconds,
        sum(r.pages for r in results),
        sum(r.events for r in results),
        "; ".join(errors) or None,
    )


def reset_body(days: float) -> dict[str, Any]:
    start = datetime.now(UTC) - lookback(days)
    return {"limit": PAGE_SIZE, "start_time": format_rfc3339(start)}


async def sequential_download(
    base_url: str, token: str, *, days: float, limiter: RateLimiter | None = None
) -> RunResult:
    """Strict sequential paging with `EventsClient` (default limiter: the client's 590/min)."""
    spec = get_stream(STREAM)
    started = time.perf_counter()
    pages = events = 0
    body = reset_body(days)
    async with EventsClient(base_url, ApiToken(token), limiter=limiter or RateLimiter()) as client:
        while True:
            page = await client.fetch_page(spec, body)
            pages += 1
            events += len(page.events)
            if not page.has_more:
                break
            body = {"cursor": page.cursor}
    return RunResult(time.perf_counter() - started, pages, events)


async def raw_download(base_url: str, token: str, *, days: float) -> RunResult:
    """The same paging with bare httpx + orjson: no limiter, no retries, no page checks."""
    path = get_stream(STREAM).path
    started = time.perf_counter()
    pages = events = 0
    body = reset_body(days)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60.0) as http:
        while True:
            response = await http.post(path, content=orjson.dumps(body))
            response.raise_for_status()
            data = orjson.loads(response.content)
            pages += 1
            events += len(data["items"])
            if not data["has_more"]:
                break
            body = {"cursor": data["cursor"]}
    return RunResult(time.perf_counter() - started, pages, events)


def stored_rows(db: Path, log_source: str = STREAM) -> int:
    """Rows of `log_source` in the DuckDB store at `db` (read-only)."""
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            f'SELECT count(*) FROM "{TABLE_NAME}" WHERE log_source = ?', [log_source]
        ).fetchone()
    return int(row[0]) if row else 0


def parse_count(text: str) -> int:
    """`2000`, `100k`, `1.5M` -> an int."""
    value = text.strip().lower().replace("_", "").replace(",", "")
    scale = 1
    if value.endswith("k"):
        value, scale = value[:-1], 1000
    elif value.endswith("m"):
        value, scale = value[:-1], 1_000_000
    number = int(float(value) * scale)
    if number < 1:
        raise ValueError(f"not a positive count: {text!r}")
    return number


def short_count(n: int) -> str:
    """2000000 -> 2M, 100000 -> 100k, 1234 -> 1,234."""
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"
