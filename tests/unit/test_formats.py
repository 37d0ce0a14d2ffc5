"""formats: query output as table, json, jsonl and csv, with nested JSON and RFC 3339 times."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from tests.contract.storehelp import make_events

from opsentinel.formats import FORMATS, write_result
from opsentinel.schema import TABLE_NAME
from opsentinel.sinks.base import Batch
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.state import Checkpoint
from opsentinel.store_read import ResultColumn, run_query

COLUMNS = [
    ResultColumn("uuid_s", "VARCHAR"),
    ResultColumn("timestamp", "TIMESTAMP WITH TIME ZONE"),
    ResultColumn("details", "JSON"),
    ResultColumn("aux_id", "BIGINT"),
]
ROWS = [
    ("A", datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC), '{"value":"Europe","n":[1,2]}', 7),
    ("B", datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))), None, None),
]


def render(fmt: str, columns: list[ResultColumn] = COLUMNS, rows: list[tuple[object, ...]] = ROWS) -> str:
    out = io.StringIO()
    write_result(columns, rows, fmt, out)
    return out.getvalue()


def test_json_is_one_array_with_nested_json_and_utc_times() -> None:
    data = json.loads(render("json"))
    assert data == [
        {
            "uuid_s": "A",
            "timestamp": "2026-01-02T03:04:05.600000Z",
            "details": {"value": "Europe", "n": [1, 2]},
            "aux_id": 7,
        },
        {"uuid_s": "B", "timestamp": "2026-01-02T03:04:05Z", "details": None, "aux_id": None},
    ]


def test_jsonl_is_one_object_a_line() -> None:
    lines = render("jsonl").splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["details"] == {"value": "Europe", "n": [1, 2]}
    assert json.loads(lines[1])["timestamp"] == "2026-01-02T03:04:05Z"


def test_json_of_no_rows_is_an_empty_array() -> None:
    assert json.loads(render("json", rows=[])) == []
    assert render("jsonl", rows=[]) == ""


def test_csv_has_a_header_and_json_text() -> None:
    parsed = list(csv.reader(io.StringIO(render("csv"))))
    assert parsed == [
        ["uuid_s", "timestamp", "details", "aux_id"],
        ["A", "2026-01-02T03:04:05.600000Z", '{"value":"Europe","n":[1,2]}', "7"],
        ["B", "2026-01-02T03:04:05Z", "", ""],
    ]


def test_table_shows_values_literally() -> None:
    text = render("table", rows=[("[bold]x[/bold]", None, '["a"]', 1)])
    assert "[bold]x[/bold]" in text  # data, not rich markup
    assert '["a"]' in text
    assert "1 row" in text


def test_other_sql_types_are_written_faithfully() -> None:
    columns = ["d", "day", "span", "blob", "naive", "nan", "lst", "struct"]
    row = (
        Decimal("12.50"),
        date(2026, 1, 2),
        timedelta(days=3),
        b"\x00\x01",
        datetime(2026, 1, 2, 3, 4, 5),
        float("nan"),
        [1, None],
        {"k": datetime(2026, 1, 1, tzinfo=UTC)},
    )
    data = json.loads(render("json", columns, [row]))[0]  # type: ignore[arg-type]
    assert data == {
        "d": 12.5,
        "day": "2026-01-02",
        "span": "3 days, 0:00:00",
        "blob": "AAE=",
        "naive": "2026-01-02T03:04:05Z",
        "nan": None,
        "lst": [1, None],
        "struct": {"k": "2026-01-01T00:00:00Z"},
    }
    assert render("jsonl", columns, [row]).count("\n") == 1  # type: ignore[arg-type]


def test_an_unknown_format_is_refused() -> None:
    assert FORMATS == ("table", "json", "jsonl", "csv")
    with pytest.raises(ValueError, match="unknown format"):
        render("xml")


def test_a_real_query_round_trips_through_json(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    store = DuckDBStore(db)
    store.write(
        Batch("signinattempts", make_events("signinattempts", 1), datetime.now(UTC)),
        Checkpoint("a", "signinattempts"),
    )
    store.close()
    columns, rows = run_query(db, f'SELECT * FROM "{TABLE_NAME}"')
    (obj,) = json.loads(render("json", columns, rows))
    assert list(obj) == [c.name for c in columns]
    assert obj["target_user"]["email"] == "jsmith@example.com"
    assert obj["location"] == {
        "country": "CA",
        "region": "Ontario",
        "city": "Toronto",
        "longitude": 43.64,
        "latitude": -79.433,
    }
    assert obj["timestamp"] == "2026-01-01T00:00:00Z"
    assert obj["TimeGenerated"].endswith("Z")
    assert obj["SourceSystem"] is None
