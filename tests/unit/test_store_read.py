"""store_read: strictly read-only queries, a missing store, bad SQL, and the status summary."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.contract.storehelp import make_events

from opsentinel.errors import StoreError
from opsentinel.schema import TABLE_NAME
from opsentinel.sinks.base import Batch
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.state import Checkpoint, StreamStatus
from opsentinel.store_read import read_summary, run_query

NOW = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "read.duckdb"
    store = DuckDBStore(path)
    store.write(
        Batch("signinattempts", make_events("signinattempts", 4), NOW), Checkpoint("acct", "signinattempts")
    )
    store.write(Batch("auditevents", make_events("auditevents", 2), NOW), Checkpoint("acct", "auditevents"))
    store.write_status(StreamStatus("acct", "auditevents", last_error="boom", last_error_at=NOW))
    store.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_missing_store_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.duckdb"
    with pytest.raises(StoreError, match=f"no store at {path}"):
        run_query(path, "SELECT 1")
    with pytest.raises(StoreError, match="no store at"):
        read_summary(path)
    assert list(tmp_path.iterdir()) == []


def test_query_returns_columns_with_types_and_rows(db: Path) -> None:
    columns, rows = run_query(
        db,
        f'SELECT log_source, count(*) AS n, max(details) AS d FROM "{TABLE_NAME}" GROUP BY 1 ORDER BY 1',
    )
    assert [c.name for c in columns] == ["log_source", "n", "d"]
    assert columns[2].type == "JSON"
    assert rows == [("auditevents", 2, None), ("signinattempts", 4, '{"value":"Europe"}')]


def test_timestamps_come_back_in_utc(db: Path) -> None:
    _, rows = run_query(db, f'SELECT min("timestamp") FROM "{TABLE_NAME}"')
    assert rows[0][0] == datetime(2026, 1, 1, tzinfo=UTC)
    assert rows[0][0].utcoffset().total_seconds() == 0


def test_bad_sql_is_one_line_with_duckdbs_message(db: Path) -> None:
    with pytest.raises(StoreError) as info:
        run_query(db, "SELEC nonsense FROM nowhere")
    message = str(info.value)
    assert "\n" not in message
    assert "syntax error" in message.lower()
    with pytest.raises(StoreError, match="no_such_table"):
        run_query(db, "SELECT * FROM no_such_table")


@pytest.mark.parametrize(
    "sql",
    [
        f"INSERT INTO \"{TABLE_NAME}\" (uuid_s) VALUES ('x')",
        f'DELETE FROM "{TABLE_NAME}"',
        f"UPDATE \"{TABLE_NAME}\" SET uuid_s = 'x'",
        f'DROP TABLE "{TABLE_NAME}"',
        "DROP TABLE opsentinel_checkpoints",
        "CREATE TABLE evil (a INT)",
        "ATTACH 'other.duckdb' AS other",
        "ATTACH ':memory:' AS scratch",
        f"COPY \"{TABLE_NAME}\" TO 'dump.csv'",
        "COPY (SELECT 1) TO '/tmp/op-sentinel-should-not-exist.csv'",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "INSTALL httpfs",
        "SELECT * FROM read_csv('/etc/passwd')",
        "CHECKPOINT; DROP TABLE opsentinel_checkpoints",
    ],
)
def test_writing_sql_fails_clearly_and_changes_nothing(
    db: Path, sql: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = digest(db)
    with pytest.raises(StoreError) as info:
        run_query(db, sql)
    assert "\n" not in str(info.value)
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["read.duckdb"]
    assert not Path("/tmp/op-sentinel-should-not-exist.csv").exists()
    _, rows = run_query(db, f'SELECT count(*) FROM "{TABLE_NAME}"')
    assert rows == [(6,)]


def test_summary_has_checkpoints_statuses_rows_and_newest_times(db: Path) -> None:
    summary = read_summary(db)
    assert [(c.stream, c.version) for c in summary.checkpoints] == [("auditevents", 1), ("signinattempts", 1)]
    assert summary.rows_by_stream == {"auditevents": 2, "signinattempts": 4}
    assert summary.newest_event_time["signinattempts"] == datetime(2026, 1, 1, 0, 0, 0, 3000, tzinfo=UTC)
    (status,) = summary.statuses
    assert (status.stream, status.last_error, status.last_error_at) == ("auditevents", "boom", NOW)


def test_summary_of_a_database_without_our_tables_is_empty(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).close()
    summary = read_summary(path)
    assert (summary.checkpoints, summary.statuses, summary.rows_by_stream) == ([], [], {})
