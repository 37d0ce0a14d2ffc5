"""The embedded default sink: a DuckDB file that stores the rows *and* the checkpoints.

`DuckDBStore(path)` is a Sink (name "duckdb", transactional) and a CheckpointStore and StatusStore.

Exactly once. `write(batch, checkpoint)` runs ONE transaction: it inserts the batch's new rows and
commits the checkpoint if its version still equals the stored one (0 = none stored), else raises
CheckpointConflict and stores nothing. DuckDB's WAL makes the transaction atomic and durable, so a
crash at any moment leaves either the rows and the new cursor, or neither.

Duplicates. `uuid_s` is unique per `log_source`. Duplicates inside a batch are dropped (first wins);
an event delivered again (cursor reset, a restarted slice, the API repeating itself) is not stored
again. An event's timestamp never changes, so a batch can only repeat stored rows whose timestamp
lies in the batch's [min, max] range. The store remembers, per `log_source`, which time ranges hold
stored rows (`_Coverage`: the ranges of the batches it wrote, plus the stored [min, max] when it
first writes a stream). A batch that meets none of them (nearly every page of a backfill or a live
chain) is inserted as it is; one that meets some is anti-joined with the stored rows of that
`log_source` in the met range only, which DuckDB's zone maps narrow down. Rows without a timestamp
are compared with the stored rows without one. No index is kept on the event table: a PRIMARY KEY
(log_source, uuid_s) with INSERT OR IGNORE grew to ~50 ms per 1000-event batch at 2M rows and made
the file 6x larger. The checkpoint and status tables are tiny and keyed.

Group commit. Writes that arrive together from several threads (the streams, the slices) share
one transaction and one INSERT (`_GroupCommit`); each still returns only after its commit, and a
checkpoint conflict fails only its own write.

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

import bisect
import builtins
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
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
_INSERT_ALL: Final = f'INSERT INTO "{TABLE_NAME}" SELECT * FROM {_BATCH_VIEW}'
_STORED_SPAN: Final = (
    f'SELECT epoch_us(min("timestamp")), epoch_us(max("timestamp")), count(*), '
    f'bool_or("timestamp" IS NULL) FROM "{TABLE_NAME}" WHERE log_source = ?'
)
_SELECT_VERSIONS: Final = f"SELECT account, stream, version FROM {storefile.CHECKPOINTS_TABLE} WHERE "
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
        self._writes = _GroupCommit(self._conn)
        self.last_inserted = 0
        """Rows the last `write` stored (the batch minus duplicates)."""
        self.last_duplicates = 0
        """Rows the last `write` dropped as already stored or repeated inside the batch."""

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self.path)!r})"

    # Sink -------------------------------------------------------------------------------------

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None) -> Receipt:
        """Store the batch's new rows and commit `checkpoint` (if given) in one transaction.

        The receipt counts the rows stored and those dropped as already stored (or repeated inside the
        batch); with a checkpoint it carries the one stored (counters raised by those counts, version
        + 1, updated_at set). Raises CheckpointConflict (nothing stored) or StoreError. Writes that
        arrive together from several threads share one transaction (see `_GroupCommit`); each
        returns only once its rows and checkpoint are committed.
        """
        rows = batch.prepared if isinstance(batch.prepared, _Rows) else _Rows.of(batch)
        done = self._writes.submit(_Write(batch.log_source, rows, checkpoint, self._clock()))
        self.last_inserted, self.last_duplicates = done.inserted, done.duplicates
        return Receipt(done.inserted, done.duplicates, checkpoint=done.stored)

    def merge(self, batches: Sequence[Batch]) -> Batch:
        """Several batches of one log_source (pages of one stream, in order) as one batch, for one
        `write` with the checkpoint that follows the last of them. Prepared rows are reused."""
        if len({b.log_source for b in batches}) != 1:
            raise ValueError("merge needs batches of one log_source")
        prepared = [self.prepare(b).prepared for b in batches]
        events = [e for b in batches for e in b.events]
        times = None if any(b.times is None for b in batches) else [t for b in batches for t in b.times or ()]
        first = batches[0]
        return Batch(first.log_source, events, first.ingested_at, times, _Rows.merge(prepared))

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
        self._writes.committed(stored)
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
    """A batch as DuckDB takes it: one Arrow table, duplicate uuids dropped (the first one kept).

    `spans` are the [earliest, latest] `timestamp` (epoch microseconds) of each page the rows came
    from (one for a page; several when pages are merged, see `merge`), so that pages far apart in
    time are each checked for duplicates on their own range. `untimed`: some row has no timestamp.
    """

    table: pa.Table
    repeated: int  # rows dropped as repeats of an earlier row of the batch
    spans: tuple[tuple[int, int], ...]
    untimed: bool

    @classmethod
    def of(cls, batch: Batch) -> _Rows:
        table = to_arrow(batch.log_source, batch.events, batch.ingested_at, batch.times)
        unique = _unique_by_uuid(table)
        times = unique.column(_TIMESTAMP)
        bounds = pc.min_max(times)
        low, high = bounds["min"], bounds["max"]
        spans = ((int(low.value), int(high.value)),) if low.is_valid else ()
        return cls(unique, len(table) - len(unique), spans, times.null_count > 0)

    @classmethod
    def merge(cls, parts: Sequence[_Rows]) -> _Rows:
        """Several pages' rows as one (duplicates across them dropped, the first kept)."""
        table = pa.concat_tables([p.table for p in parts])
        unique = _unique_by_uuid(table)
        repeated = sum(p.repeated for p in parts) + len(table) - len(unique)
        spans = tuple(span for p in parts for span in p.spans)
        return cls(unique, repeated, spans, any(p.untimed for p in parts))


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


