"""op-sentinel as a library: one poll cycle per call, as a serverless timer would run it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
import pytest
from pydantic import SecretStr

from opsentinel import connector as connector_module
from opsentinel.config import load_settings
from opsentinel.connector import Connector
from opsentinel.destination import Destination
from opsentinel.errors import StoreError
from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.state import StreamStatus


def _timer_tick(base_url: str, token: str, db: Path) -> list[str | None]:
    """What a timer-triggered function does: start, one poll cycle, close."""
    settings = load_settings(
        {"base_url": base_url, "db": str(db), "backfill_workers": 2},
        environ={"OP_SENTINEL_TOKEN": token},
        config_path=None,
    )

    async def tick() -> list[str | None]:
        async with await Connector.start(settings) as connector:
            return [r.error for r in await connector.poll_cycle()]

    return asyncio.run(tick())


def test_each_timer_tick_polls_once_and_stores_every_event_once(tmp_path: Path) -> None:
    db = tmp_path / "timer.duckdb"
    with SimulatorServer(SimulatorConfig(events=400, seed=21, rate_limit_per_minute=0)) as sim:
        assert _timer_tick(sim.base_url, sim.token, db) == [None, None, None]
        for stream in ("auditevents", "signinattempts", "itemusages"):
            sim.add_events(stream, 7)
        assert _timer_tick(sim.base_url, sim.token, db) == [None, None, None]
        expected = {
            s: {e["uuid"] for e in sim.events(s)} for s in ("auditevents", "signinattempts", "itemusages")
        }
    with duckdb.connect(str(db), read_only=True) as con:
        for stream, uuids in expected.items():
            rows = [
                r[0]
                for r in con.execute(
                    "SELECT uuid_s FROM OnePasswordEventLogs_CL WHERE log_source = ?", [stream]
                ).fetchall()
            ]
            assert len(rows) == len(set(rows))
            assert set(rows) == uuids


class _BrokenStatus:
    """A status store whose disk is gone: every write fails."""

    def __init__(self) -> None:
        self.tries = 0

    def write_status(self, status: StreamStatus) -> None:
        self.tries += 1
        raise StoreError("cannot write status/x.json: No space left on device")

    def read_statuses(self) -> list[StreamStatus]:
        return []


def test_a_status_that_cannot_be_written_is_retried_and_reported_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "status.duckdb"
    settings = load_settings({"db": str(db), "backfill_workers": 2}, environ={}, config_path=None)
    broken = _BrokenStatus()
    with SimulatorServer(SimulatorConfig(events=100, seed=22, rate_limit_per_minute=0)) as sim:
        settings = settings.model_copy(update={"base_url": sim.base_url, "token": SecretStr(sim.token)})

        async def tick() -> list[str | None]:
            store = DuckDBStore(db)
            destination = Destination(store, store, broken, f"duckdb {db}")
            async with await Connector.start(settings, destination=destination) as connector:
                return [r.error for r in await connector.poll_cycle()]

        errors = asyncio.run(tick())
    assert errors == [None, None, None], "events were delivered although the status could not be written"
    assert broken.tries == connector_module.STATUS_TRIES  # each try stops at its first stream
    assert "could not record stream status" in caplog.text
