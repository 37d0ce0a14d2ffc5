"""DuckDBStore across real processes: readers during writes, kill -9, a held lock, a full disk."""

from __future__ import annotations

import random
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from tests.contract.storehelp import make_events, spawn, wait_for_line

from opsentinel.errors import StoreError
from opsentinel.schema import TABLE_NAME
from opsentinel.sinks.base import Batch
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.state import Checkpoint
from opsentinel.store_read import open_reader

NOW = datetime(2026, 5, 1, tzinfo=UTC)
COUNTS = f'SELECT count(*), count(DISTINCT uuid_s) FROM "{TABLE_NAME}"'


def stored(path: Path) -> tuple[int, int, int]:
    """(rows, distinct uuids, checkpoint events_delivered) as a fresh reader sees them."""
    con = open_reader(path, wait=10)
    try:
        rows, distinct = con.execute(COUNTS).fetchall()[0]
        cps = con.execute("SELECT events_delivered FROM opsentinel_checkpoints").fetchall()
    finally:
        con.close()
    return int(rows), int(distinct), int(cps[0][0]) if cps else 0


def test_readers_never_fail_while_a_writer_runs(tmp_path: Path) -> None:
    db = tmp_path / "shared.duckdb"
    stop = tmp_path / "stop"
    writer = spawn("writer", str(db), "60", "200", str(stop))
    assert wait_for_line(writer)["ready"]
    wait_for_line(writer)  # the first commit is in
    readers = [spawn("reader", str(db), "4"), spawn("reader", str(db), "4")]
    outputs = [r.communicate(timeout=60) for r in readers]
    stop.touch()
    _, w_err = writer.communicate(timeout=60)
    assert writer.returncode == 0, w_err
    for reader, (out, err) in zip(readers, outputs, strict=True):
        assert reader.returncode == 0, err  # never "busy", never any other error
        seen = [eval_line(line) for line in out.splitlines()]
        assert len(seen) == 4
        counts = [s["rows"] for s in seen]
        assert counts == sorted(counts), "a reader saw the row count go down"
        assert all(s["rows"] == s["checkpoint"] for s in seen), "rows and checkpoint out of step"
        assert counts[0] > 0
    rows, distinct, delivered = stored(db)
    assert rows == distinct == delivered


def eval_line(line: str) -> dict[str, int]:
    import json

    return dict(json.loads(line))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_any_moment_loses_nothing_and_stores_nothing_twice(tmp_path: Path, seed: int) -> None:
    db = tmp_path / "crash.duckdb"
    rng = random.Random(seed)
    for _ in range(2):  # crash, recover, crash again on the recovered file
        writer = spawn("writer", str(db), "0", "300")
        wait_for_line(writer)
        for _ in range(rng.randint(1, 6)):
            wait_for_line(writer)
        time.sleep(rng.random() * 0.05)
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=30)
        rows, distinct, delivered = stored(db)
        assert rows == distinct == delivered, "after kill -9 rows and checkpoint disagree"

    # The run resumes from the checkpoint; re-delivering the last page again adds nothing.
    store = DuckDBStore(db)
    cp = store.read("acct", "auditevents")
    assert cp is not None
    last_page = make_events("auditevents", 300, start=cp.events_delivered - 300)
    store.write(Batch("auditevents", last_page, NOW), cp)
    assert store.last_inserted == 0
    store.close()


def test_a_held_file_is_a_clear_busy_error(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    first = DuckDBStore(db)
    first.check()
    first.close()
    holder = spawn("hold", str(db), "rw")
    try:
        wait_for_line(holder)
        with pytest.raises(StoreError, match="is busy: another process holds it") as info:
            DuckDBStore(db, lock_wait=0.3).check()
        assert str(db) in str(info.value)
        with pytest.raises(StoreError, match="is busy"):
            open_reader(db, wait=0.3)
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    after = DuckDBStore(db)
    assert "rows" in after.check()
    after.close()


def test_the_writer_waits_for_a_reader_to_let_go(tmp_path: Path) -> None:
    db = tmp_path / "wait.duckdb"
    store = DuckDBStore(db)
    store.check()
    store.close()
    holder = spawn("hold", str(db), "ro")
    wait_for_line(holder)
    threading.Timer(0.5, holder.kill).start()
    cp = store.write(
        Batch("auditevents", make_events("auditevents", 3), NOW), Checkpoint("acct", "auditevents")
    ).checkpoint
    holder.communicate(timeout=30)
    assert cp is not None
    assert store.rows_by_stream() == {"auditevents": 3}
    store.close()


def test_a_full_disk_fails_the_write_and_keeps_what_was_stored(tmp_path: Path) -> None:
    db = tmp_path / "full.duckdb"
    store = DuckDBStore(db)
    cp = store.write(
        Batch("auditevents", make_events("auditevents", 100), NOW), Checkpoint("acct", "auditevents")
    ).checkpoint
    store.close()
    limit = db.stat().st_size + 64 * 1024  # the 5000-event batch needs far more
    child = spawn("limited-write", "duckdb", str(db), str(limit))
    result = wait_for_line(child, timeout=60)
    child.communicate(timeout=30)
    assert result["error"] is not None, "the write should have failed"
    assert str(db) in result["error"]
    assert "\n" not in result["error"]
    rows, distinct, _ = stored(db)
    assert rows == distinct == 100
    again = DuckDBStore(db)
    assert again.read("acct", "auditevents") == cp
    again.write(Batch("auditevents", make_events("auditevents", 10, 100), NOW), cp)  # still usable
    assert again.rows_by_stream() == {"auditevents": 110}
    again.close()


def test_plain_duckdb_can_read_the_store(tmp_path: Path) -> None:
    db = tmp_path / "plain.duckdb"
    store = DuckDBStore(db)
    store.write(Batch("itemusages", make_events("itemusages", 2), NOW), Checkpoint("acct", "itemusages"))
    store.close()
    con = duckdb.connect(str(db), read_only=True)
    got = con.execute(f"""SELECT "user"->>'email', used_version FROM "{TABLE_NAME}" LIMIT 1""").fetchall()
    con.close()
    assert got == [("jsmith@example.com", 123)]