# --- which stored rows a batch can repeat ----------------------------------------------------------


class _Coverage:
    """Where the stored rows of one `log_source` lie in time, exactly enough to rule duplicates out.

    An event's timestamp never changes, so a batch can only repeat stored rows whose timestamp lies
    in the batch's own [earliest, latest]. `spans` are disjoint, sorted [low, high] ranges (epoch
    microseconds) that hold every stored row's timestamp: a batch that meets none of them repeats
    nothing stored and is inserted without looking at the table; one that meets some is compared
    with the stored rows of the met range only. `untimed`: some stored row has no timestamp.
    Spans may be wider than the rows (merging keeps them few), never narrower.
    """

    LIMIT: Final = 4096  # spans kept; beyond it neighbours merge (wider, still exact)

    def __init__(self, spans: builtins.list[tuple[int, int]] | None = None, untimed: bool = False) -> None:
        self.spans = sorted(spans or [])
        self.untimed = untimed

    def copy(self) -> _Coverage:
        return _Coverage(list(self.spans), self.untimed)

    def met(self, low: int, high: int) -> tuple[int, int] | None:
        """The smallest range holding every stored timestamp within [low, high], or None."""
        spans = self.spans
        i = bisect.bisect_right(spans, (low, _MAX_US))  # first span starting after `low` ...
        if i and spans[i - 1][1] >= low:  # ... or the one before, if it reaches `low`
            i -= 1
        met_low: int | None = None
        met_high = low
        while i < len(spans) and spans[i][0] <= high:
            span_low, span_high = spans[i]
            if met_low is None:
                met_low = max(low, span_low)
            met_high = min(high, span_high)
            i += 1
        return None if met_low is None else (met_low, met_high)

    def add(self, low: int, high: int) -> None:
        spans = self.spans
        i = bisect.bisect_left(spans, (low, low))
        if i and spans[i - 1][1] >= low:
            i -= 1
        j = i
        while j < len(spans) and spans[j][0] <= high:
            low, high = min(low, spans[j][0]), max(high, spans[j][1])
            j += 1
        spans[i:j] = [(low, high)]
        if len(spans) > self.LIMIT:  # merge each pair of neighbours: half as many, each wider
            self.spans = [
                (spans[k][0], spans[min(k + 1, len(spans) - 1)][1]) for k in range(0, len(spans), 2)
            ]


_MAX_US: Final = 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _load_coverage(con: duckdb.DuckDBPyConnection, log_source: str) -> _Coverage:
    """What is stored for `log_source` now, as one span (a first write of a stream in this process)."""
    row = storefile.first_row(con.execute(_STORED_SPAN, [log_source]))
    if row is None or not row[2]:
        return _Coverage()
    spans = [] if row[0] is None else [(int(row[0]), int(row[1]))]
    return _Coverage(spans, untimed=bool(row[3]))


# --- writes, committed in groups ---------------------------------------------------------------------


@dataclass
class _Write:
    """One `write` call on its way into a transaction, and what became of it."""

    log_source: str
    rows: _Rows
    checkpoint: Checkpoint | None  # as the caller sent it (its version is the one expected)
    now: datetime  # the stored checkpoint's updated_at
    stored: Checkpoint | None = None  # what was stored, once committed
    done: bool = False
    inserted: int = 0
    duplicates: int = 0
    error: BaseException | None = None

    @property
    def key(self) -> tuple[str, str] | None:
        cp = self.checkpoint
        return None if cp is None else (cp.account, cp.stream)


