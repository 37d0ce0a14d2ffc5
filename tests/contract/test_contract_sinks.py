"""The contract every local Sink passes: DuckDBStore (exactly once) and JsonlSink (at least once)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.contract.storehelp import make_events

from opsentinel.schema import COLUMN_NAMES, COLUMNS, TABLE_NAME
from opsentinel.sinks.base import Batch, Receipt, Sink
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.sinks.jsonl import JsonlSink
from opsentinel.state import Checkpoint
from opsentinel.store_read import run_query
from opsentinel.transform import to_row

NOW = datetime(2026, 5, 1, 8, 30, 15, 250000, tzinfo=UTC)


@dataclass
class SinkUnderTest:
    kind: str
    path: Path
    open: Callable[[], Any]
    exactly_once: bool

    def rows(self) -> list[dict[str, Any]]:
        """What the destination holds, each row as {column: JSON-comparable value}."""
        if self.kind == "duckdb":
            columns, rows = run_query(self.path, f'SELECT * FROM "{TABLE_NAME}" ORDER BY log_source, uuid_s')
            assert [c.name for c in columns] == list(COLUMN_NAMES)
            return [_normal(dict(zip(COLUMN_NAMES, r, strict=True))) for r in rows]
        lines = self.path.read_text().splitlines()
        return [_normal(json.loads(line)) for line in lines]


def _normal(row: dict[str, Any]) -> dict[str, Any]:
    """Comparable form: datetimes as aware values, JSON columns parsed."""
    out = {}
    for column in COLUMNS:
        v = row[column.name]
        if v is not None and column.kind == "datetime" and isinstance(v, str):
            v = datetime.fromisoformat(v)
        if v is not None and column.kind == "dynamic" and isinstance(v, str):
            v = json.loads(v)
        out[column.name] = v
    return out


@pytest.fixture(params=["duckdb", "jsonl"])
def sut(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SinkUnderTest]:
    opened: list[Any] = []
    path = tmp_path / ("events.duckdb" if request.param == "duckdb" else "events.jsonl")

    def factory() -> Any:
        sink: Any = DuckDBStore(path) if request.param == "duckdb" else JsonlSink(path)
        opened.append(sink)
        return sink

    yield SinkUnderTest(request.param, path, factory, exactly_once=request.param == "duckdb")
    for sink in opened:
        sink.close()


def deliver(sink: Any, batch: Batch, checkpoint: Checkpoint | None) -> Checkpoint | None:
    """Write the way the pipeline does: rows prepared first (outside its lock), then written; the
    checkpoint goes with the rows only to a transactional sink. Every event is accounted for in the
    receipt; returns the stored checkpoint (None for a sink that stores none)."""
    batch = sink.prepare(batch)
    receipt: Receipt = sink.write(batch, checkpoint) if sink.transactional else sink.write(batch, None)
    assert receipt.delivered + receipt.duplicates + receipt.dead_lettered == len(batch.events)
    assert (receipt.checkpoint is not None) == sink.transactional
    return receipt.checkpoint


def test_declares_its_name_and_capability(sut: SinkUnderTest) -> None:
    sink: Sink = sut.open()
    assert sink.name == sut.kind
    assert sink.transactional is sut.exactly_once
    assert sut.kind in sink.check() or str(sut.path) in sink.check()


def test_a_written_batch_is_durable_and_equals_the_transform(sut: SinkUnderTest) -> None:
    sink = sut.open()
    events = [*make_events("signinattempts", 3), {"uuid": "bare", "timestamp": "2026-01-01T00:00:00.5-01:00"}]
    stored = deliver(
        sink, Batch("signinattempts", events, NOW), Checkpoint("acct", "signinattempts", cursor="c1")
    )
    if sink.transactional:
        assert stored is not None
        assert stored.version == 1
    else:
        assert stored is None
    sink.close()

    want = sorted(
        (_normal(dict(zip(COLUMN_NAMES, to_row("signinattempts", e, NOW), strict=True))) for e in events),
        key=lambda r: r["uuid_s"],
    )
    assert sorted(sut.rows(), key=lambda r: r["uuid_s"]) == want


def test_writing_more_appends(sut: SinkUnderTest) -> None:
    sink = sut.open()
    cp = deliver(
        sink, Batch("auditevents", make_events("auditevents", 5), NOW), Checkpoint("acct", "auditevents")
    )
    sink.close()
    again = sut.open()
    deliver(again, Batch("itemusages", make_events("itemusages", 4), NOW), Checkpoint("acct", "itemusages"))
    deliver(again, Batch("auditevents", make_events("auditevents", 5, start=5), NOW), cp)
    again.close()
    rows = sut.rows()
    assert len(rows) == 14
    assert sorted({r["log_source"] for r in rows}) == ["auditevents", "itemusages"]


def test_redelivered_events_follow_the_sinks_guarantee(sut: SinkUnderTest) -> None:
    sink = sut.open()
    events = make_events("itemusages", 6)
    cp = deliver(sink, Batch("itemusages", events, NOW), Checkpoint("acct", "itemusages", cursor="c1"))
    # A restart after a crash before the checkpoint, or a cursor reset: the same events come again.
    replay = events[2:] + make_events("itemusages", 2, start=6) + [events[0]]
    deliver(sink, Batch("itemusages", replay, NOW), cp)
    sink.close()
    uuids = [r["uuid_s"] for r in sut.rows()]
    assert set(uuids) == {e["uuid"] for e in events} | {
        e["uuid"] for e in make_events("itemusages", 2, start=6)
    }
    if sut.exactly_once:
        assert len(uuids) == 8  # exactly once
    else:
        assert len(uuids) >= 8  # at least once


def test_an_empty_batch_stores_nothing(sut: SinkUnderTest) -> None:
    sink = sut.open()
    deliver(sink, Batch("auditevents", [], NOW), Checkpoint("acct", "auditevents", cursor="c1"))
    sink.close()
    assert (not sut.path.exists()) or sut.rows() == []


def test_health_rows_go_through_the_same_path(sut: SinkUnderTest) -> None:
    sink = sut.open()
    health = {
        "uuid": "H1",
        "timestamp": "2026-05-01T08:30:00Z",
        "category": "failing",
        "type": "connector",
        "details": {"error": "token rejected"},
    }
    sink.write(Batch("healthevents", [health], NOW), None)
    sink.close()
    (row,) = sut.rows()
    assert (row["log_source"], row["category"], row["action_type"]) == (
        "healthevents",
        "failing",
        "connector",
    )
    assert row["details"] == {"error": "token rejected"}
