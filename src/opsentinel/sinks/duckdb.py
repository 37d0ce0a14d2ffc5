"""The embedded default sink: a DuckDB file that stores the rows *and* the checkpoints.

`DuckDBStore(path)` is a Sink (name "duckdb", transactional) and a CheckpointStore and StatusStore.

Exactly once. `write(batch, checkpoint)` runs ONE transaction: it inserts the batch's new rows and
commits the checkpoint if its version still equals the stored one (0 = none stored), else raises
CheckpointConflict and stores nothing. DuckDB's WAL makes the transaction atomic and durable, so a
crash at any moment leaves either the rows and the new cursor, or neither.

Duplicates. `uuid_s` is unique per `log_source`. Duplicates inside a batch are dropped (first wins);
an event delivered again (cursor reset, replay) is not stored again. The check is an anti-join
against the stored rows of the same `log_source` whose `timestamp` lies in the batch's [min, max]
range: an event's timestamp never changes, so any earlier copy lies in that range, and DuckDB's
zone maps skip every row group outside it. Rows without a timestamp are compared with the stored
rows without one. Measured on 2M audit events in 1000-event batches (2 shared cores, memory_limit
64 MB):

    anti-join on the time range   the check costs ~2 ms per batch, flat as the table grows;
                                  file 25 MB; peak RSS ~200 MB for the whole process
    PRIMARY KEY (log_source, uuid_s) with INSERT OR IGNORE
                                  the insert grows to ~50 ms per batch at 2M rows; file 147 MB

so no index is kept on the event table. The checkpoint and status tables are tiny and keyed.

Bulk insert. A batch becomes one Arrow table (`transform_arrow.to_arrow`: the values of
`transform.to_columns`, dynamic columns as Arrow's JSON type, so DuckDB does not parse our own JSON
text again), inserted with one INSERT ... SELECT (never row by row). `prepare` builds the table ahead
of `write`, so the pipeline builds one page's table while another page is being stored.
The writer attaches the file with row groups of `ROW_GROUP_SIZE` rows (see there). DuckDB
gets `memory_limit` (32 MB: the store's share of the connector's 300 MB budget; more only raises RSS,
a 1000-row batch needs far less) and one thread.

Sharing the file with readers. DuckDB admits one read-write process or many read-only ones. The
writer therefore holds the file only in bursts: a connection is opened for a transaction, reused by
the transactions that follow, and closed after `linger` seconds (0.2) without use, when `hold`
seconds (5) are up, or as soon as a reader asks for the file (a background thread does the idle
close). It is not reopened until `gap` seconds (0.06) later, so the waiting reader gets its turn.
Readers (`store_read.open_reader`) open read-only and retry on lock errors until their `wait`; while
they wait they touch `<store>.wait` (`storefile.signal_reader_waiting`), which the writer checks
after each transaction. Each close folds the WAL into the file, which costs a fixed part per close:
closing after every ~12 pages took ~25 % more DuckDB time per page than after every ~60. The writer
likewise retries its own open for up to `lock_wait` seconds while readers hold the file.

Files are created owner-only (0600): the process umask is narrowed to 077 while the store opens or
writes, so the database, its WAL and spill files are never readable by others.
"""

# ruff: noqa: S608  (SQL text here is built from module constants only; values are always bound)
from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from opsentinel import storefile
from opsentinel.errors import CheckpointConflict
from opsentinel.schema import COLUMN_NAMES, TABLE_NAME
from opsentinel.sinks.base import Batch, Receipt
from opsentinel.state import Checkpoint, StreamStatus
from opsentinel.transform_arrow import to_arrow
from opsentinel.writerlock import WriterLock

__all__ = ["DuckDBStore"]

log = logging.getLogger(__name__)