class _GroupCommit:
    """Concurrent writes share transactions: the first writer to find none running commits every
    write waiting at that moment, in one transaction (at most one per checkpoint, in arrival
    order); the others wait for theirs. Each write still returns only after its commit, and a
    checkpoint conflict fails only the write that carries it.

    Why: a DuckDB commit has a fixed cost (WAL flush, fsync), and every statement takes the
    interpreter lock back several times while it runs, which other busy threads make slow; one
    INSERT for several pages costs less per row than one per page (see bench/README.md).

    It also keeps, per `log_source`, the `_Coverage` of the stored rows, so that a batch whose
    time range meets no stored row is inserted without a duplicate check. The coverage is exact
    for rows this store wrote plus what the table held when the stream was first written here;
    `versions` notes each checkpoint version this store committed. A checkpoint arriving with
    any other version was committed by someone else (another process between this one's bursts),
    so that stream's coverage is loaded from the table again, inside the same transaction.
    """

    MAX_ROWS: Final = 65_536  # rows per transaction: several pages, bounded memory

    def __init__(self, conn: _BurstConnection) -> None:
        self._conn = conn
        self._cond = threading.Condition()
        self._queue: deque[_Write] = deque()
        self._leading = False
        self._coverage: dict[str, _Coverage] = {}
        self._versions: dict[tuple[str, str], int] = {}

    def submit(self, write: _Write) -> _Write:
        """Commit `write` (alone or with others); raise its error, if any."""
        with self._cond:
            self._queue.append(write)
        while True:
            with self._cond:
                while self._leading and not write.done:
                    self._cond.wait()
                if write.done:
                    break
                self._leading = True
                group = self._take()
            try:
                self._commit(group)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if write.error is not None:
            raise write.error
        return write

    def committed(self, stored: Checkpoint) -> None:
        """Note a checkpoint committed without rows (`DuckDBStore.commit`)."""
        with self._cond:
            self._versions[(stored.account, stored.stream)] = stored.version

    def _take(self) -> builtins.list[_Write]:
        group: builtins.list[_Write] = []
        keys: set[tuple[str, str]] = set()
        rows = 0
        for write in builtins.list(self._queue):
            key = write.key
            if key in keys or (group and rows + len(write.rows.table) > self.MAX_ROWS):
                continue  # the next transaction takes it
            if key is not None:
                keys.add(key)
            rows += len(write.rows.table)
            group.append(write)
            self._queue.remove(write)
        return group

    def _commit(self, group: builtins.list[_Write]) -> None:
        try:
            with self._conn.transaction() as con:
                ok = self._check_versions(con, group)
                coverage = self._coverage_for(con, ok)
                self._insert(con, ok, coverage)
                for write in ok:
                    if write.checkpoint is not None:  # after the insert: its counts are known here
                        write.stored = replace(
                            write.checkpoint.tallied(write.inserted, write.duplicates),
                            version=write.checkpoint.version + 1,
                            updated_at=write.now,
                        )
                        _save_checkpoint(con, write.stored)
        except BaseException as exc:
            for write in group:
                if write.error is None:
                    write.error = exc
                write.inserted = write.duplicates = 0
                write.stored = None
            coverage = {}
        else:
            for write in ok:
                if write.stored is not None:
                    self._versions[(write.stored.account, write.stored.stream)] = write.stored.version
            self._coverage.update(coverage)
        for write in group:
            write.done = True

    def _check_versions(
        self, con: duckdb.DuckDBPyConnection, group: builtins.list[_Write]
    ) -> builtins.list[_Write]:
        """The writes whose checkpoint (if any) is still at its expected version; the rest fail."""
        keys = [(w.checkpoint.account, w.checkpoint.stream) for w in group if w.checkpoint is not None]
        if not keys:
            return group
        where = " OR ".join(["(account = ? AND stream = ?)"] * len(keys))
        params = [part for key in keys for part in key]
        found = {(a, s): int(v) for a, s, v in con.execute(_SELECT_VERSIONS + where, params).fetchall()}
        ok = []
        for write in group:
            cp = write.checkpoint
            if cp is not None and found.get((cp.account, cp.stream), 0) != cp.version:
                write.error = _conflict(cp, found.get((cp.account, cp.stream), 0))
            else:
                ok.append(write)
        return ok

    def _coverage_for(
        self, con: duckdb.DuckDBPyConnection, group: builtins.list[_Write]
    ) -> dict[str, _Coverage]:
        """Working copies of the coverage of each log_source in `group` (loaded where unknown or
        stale), installed only once the transaction has committed."""
        coverage: dict[str, _Coverage] = {}
        for write in group:
            source = write.log_source
            cp = write.checkpoint
            stale = cp is not None and self._versions.get((cp.account, cp.stream), 0) != cp.version
            if source not in coverage:
                known = self._coverage.get(source)
                coverage[source] = (
                    known.copy() if known is not None and not stale else _load_coverage(con, source)
                )
            elif stale:
                coverage[source] = _load_coverage(con, source)
        return coverage

    def _insert(
        self, con: duckdb.DuckDBPyConnection, group: builtins.list[_Write], coverage: dict[str, _Coverage]
    ) -> None:
        """Insert every write's new rows: one INSERT for all rows that can repeat nothing stored,
        then one compared INSERT per write that meets stored rows (in order, so each also sees
        the rows inserted before it in this transaction)."""
        fresh: builtins.list[_Write] = []
        compared: builtins.list[tuple[_Write, builtins.list[tuple[int, int]], bool]] = []
        for write in group:
            rows = write.rows
            if not len(rows.table):
                continue
            cov = coverage[write.log_source]
            if write.checkpoint is None:  # health rows: compared over their whole range
                met, untimed = builtins.list(rows.spans), rows.untimed
            else:
                met = [m for span in rows.spans if (m := cov.met(*span)) is not None]
                untimed = rows.untimed and cov.untimed
            if met or untimed or write.checkpoint is None:
                compared.append((write, met, untimed))
            else:
                fresh.append(write)
            for span in rows.spans:
                cov.add(*span)
            cov.untimed = cov.untimed or rows.untimed
        if fresh:
            table = pa.concat_tables([w.rows.table for w in fresh]) if len(fresh) > 1 else fresh[0].rows.table
            _insert_all(con, table)
            for write in fresh:
                write.inserted, write.duplicates = len(write.rows.table), write.rows.repeated
        for write, met, untimed in compared:
            write.inserted = _insert_new(con, write.log_source, write.rows.table, met, untimed)
            write.duplicates = write.rows.repeated + len(write.rows.table) - write.inserted


