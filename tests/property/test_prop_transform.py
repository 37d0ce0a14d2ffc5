"""Property tests of the row mapping: any event the API could send becomes a row of the right shape
(or, in the page parser, a recorded rejection), never an exception that would stop a stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.property.propstrategies import events, rfc3339

from opsentinel.schema import COLUMN_NAMES, COLUMNS, DCR_INPUT_COLUMNS
from opsentinel.sinks.base import Batch
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.sinks.sentinel_chunks import plan_chunks
from opsentinel.source.page import parse_page
from opsentinel.state import Checkpoint
from opsentinel.timefmt import parse_rfc3339
from opsentinel.transform import to_columns, to_dcr_record, to_row
from opsentinel.transform_arrow import ARROW_SCHEMA, to_arrow

INGESTED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
STREAMS = st.sampled_from(["auditevents", "signinattempts", "itemusages"])
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_value(kind: str, value: Any) -> None:
    if value is None:
        return
    if kind == "string":
        assert isinstance(value, str)
    elif kind == "datetime":
        assert isinstance(value, datetime) and value.utcoffset() is not None
    elif kind == "dynamic":
        assert isinstance(value, str)
        json.loads(value)  # JSON text DuckDB can cast
    else:
        assert isinstance(value, int) and not isinstance(value, bool)
        assert -(2**63) <= value < 2**63


@FAST
@given(stream=STREAMS, event=events())
def test_any_event_maps_to_a_row_of_the_table_shape(stream: str, event: dict[str, Any]) -> None:
    row = to_row(stream, event, INGESTED)
    assert len(row) == len(COLUMNS)
    for column, value in zip(COLUMNS, row, strict=True):
        _check_value(column.kind, value)
    named = dict(zip((c.name for c in COLUMNS), row, strict=True))
    assert named["log_source"] == stream
    assert named["TimeGenerated"] == INGESTED
    assert named["SourceSystem"] is None
    if isinstance(event.get("uuid"), str):
        assert named["uuid_s"] == event["uuid"]


@FAST
@given(stream=STREAMS, event=events())
def test_any_event_maps_to_a_sendable_dcr_record(stream: str, event: dict[str, Any]) -> None:
    record = to_dcr_record(stream, event)
    assert set(record) <= {c.name for c in DCR_INPUT_COLUMNS} | {"log_source"}
    assert record["log_source"] == stream
    plan = plan_chunks([record])  # serialises, cuts fields over 64 KiB, or reports it oversized
    sent = [item.record for chunk in plan.chunks for item in chunk.items]
    assert len(sent) + len(plan.oversized) == 1
    for chunk in plan.chunks:
        assert isinstance(orjson.loads(chunk.body()), list)


@settings(max_examples=300, deadline=None)
@given(stamp=rfc3339())
def test_any_timestamp_is_accepted_with_its_time_or_rejected(stamp: str) -> None:
    body = orjson.dumps({"cursor": "c1", "has_more": False, "items": [{"uuid": "U1", "timestamp": stamp}]})
    page = parse_page("auditevents", body, {})
    if page.events:
        (row,) = [to_row("auditevents", e, INGESTED) for e in page.events]
        assert row[4] == parse_rfc3339(stamp) == page.newest_timestamp
    else:
        assert "timestamp" in page.rejected[0].reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=STREAMS, items=st.lists(events(), max_size=4))
def test_every_item_of_a_page_is_an_event_with_a_row_or_a_rejection(stream: str, items: list[Any]) -> None:
    body = orjson.dumps({"cursor": "c1", "has_more": False, "items": items})
    page = parse_page(stream, body, {})
    assert len(page.events) + len(page.rejected) == len(items)
    assert sorted([r.index for r in page.rejected]) == [r.index for r in page.rejected]
    for event in page.events:
        row = dict(zip((c.name for c in COLUMNS), to_row(stream, event, INGESTED), strict=True))
        # What the page accepted, the row keeps: the uuid and the event's own time.
        assert row["uuid_s"] == event["uuid"]
        assert row["timestamp"] == parse_rfc3339(event["timestamp"])


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=STREAMS, items=st.lists(events(valid_keys=True), min_size=1, max_size=5))
def test_duckdb_stores_any_accepted_page_once(tmp_path_factory: Any, stream: str, items: list[Any]) -> None:
    page = parse_page(stream, orjson.dumps({"cursor": "c1", "has_more": False, "items": items}), {})
    db = Path(tmp_path_factory.mktemp("prop")) / "p.duckdb"
    store = DuckDBStore(db)
    try:
        cp = store.write(Batch(stream, page.events, INGESTED), Checkpoint("acct", stream)).checkpoint
        store.write(Batch(stream, page.events, INGESTED), cp)  # the page again, as after a crash
        rows = store.rows_by_stream()
    finally:
        store.close()
    assert rows.get(stream, 0) == len({e["uuid"] for e in page.events})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=STREAMS, items=st.lists(events(), max_size=4))
def test_the_times_a_page_parsed_fill_the_same_columns(stream: str, items: list[Any]) -> None:
    # Sinks take the page's parsed times instead of parsing `timestamp` again: the rows must not change.
    page = parse_page(stream, orjson.dumps({"cursor": "c1", "has_more": False, "items": items}), {})
    assert to_columns(stream, page.events, INGESTED, page.times) == to_columns(stream, page.events, INGESTED)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=STREAMS, items=st.lists(events(), max_size=5))
def test_the_arrow_table_holds_exactly_the_columns_of_to_columns(stream: str, items: list[Any]) -> None:
    # The DuckDB sink loads `to_arrow`, whose string columns take pyarrow's fast path when every value
    # is a string (and the Python path otherwise): either way, the values of `to_columns`.
    page = parse_page(stream, orjson.dumps({"cursor": "c1", "has_more": False, "items": items}), {})
    table = to_arrow(stream, page.events, INGESTED, page.times)
    assert table.schema == ARROW_SCHEMA
    assert table.to_pydict() == dict(
        zip(COLUMN_NAMES, to_columns(stream, page.events, INGESTED, page.times), strict=True)
    )