ROW_GROUP_SIZE: Final = 16_384
"""Rows per row group the writer makes (DuckDB's default is 122,880). Each checkpoint compresses the
last, partly filled row group again; with small row groups that is little. Measured on 300 pages of
1,000 events with a checkpoint every ~22 pages: 25-31 ms of CPU per page at 122,880 rows, 18-21 ms
at 16,384; the file is 19.0 MB instead of 23.5 MB."""
_UUID: Final = COLUMN_NAMES.index("uuid_s")
_TIMESTAMP: Final = COLUMN_NAMES.index("timestamp")
_BATCH_VIEW: Final = "opsentinel_batch"
_EXISTING: Final = f'SELECT uuid_s FROM "{TABLE_NAME}" WHERE log_source = ? AND '
_SIGNAL_SLACK_NS: Final = 20_000_000  # file mtimes lag the clock by up to a few ms (coarse ticks)


# --- owner-only files ---------------------------------------------------------------------------

_umask_lock = threading.Lock()
_umask_depth = 0
_umask_saved = 0


@contextmanager
def _private_umask() -> Iterator[None]:
    """umask 077 while inside (re-entrant across threads; restored when the last one leaves)."""
    global _umask_depth, _umask_saved
    with _umask_lock:
        if _umask_depth == 0:
            _umask_saved = os.umask(0o077)
        _umask_depth += 1
    try:
        yield
    finally:
        with _umask_lock:
            _umask_depth -= 1
            if _umask_depth == 0:
                os.umask(_umask_saved)


# --- the writer's connection, held in bursts ------------------------------------------------------


class _BurstConnection:
    """One read-write connection, opened on demand and given up often (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        *,
        hold: float,
        linger: float,
        gap: float,
        lock_wait: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.path = path
        self._config = config
        self._hold, self._linger, self._gap, self._lock_wait = hold, linger, gap, lock_wait
        self._clock = clock
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened_at = self._last_used = 0.0
        self._opened_ns = 0  # wall clock, to compare with the reader signal's mtime
        self._closed_at = float("-inf")
        self._closer: threading.Thread | None = None

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN ... COMMIT; rolled back if the body raises.

        duckdb errors leave as StoreError and discard the connection (DuckDB may have invalidated it).
        """
        with self._lock, _private_umask():
            con = self._open()
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                    con.execute("COMMIT")
                except BaseException:
                    _rollback(con)
                    raise
            except duckdb.Error as exc:
                self._discard()
                raise storefile.store_error(exc, self.path) from exc
            finally:
                self._after_use()

    def close(self) -> None:
        with self._lock:
            self._close()
            self._wake.notify_all()

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self._con is not None:
            return self._con
        pause = self._gap - (time.monotonic() - self._closed_at)
        if pause > 0:
            time.sleep(pause)  # let a waiting reader in between two bursts
        con = storefile.connect(
            self.path,
            read_only=False,
            wait=self._lock_wait,
            config=self._config,
            row_group_size=ROW_GROUP_SIZE,
        )
        try:
            storefile.ensure_schema(con, self.path, self._clock())
        except duckdb.Error as exc:
            con.close()
            raise storefile.store_error(exc, self.path) from exc
        except BaseException:
            con.close()
            raise
        self._con = con
        self._opened_at = time.monotonic()
        self._opened_ns = time.time_ns()
        return con

    def _after_use(self) -> None:
        if self._con is None:
            return
        self._last_used = time.monotonic()
        if self._last_used - self._opened_at >= self._hold or storefile.reader_waiting_since(
            self.path, self._opened_ns - _SIGNAL_SLACK_NS
        ):
            self._close()
        elif self._closer is None:
            self._closer = threading.Thread(target=self._close_when_idle, name="duckdb-closer", daemon=True)
            self._closer.start()

    def _close_when_idle(self) -> None:
        with self._lock:
            try:
                while self._con is not None:
                    due = min(self._last_used + self._linger, self._opened_at + self._hold)
                    now = time.monotonic()
                    if now >= due:
                        self._close()
                        break
                    self._wake.wait(due - now)
            finally:
                self._closer = None

    def _close(self) -> None:
        con, self._con = self._con, None
        if con is None:
            return
        self._closed_at = time.monotonic()
        try:
            con.close()  # checkpoints the WAL into the file; if that fails, the WAL still has it all
        except duckdb.Error as exc:
            log.warning("closing the store %s: %s", self.path, storefile.one_line(exc))
        self._closed_at = time.monotonic()

    def _discard(self) -> None:
        con, self._con = self._con, None
        self._closed_at = time.monotonic()
        if con is not None:
            try:
                con.close()
            except duckdb.Error:
                pass


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


