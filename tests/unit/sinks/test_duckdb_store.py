"""DuckDBStore in one process: table layout, exactly-once rows, checkpoint atomicity, files, errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from tests.contract.storehelp import make_events

from opsentinel import storefile
from opsentinel.errors import CheckpointConflict, StoreError
from opsentinel.schema import COLUMNS, TABLE_NAME
from opsentinel.sinks.base import Batch
from opsentinel.sinks.duckdb import ROW_GROUP_SIZE, DuckDBStore
from opsentinel.state import Checkpoint

NOW = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "op-sentinel.duckdb"


@pytest.fixture
def store(db: Path) -> DuckDBStore:
    s = DuckDBStore(db)
    yield s
    s.close()


def count(path: Path, where: str = "TRUE") -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(con.execute(f'SELECT count(*) FROM "{TABLE_NAME}" WHERE {where}').fetchall()[0][0])
    finally:
        con.close()


def test_the_table_has_the_33_columns_in_order_with_their_types(store: DuckDBStore, db: Path) -> None:
    store.check()
    store.close()
    con = duckdb.connect(str(db), read_only=True)
    described = con.execute(f'DESCRIBE "{TABLE_NAME}"').fetchall()
    con.close()
    spelled = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
    assert [(r[0], r[1]) for r in described] == [
        (c.name, spelled.get(c.duckdb_type, c.duckdb_type)) for c in COLUMNS
    ]


def test_types_as_duckdb_reports_them(store: DuckDBStore, db: Path) -> None:
    store.check()
    store.close()
    con = duckdb.connect(str(db), read_only=True)
    sql = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?"
    types = dict(con.execute(sql, [TABLE_NAME]).fetchall())
    con.close()
    assert types["TimeGenerated"] == "TIMESTAMP WITH TIME ZONE"
    assert types["details"] == "JSON"
    assert types["aux_id"] == "BIGINT"
    assert types["uuid_s"] == "VARCHAR"


def test_the_store_records_its_layout_version(store: DuckDBStore, db: Path) -> None:
    store.check()
    store.close()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT max(version) FROM opsentinel_schema").fetchall() == [
        (storefile.SCHEMA_VERSION,)
    ]
    con.close()


def test_a_store_from_a_newer_release_is_refused(db: Path) -> None:
    DuckDBStore(db).close()
    s = DuckDBStore(db)
    s.check()
    s.close()
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO opsentinel_schema VALUES (99, now())")
    con.close()
    with pytest.raises(StoreError, match="layout version 99"):
        DuckDBStore(db).check()


def test_duplicates_inside_a_batch_are_dropped_first_wins(store: DuckDBStore, db: Path) -> None:
    events = make_events("auditevents", 3)
    twin = dict(events[1], action="changed")
    store.write(Batch("auditevents", [*events, twin, events[0]], NOW), Checkpoint("a", "auditevents"))
    assert store.last_inserted == 3
    store.close()
    assert count(db) == 3
    assert count(db, "action = 'changed'") == 0


def test_a_redelivered_event_is_not_stored_twice(store: DuckDBStore, db: Path) -> None:
    first = make_events("auditevents", 100)
    cp = store.write(Batch("auditevents", first, NOW), Checkpoint("a", "auditevents", cursor="c1")).checkpoint
    # cursor reset: the API sends an overlapping window again, with new events after it
    receipt = store.write(Batch("auditevents", first[50:] + make_events("auditevents", 10, 100), NOW), cp)
    assert (receipt.delivered, receipt.duplicates) == (10, 50)
    assert receipt.checkpoint is not None
    assert (receipt.checkpoint.events_delivered, receipt.checkpoint.events_duplicate) == (110, 50)
    cp = receipt.checkpoint
    assert store.last_inserted == 10
    # a much later batch repeating one old event (its timestamp is far outside the new range)
    store.write(Batch("auditevents", [first[0], *make_events("auditevents", 1, 5000)], NOW), cp)
    assert store.last_inserted == 1
    store.close()
    assert count(db) == 111


def test_uuid_is_unique_per_stream_not_across_streams(store: DuckDBStore, db: Path) -> None:
    event = make_events("auditevents", 1)[0]
    store.write(Batch("auditevents", [event], NOW), Checkpoint("a", "auditevents"))
    store.write(Batch("itemusages", [event], NOW), Checkpoint("a", "itemusages"))
    store.close()
    assert count(db) == 2


def test_events_without_timestamp_or_uuid(store: DuckDBStore, db: Path) -> None:
    no_time = {"uuid": "T0", "action": "x"}
    no_uuid = {"timestamp": "2026-01-01T00:00:00Z", "action": "y"}
    cp = store.write(Batch("auditevents", [no_time, no_uuid], NOW), Checkpoint("a", "auditevents")).checkpoint
    store.write(Batch("auditevents", [no_time, no_uuid], NOW), cp)
    store.close()
    assert count(db, "uuid_s = 'T0'") == 1  # deduplicated among rows without a timestamp
    assert count(db, "uuid_s IS NULL") == 2  # nothing to deduplicate on: kept


def test_a_conflicting_checkpoint_stores_no_rows(store: DuckDBStore, db: Path) -> None:
    cp = store.write(
        Batch("auditevents", make_events("auditevents", 5), NOW), Checkpoint("a", "auditevents", cursor="c1")
    ).checkpoint
    assert cp is not None
    with pytest.raises(CheckpointConflict):
        store.write(
            Batch("auditevents", make_events("auditevents", 5, 5), NOW),
            Checkpoint("a", "auditevents", cursor="c2"),
        )
    assert store.read("a", "auditevents") == cp
    store.close()
    assert count(db) == 5


def test_rows_and_checkpoint_commit_together(store: DuckDBStore, db: Path) -> None:
    cp = Checkpoint("a", "signinattempts")
    for k in range(5):
        cp = store.write(
            Batch("signinattempts", make_events("signinattempts", 20, 20 * k), NOW),
            cp.advanced(cursor=f"c{k}", events_delivered=cp.events_delivered + 20),
        ).checkpoint
    assert cp.version == 5
    assert store.rows_by_stream() == {"signinattempts": 100}
    assert store.newest_event_time("signinattempts") == datetime(2026, 1, 1, 0, 0, 0, 99000, tzinfo=UTC)
    assert store.newest_event_time("auditevents") is None


def test_health_rows_need_no_checkpoint(store: DuckDBStore) -> None:
    health = {"uuid": "h", "timestamp": "2026-05-01T08:30:00Z", "category": "healthy", "type": "connector"}
    receipt = store.write(Batch("healthevents", [health], NOW), None)
    assert (receipt.delivered, receipt.checkpoint) == (1, None)
    assert store.rows_by_stream() == {"healthevents": 1}
    assert store.list() == []


def test_an_empty_batch_still_commits_the_checkpoint(store: DuckDBStore) -> None:
    cp = store.write(Batch("auditevents", [], NOW), Checkpoint("a", "auditevents", cursor="c1")).checkpoint
    assert cp is not None
    assert store.read("a", "auditevents") == cp
    assert store.rows_by_stream() == {}


def test_files_are_private(store: DuckDBStore, db: Path) -> None:
    old = os.umask(0o022)
    try:
        store.write(Batch("auditevents", make_events("auditevents", 10), NOW), Checkpoint("a", "auditevents"))
        for path in db.parent.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        assert os.umask(0o022) == 0o022  # the store restored the process umask
    finally:
        os.umask(old)


def test_the_file_is_given_up_when_idle(tmp_path: Path) -> None:
    db = tmp_path / "idle.duckdb"
    store = DuckDBStore(db, linger=0.05)
    store.write(Batch("auditevents", make_events("auditevents", 3), NOW), Checkpoint("a", "auditevents"))
    deadline = time.monotonic() + 5
    while True:  # another connection mode in this process is refused while the writer holds the file
        try:
            con = duckdb.connect(str(db), read_only=True)
            break
        except duckdb.Error:
            assert time.monotonic() < deadline, "the writer kept the file"
            time.sleep(0.02)
    assert con.execute(f'SELECT count(*) FROM "{TABLE_NAME}"').fetchall() == [(3,)]
    con.close()
    assert not Path(f"{db}.wal").exists()  # closing checkpointed the WAL into the file
    store.write(Batch("auditevents", make_events("auditevents", 3, 3), NOW), None)  # reopens on demand
    assert store.rows_by_stream() == {"auditevents": 6}
    store.close()


def test_not_a_duckdb_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    content = b"my notes, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a DuckDB database") as info:
        DuckDBStore(path).write(Batch("auditevents", make_events("auditevents", 1), NOW), None)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == content


def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "x.duckdb"
    with pytest.raises(StoreError) as info:
        DuckDBStore(path).check()
    assert str(path) in str(info.value)
    assert not path.parent.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_directory_is_a_store_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="ro"):
            DuckDBStore(ro / "x.duckdb").check()
    finally:
        ro.chmod(0o700)


def test_store_error_translation_is_one_line_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    cases = {
        'IO Error: Could not set lock on file "x": Conflicting lock is held in python (PID 1)': "is busy",
        "IO Error: No space left on device\nmore": "disk is full",
        "IO Error: Cannot open file: Permission denied": "permission denied",
        "Catalog Error: something odd\nLINE 1: ...": "something odd",
    }
    for message, expected in cases.items():
        err = storefile.store_error(duckdb.IOException(message), path)
        assert expected in str(err)
        assert str(path) in str(err)
        assert "\n" not in str(err)


def test_a_waiting_reader_ends_the_writers_burst_early(tmp_path: Path) -> None:
    db = tmp_path / "busy.duckdb"
    store = DuckDBStore(db, hold=120)  # only a reader's signal can end this burst before 120 s
    stop = threading.Event()

    def keep_writing() -> None:
        k = 0
        while not stop.is_set():
            store.write(Batch("auditevents", make_events("auditevents", 1, k), NOW), None)
            k += 1
            time.sleep(0.01)

    store.write(Batch("auditevents", make_events("auditevents", 1, 10_000), NOW), None)  # holds the file
    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        reader = subprocess.run(
            [sys.executable, "-c", READ_ONCE, str(db)], capture_output=True, text=True, timeout=120
        )
    finally:
        stop.set()
        writer.join()
        store.close()
    assert reader.returncode == 0, reader.stderr  # got in well within its 30 s, not after 120 s
    assert int(reader.stdout) >= 1
    signal = storefile.reader_signal_path(db)
    assert stat.S_IMODE(signal.stat().st_mode) == 0o600


READ_ONCE = """
import sys
from opsentinel.store_read import open_reader
con = open_reader(sys.argv[1], wait=30)
print(con.execute('SELECT count(*) FROM "OnePasswordEventLogs_CL"').fetchall()[0][0])
con.close()
"""


def test_the_writer_makes_small_row_groups(store: DuckDBStore, db: Path) -> None:
    # Each checkpoint compresses the last, partly filled row group again: small ones keep that cheap.
    cp = Checkpoint("a", "auditevents")
    for page in range(40):
        cp = store.write(
            Batch("auditevents", make_events("auditevents", 1000, page * 1000), NOW), cp
        ).checkpoint
    store.close()
    con = duckdb.connect(str(db), read_only=True)
    sizes = con.execute(
        "SELECT row_group_id, max(count) FROM pragma_storage_info(?) GROUP BY row_group_id", [TABLE_NAME]
    ).fetchall()
    con.close()
    assert sum(n for _, n in sizes) == 40_000
    assert max(n for _, n in sizes) <= ROW_GROUP_SIZE < 122_880


def test_the_writer_spills_beside_the_store_not_in_the_working_directory(
    store: DuckDBStore, db: Path
) -> None:
    with store._conn.transaction() as con:
        (spill,) = con.execute("SELECT current_setting('temp_directory')").fetchall()[0]
    assert Path(spill) == Path(f"{db}.tmp")