def _conflict(checkpoint: Checkpoint, stored: int) -> CheckpointConflict:
    return CheckpointConflict(
        f"checkpoint of {checkpoint.stream} (account {checkpoint.account}) is at version {stored}, "
        f"not {checkpoint.version}: another run committed first"
    )


def _insert_all(con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    con.register(_BATCH_VIEW, table)
    try:
        con.execute(_INSERT_ALL).fetchall()
    finally:
        con.unregister(_BATCH_VIEW)


def _insert_new(
    con: duckdb.DuckDBPyConnection,
    log_source: str,
    table: pa.Table,
    met: builtins.list[tuple[int, int]],
    untimed: bool,
) -> int:
    """INSERT the rows whose uuid is not stored yet for `log_source`, comparing with the stored rows
    whose timestamp lies in one of the `met` ranges (epoch microseconds) or, with `untimed`, has
    none; the count inserted."""
    parts: builtins.list[str] = []
    params: builtins.list[Any] = []
    for low, high in met:  # the plain column in the filter: DuckDB skips row groups by their ranges
        parts.append(_EXISTING + '"timestamp" BETWEEN ? AND ?')
        params += [log_source, _EPOCH + timedelta(microseconds=low), _EPOCH + timedelta(microseconds=high)]
    if untimed:
        parts.append(_EXISTING + '"timestamp" IS NULL')
        params.append(log_source)
    if not parts:
        _insert_all(con, table)
        return len(table)
    sql = (
        f'INSERT INTO "{TABLE_NAME}" SELECT b.* FROM {_BATCH_VIEW} AS b '
        f"ANTI JOIN ({' UNION ALL '.join(parts)}) AS e ON b.uuid_s = e.uuid_s"
    )
    con.register(_BATCH_VIEW, table)
    try:
        row = storefile.first_row(con.execute(sql, params))
    finally:
        con.unregister(_BATCH_VIEW)
    return int(row[0]) if row else 0


def _check_version(con: duckdb.DuckDBPyConnection, checkpoint: Checkpoint) -> None:
    row = storefile.first_row(con.execute(storefile.SELECT_VERSION, [checkpoint.account, checkpoint.stream]))
    stored = 0 if row is None else int(row[0])
    if stored != checkpoint.version:
        raise _conflict(checkpoint, stored)


def _save_checkpoint(con: duckdb.DuckDBPyConnection, stored: Checkpoint) -> None:
    """Store `stored` (already version-checked in this transaction): its first version is an INSERT."""
    params = storefile.checkpoint_params(stored)
    if stored.version == 1:
        con.execute(storefile.INSERT_CHECKPOINT, params)
    else:  # UPDATE is ~2x cheaper than INSERT ... ON CONFLICT DO UPDATE in DuckDB
        con.execute(storefile.UPDATE_CHECKPOINT, params[2:] + params[:2])
