"""`op-sentinel demo`: the simulator, one `run --once` into a throw-away DuckDB file, and a summary."""

# ruff: noqa: S608  (SQL here is built from the table-name constant only)
from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from opsentinel.commands import run_async
from opsentinel.config import Settings
from opsentinel.errors import ConfigError
from opsentinel.schema import TABLE_NAME
from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.store_read import run_query

DEFAULT_STORE = Path("op-sentinel.duckdb")


def run_demo(db: Path, *, events: int, days: float, seed: int = 1) -> None:
    """Replace `db` with a fresh store filled from a simulator, then print what it holds."""
    if db.resolve() == DEFAULT_STORE.resolve():
        raise ConfigError(f"the demo replaces its store; pick another --db than the default {DEFAULT_STORE}")
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    sim_config = SimulatorConfig(events=events, days=days, seed=seed, trickle=6.0)
    with SimulatorServer(sim_config) as sim:
        print(f"simulator: {sim.base_url} ({events:,} events per stream over {days:g} days)")
        settings = Settings(
            base_url=sim.base_url,
            token=SecretStr(sim.token),
            db=db,
            lookback=timedelta(days=days + 1),
        )
        code = asyncio.run(run_async(settings, once=True, progress=sys.stderr.isatty()))
    if code != 0:
        raise ConfigError("the demo run did not finish; see the messages above")
    _summary(db)


def _summary(db: Path) -> None:
    _, per_stream = run_query(
        db,
        f"SELECT log_source, count(*) AS rows, min(timestamp) AS oldest, max(timestamp) AS newest "
        f"FROM {TABLE_NAME} GROUP BY 1 ORDER BY 1",
    )
    print(f"\n{TABLE_NAME} in {db}:")
    for log_source, rows, oldest, newest in per_stream:
        print(f"  {log_source:<15} {rows:>7,} rows  {oldest:%Y-%m-%d %H:%M} .. {newest:%Y-%m-%d %H:%M} UTC")
    _, samples = run_query(
        db,
        f"""SELECT log_source, strftime(timestamp, '%Y-%m-%d %H:%M:%S') AS event_time,
                   coalesce(action, category) AS what, coalesce(object_type, action_type) AS kind,
                   coalesce(actor_details->>'email', target_user->>'email', "user"->>'email') AS who
            FROM {TABLE_NAME} WHERE log_source <> 'healthevents'
            QUALIFY row_number() OVER (PARTITION BY log_source ORDER BY timestamp DESC) <= 2
            ORDER BY log_source, event_time DESC""",
    )
    print("\nA few rows:")
    for log_source, at, what, kind, who in samples:
        print(f"  {at}  {log_source:<15} {what or '':<20} {kind or '':<22} {who or ''}")
    print(
        "\nQuery them (read-only, works while `run` is running):\n"
        f"  .venv/bin/op-sentinel query --db {db} "
        f'"SELECT log_source, count(*) FROM {TABLE_NAME} GROUP BY 1"\n'
        f"  .venv/bin/op-sentinel query --db {db} --format json "
        f"\"SELECT * FROM {TABLE_NAME} WHERE log_source = 'signinattempts' LIMIT 3\"\n"
        f"  .venv/bin/op-sentinel status --db {db}"
    )