# --- the store ----------------------------------------------------------------------------------


class DuckDBStore:
    """Rows, checkpoints and stream status in one DuckDB file. Thread-safe; one per file per process."""

    name = "duckdb"
    transactional = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        memory_limit: str = "32MB",
        threads: int = 1,
        hold: float = 5.0,
        linger: float = 0.2,
        gap: float = 0.06,
        lock_wait: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        config = {"memory_limit": memory_limit, "threads": threads}
        self._conn = _BurstConnection(
            self.path, config, hold=hold, linger=linger, gap=gap, lock_wait=lock_wait, clock=clock
        )
        self.last_inserted = 0
        """Rows the last `write` stored (the batch minus duplicates)."""

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self.path)!r})"

    # Sink -------------------------------------------------------------------------------------

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None) -> Receipt:
        """Store the batch's new rows and commit `checkpoint` (if given) in one transaction.

        The receipt counts the rows stored and those dropped as already stored; with a checkpoint it
        carries the one stored (counters raised by those counts, version + 1, updated_at set).
        Raises CheckpointConflict (nothing stored) or StoreError.
        """
        rows = batch.prepared if isinstance(batch.prepared, _Rows) else _Rows.of(batch)
        stored = None
        with self._conn.transaction() as con:
            if checkpoint is not None:
                _check_version(con, checkpoint)
            inserted = _insert_new(con, batch.log_source, rows) if len(rows.table) else 0
            duplicates = len(batch.events) - inserted
            if checkpoint is not None:
                stored = replace(
                    checkpoint.tallied(inserted, duplicates),
                    version=checkpoint.version + 1,
                    updated_at=self._clock(),
                )
                _save_checkpoint(con, stored)
        self.last_inserted = inserted
        return Receipt(inserted, duplicates, checkpoint=stored)

    def prepare(self, batch: Batch) -> Batch:
        """The batch with its rows already as the Arrow table `write` inserts (see Sink.prepare)."""
        if isinstance(batch.prepared, _Rows):
            return batch
        return replace(batch, prepared=_Rows.of(batch))

    def writer_lock(self) -> WriterLock:
        """The lock a `run` holds on this store for its lifetime (see writerlock)."""
        return WriterLock(self.path.with_name(self.path.name + ".lock"), f"the store {self.path}")

    def check(self) -> str:
        """Open (creating if needed) and count the rows; a one-line description or StoreError."""
        counts = self.rows_by_stream()
        return f"DuckDB store {self.path} ({sum(counts.values())} rows)"

    def close(self) -> None:
        """Give the file up now (the store can still be used; it reopens on demand)."""
        self._conn.close()

    # CheckpointStore ---------------------------------------------------------------------------

    def read(self, account: str, stream: str) -> Checkpoint | None:
        with self._conn.transaction() as con:
            row = storefile.first_row(con.execute(storefile.SELECT_CHECKPOINT, [account, stream]))
        return None if row is None else storefile.checkpoint_from_row(row)

    def commit(self, checkpoint: Checkpoint) -> Checkpoint:
        with self._conn.transaction() as con:
            _check_version(con, checkpoint)
            stored = replace(checkpoint, version=checkpoint.version + 1, updated_at=self._clock())
            _save_checkpoint(con, stored)
        return stored

    def list(self) -> list[Checkpoint]:
        with self._conn.transaction() as con:
            return storefile.fetch_checkpoints(con)

    # StatusStore and helpers for `status` --------------------------------------------------------

    def write_status(self, status: StreamStatus) -> None:
        if status.updated_at is None:
            status = replace(status, updated_at=self._clock())
        with self._conn.transaction() as con:
            con.execute(storefile.UPSERT_STATUS, storefile.status_params(status))

    def read_statuses(self) -> builtins.list[StreamStatus]:
        with self._conn.transaction() as con:
            return storefile.fetch_statuses(con)

    def rows_by_stream(self) -> dict[str, int]:
        with self._conn.transaction() as con:
            return storefile.rows_by_stream(con)

    def newest_event_time(self, stream: str) -> datetime | None:
        with self._conn.transaction() as con:
            return storefile.newest_event_time(con, stream)


@dataclass(frozen=True)
class _Rows:
    """A batch as DuckDB takes it: one Arrow table, duplicate uuids dropped (the first one kept)."""

    table: pa.Table

    @classmethod
    def of(cls, batch: Batch) -> _Rows:
        table = to_arrow(batch.log_source, batch.events, batch.ingested_at, batch.times)
        return cls(_unique_by_uuid(table))

    def time_range(self) -> tuple[datetime | None, datetime | None, bool]:
        """(earliest, latest, whether some row has no timestamp) of the rows' `timestamp`."""
        times = self.table.column(_TIMESTAMP)
        bounds = pc.min_max(times)
        return bounds["min"].as_py(), bounds["max"].as_py(), times.null_count > 0


def _unique_by_uuid(table: pa.Table) -> pa.Table:
    """Drop rows whose uuid already appeared earlier in the batch (rows without a uuid are kept)."""
    uuids = table.column(_UUID)
    if uuids.null_count == 0 and len(pc.unique(uuids)) == len(uuids):
        return table
    seen: set[str] = set()
    keep: list[int] = []
    for i, uuid in enumerate(uuids.to_pylist()):
        if uuid is None:
            keep.append(i)
        elif uuid not in seen:
            seen.add(uuid)
            keep.append(i)
    return table if len(keep) == len(uuids) else table.take(keep)


def _insert_new(con: duckdb.DuckDBPyConnection, log_source: str, rows: _Rows) -> int:
    """INSERT the rows whose uuid is not stored yet for `log_source`; the count inserted."""
    earliest, latest, some_without = rows.time_range()
    parts: list[str] = []
    params: list[Any] = []
    if earliest is not None:
        parts.append(_EXISTING + '"timestamp" BETWEEN ? AND ?')
        params += [log_source, earliest, latest]
    if some_without:
        parts.append(_EXISTING + '"timestamp" IS NULL')
        params.append(log_source)
    sql = (
        f'INSERT INTO "{TABLE_NAME}" SELECT b.* FROM {_BATCH_VIEW} AS b '
        f"ANTI JOIN ({' UNION ALL '.join(parts)}) AS e ON b.uuid_s = e.uuid_s"
    )
    con.register(_BATCH_VIEW, rows.table)
    try:
        row = storefile.first_row(con.execute(sql, params))
    finally:
        con.unregister(_BATCH_VIEW)
    return int(row[0]) if row else 0


def _check_version(con: duckdb.DuckDBPyConnection, checkpoint: Checkpoint) -> None:
    row = storefile.first_row(con.execute(storefile.SELECT_VERSION, [checkpoint.account, checkpoint.stream]))
    stored = 0 if row is None else int(row[0])
    if stored != checkpoint.version:
        raise CheckpointConflict(
            f"checkpoint of {checkpoint.stream} (account {checkpoint.account}) is at version {stored}, "
            f"not {checkpoint.version}: another run committed first"
        )


def _save_checkpoint(con: duckdb.DuckDBPyConnection, stored: Checkpoint) -> None:
    """Store `stored` (already version-checked in this transaction): its first version is an INSERT."""
    params = storefile.checkpoint_params(stored)
    if stored.version == 1:
        con.execute(storefile.INSERT_CHECKPOINT, params)
    else:  # UPDATE is ~2x cheaper than INSERT ... ON CONFLICT DO UPDATE in DuckDB
        con.execute(storefile.UPDATE_CHECKPOINT, params[2:] + params[:2])
