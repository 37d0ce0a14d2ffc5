"""The DuckDB store file: opening it (with lock retries), its tables, and DuckDB errors as StoreError.

Shared by the writer (`sinks.duckdb.DuckDBStore`) and the readers (`store_read`). This is the one
boundary where `duckdb.Error` becomes `StoreError` (a one-line message naming the file).

Tables (all in the one file; see docs/storage.md):

    OnePasswordEventLogs_CL    the 33 columns of schema.COLUMNS, in order
    opsentinel_checkpoints     (account, stream) -> cursor, newest_event_time, events_delivered, version, ...
    opsentinel_stream_status   (account, stream) -> last success, last error, lag, rows stored
    opsentinel_schema          one row: the layout version, so a later release can migrate the file

DuckDB lets one process open a file read-write, or many processes open it read-only, never both; a
second opener gets a lock error at once. `connect` turns that into a bounded wait: it retries with
short randomised sleeps until `wait` seconds have passed, then raises "the store ... is busy".
"""

# ruff: noqa: S608  (SQL text here is built from module constants only; values are always bound)
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import orjson

from opsentinel.errors import StoreError
from opsentinel.schema import COLUMNS, TABLE_NAME
from opsentinel.state import Checkpoint, StreamStatus

SCHEMA_VERSION: Final = 2
CHECKPOINTS_TABLE: Final = "opsentinel_checkpoints"
STATUS_TABLE: Final = "opsentinel_stream_status"
META_TABLE: Final = "opsentinel_schema"
_CATALOG: Final = "opsentinel_store"  # the store's name when it is attached (see `_open`)

_BUSY_MARKERS: Final = (
    "could not set lock",
    "conflicting lock",
    "different configuration than existing connections",  # same process, other mode: ours, brief
    "unique file handle conflict",  # same process, the writer has it attached (see `_open`): brief
)

_DDL: Final = (
    f'CREATE TABLE IF NOT EXISTS "{TABLE_NAME}" ('
    + ", ".join(f'"{c.name}" {c.duckdb_type}' for c in COLUMNS)
    + ")",
    f"""CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (
        account VARCHAR NOT NULL, stream VARCHAR NOT NULL, "cursor" VARCHAR,
        newest_event_time TIMESTAMPTZ, events_delivered BIGINT NOT NULL, version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ, backfill JSON, live_start TIMESTAMPTZ, first_run_at TIMESTAMPTZ,
        caught_up_at TIMESTAMPTZ,
        events_duplicate BIGINT NOT NULL DEFAULT 0, events_dead_lettered BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (account, stream))""",
    f"""CREATE TABLE IF NOT EXISTS {STATUS_TABLE} (
        account VARCHAR NOT NULL, stream VARCHAR NOT NULL, last_success TIMESTAMPTZ,
        last_error VARCHAR, last_error_at TIMESTAMPTZ, lag_seconds DOUBLE, rows_stored BIGINT NOT NULL,
        updated_at TIMESTAMPTZ, PRIMARY KEY (account, stream))""",
)

# version -> statements that bring a file of version - 1 to it. Version 1 is the first layout.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    2: (  # the live chain's durable start, and duplicates / dead letters counted apart (0.2)
        f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN IF NOT EXISTS live_start TIMESTAMPTZ",
        f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN IF NOT EXISTS first_run_at TIMESTAMPTZ",
        f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN IF NOT EXISTS caught_up_at TIMESTAMPTZ",
        f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN IF NOT EXISTS events_duplicate BIGINT DEFAULT 0",
        f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN IF NOT EXISTS events_dead_lettered BIGINT DEFAULT 0",
    ),
}


def one_line(text: object, limit: int = 300) -> str:
    """The first non-empty line of `text`, trimmed to `limit` characters."""
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return "unknown error"


def is_busy(exc: BaseException) -> bool:
    """True when `exc` says another connection (process) holds the file."""
    text = str(exc).lower()
    return any(marker in text for marker in _BUSY_MARKERS)


def store_error(exc: BaseException, path: Path) -> StoreError:
    """A one-line StoreError naming `path` for a duckdb or OS error (chain it with `from exc`)."""
    text = str(exc)
    low = text.lower()
    if is_busy(exc):
        return StoreError(f"the store {path} is busy: another process holds it")
    if "not a valid duckdb database file" in low:
        return StoreError(f"{path} is not a DuckDB database (refusing to touch it)")
    if "database does not exist" in low:
        return StoreError(f"no store at {path}")
    if "no space left" in low or "file too large" in low or "disk quota" in low:
        return StoreError(f"cannot write the store {path}: the disk is full ({one_line(text)})")
    if "permission denied" in low or "read-only file system" in low:
        return StoreError(f"cannot write the store {path}: permission denied ({one_line(text)})")
    return StoreError(f"the store {path}: {one_line(text)}")


def connect(
    path: Path,
    *,
    read_only: bool,
    wait: float,
    config: Mapping[str, Any] | None = None,
    row_group_size: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> duckdb.DuckDBPyConnection:
    """Open `path`, retrying while another process holds it, for at most `wait` seconds.

    A read-only open never creates a file: a missing one is StoreError("no store at <path>"). The
    connection's TimeZone is UTC. Every failure is a one-line StoreError naming the path.
    `row_group_size` (a multiple of 2048) sets the size of the row groups a writer makes.
    """
    if read_only and not path.exists():
        raise StoreError(f"no store at {path}")
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        try:
            con = _open(path, read_only=read_only, config=dict(config or {}), row_group_size=row_group_size)
        except duckdb.Error as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise store_error(exc, path) from exc
            if read_only:
                signal_reader_waiting(path)
        except OSError as exc:  # pragma: no cover - duckdb reports I/O as duckdb.IOException
            raise store_error(exc, path) from exc
        else:
            try:
                con.execute("SET TimeZone = 'UTC'")
            except duckdb.Error as exc:  # pragma: no cover - ICU is built into the wheels
                con.close()
                raise store_error(exc, path) from exc
            return con
        # Randomised short sleeps: the holder (a reader, or the writer between bursts) lets go soon.
        sleep(min(pause * (0.5 + random.random()), max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.6, 0.03)


def _open(
    path: Path, *, read_only: bool, config: dict[str, Any], row_group_size: int | None
) -> duckdb.DuckDBPyConnection:
    if row_group_size is None or read_only:  # a reader writes no row groups
        return duckdb.connect(str(path), read_only=read_only, config=config)
    # The row group size is an ATTACH option (not stored in the file), so the file is attached to
    # an in-memory instance. Spill files stay where DuckDB puts a file database's: <store>.tmp.
    con = duckdb.connect(":memory:", config={"temp_directory": f"{path}.tmp", **config})
    try:
        literal = "'" + str(path).replace("'", "''") + "'"
        con.execute(f"ATTACH {literal} AS {_CATALOG} (ROW_GROUP_SIZE {int(row_group_size)})")
        con.execute(f"USE {_CATALOG}")
    except BaseException:
        con.close()
        raise
    return con


def reader_signal_path(path: Path) -> Path:
    """The empty file a waiting reader touches so that the writer ends its burst early."""
    return path.with_name(path.name + ".wait")


def signal_reader_waiting(path: Path) -> None:
    """Best effort: a reader that cannot write beside the store just waits for the burst to end."""
    signal = reader_signal_path(path)
    try:
        os.close(os.open(signal, os.O_WRONLY | os.O_CREAT, 0o600))
        os.utime(signal)
    except OSError:
        pass


def reader_waiting_since(path: Path, moment_ns: int) -> bool:
    """Whether a reader signalled at or after `moment_ns` (wall clock, ns)."""
    try:
        return os.stat(reader_signal_path(path)).st_mtime_ns >= moment_ns
    except OSError:
        return False


def first_row(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row of an executed statement, consuming the whole result (DuckDB 2 requires it)."""
    rows = result.fetchall()
    return rows[0] if rows else None


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()")
    return {name for (name,) in rows.fetchall()}


def stored_schema_version(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
    """The layout version of an opened store (None for a file without our tables)."""
    if META_TABLE not in table_names(con):
        return None
    row = first_row(con.execute(_META_VERSION))
    version = int(row[0]) if row and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store {path} has layout version {version}, newer than this op-sentinel knows "
            f"({SCHEMA_VERSION}); upgrade op-sentinel"
        )
    return version


def ensure_schema(con: duckdb.DuckDBPyConnection, path: Path, now: datetime) -> None:
    """Create missing tables and migrate an older layout, in one transaction (writer only)."""
    version = stored_schema_version(con, path)
    if version == SCHEMA_VERSION:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (version INTEGER NOT NULL, applied_at TIMESTAMPTZ)"
        )
        for statement in _DDL:
            con.execute(statement)
        for step in range((version or 0) + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS.get(step, ()):
                con.execute(statement)
        con.execute(_META_INSERT, [SCHEMA_VERSION, now])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# --- records <-> rows -------------------------------------------------------------------------

CHECKPOINT_COLUMNS: Final = (
    'account, stream, "cursor", newest_event_time, events_delivered, version, updated_at, backfill, '
    "live_start, first_run_at, caught_up_at, events_duplicate, events_dead_lettered"
)
STATUS_COLUMNS: Final = (
    "account, stream, last_success, last_error, last_error_at, lag_seconds, rows_stored, updated_at"
)

# SQL text, built once from constants (no user input is ever formatted into SQL).
SELECT_CHECKPOINT: Final = (
    f"SELECT {CHECKPOINT_COLUMNS} FROM {CHECKPOINTS_TABLE} WHERE account = ? AND stream = ?"
)
SELECT_VERSION: Final = f"SELECT version FROM {CHECKPOINTS_TABLE} WHERE account = ? AND stream = ?"
INSERT_CHECKPOINT: Final = (
    f"INSERT INTO {CHECKPOINTS_TABLE} ({CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_CHECKPOINT: Final = (  # parameters: the CHECKPOINT_COLUMNS order rotated by two (key last)
    f'UPDATE {CHECKPOINTS_TABLE} SET "cursor" = ?, newest_event_time = ?, events_delivered = ?, '
    "version = ?, updated_at = ?, backfill = ?, live_start = ?, first_run_at = ?, caught_up_at = ?, "
    "events_duplicate = ?, events_dead_lettered = ? WHERE account = ? AND stream = ?"
)
UPSERT_STATUS: Final = (
    f"INSERT INTO {STATUS_TABLE} ({STATUS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (account, stream) DO UPDATE SET last_success = excluded.last_success, "
    "last_error = excluded.last_error, last_error_at = excluded.last_error_at, "
    "lag_seconds = excluded.lag_seconds, rows_stored = excluded.rows_stored, "
    "updated_at = excluded.updated_at"
)
_ALL_CHECKPOINTS: Final = f"SELECT {CHECKPOINT_COLUMNS} FROM {CHECKPOINTS_TABLE} ORDER BY account, stream"
_ALL_STATUSES: Final = f"SELECT {STATUS_COLUMNS} FROM {STATUS_TABLE} ORDER BY account, stream"
_ROWS_BY_STREAM: Final = (
    f'SELECT log_source, count(*) FROM "{TABLE_NAME}" GROUP BY log_source ORDER BY log_source'
)
_NEWEST: Final = f'SELECT max("timestamp") FROM "{TABLE_NAME}" WHERE log_source = ?'
_META_VERSION: Final = f"SELECT max(version) FROM {META_TABLE}"
_META_INSERT: Final = f"INSERT INTO {META_TABLE} VALUES (?, ?)"


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def checkpoint_params(cp: Checkpoint) -> list[Any]:
    backfill = None if cp.backfill is None else orjson.dumps(cp.backfill).decode()
    return [
        cp.account,
        cp.stream,
        cp.cursor,
        cp.newest_event_time,
        cp.events_delivered,
        cp.version,
        cp.updated_at,
        backfill,
        cp.live_start,
        cp.first_run_at,
        cp.caught_up_at,
        cp.events_duplicate,
        cp.events_dead_lettered,
    ]


def checkpoint_from_row(row: tuple[Any, ...]) -> Checkpoint:
    (
        account,
        stream,
        cursor,
        newest,
        delivered,
        version,
        updated_at,
        backfill,
        live_start,
        first,
        caught,
        dup,
        dead,
    ) = row
    return Checkpoint(
        account=account,
        stream=stream,
        cursor=cursor,
        newest_event_time=_utc(newest),
        events_delivered=int(delivered),
        version=int(version),
        updated_at=_utc(updated_at),
        backfill=None if backfill is None else orjson.loads(backfill),
        live_start=_utc(live_start),
        first_run_at=_utc(first),
        caught_up_at=_utc(caught),
        events_duplicate=int(dup or 0),
        events_dead_lettered=int(dead or 0),
    )


def status_params(st: StreamStatus) -> list[Any]:
    return [
        st.account,
        st.stream,
        st.last_success,
        st.last_error,
        st.last_error_at,
        st.lag_seconds,
        st.rows_stored,
        st.updated_at,
    ]


def status_from_row(row: tuple[Any, ...]) -> StreamStatus:
    account, stream, last_success, last_error, last_error_at, lag, rows_stored, updated_at = row
    return StreamStatus(
        account=account,
        stream=stream,
        last_success=_utc(last_success),
        last_error=last_error,
        last_error_at=_utc(last_error_at),
        lag_seconds=lag,
        rows_stored=int(rows_stored),
        updated_at=_utc(updated_at),
    )


# --- queries shared by the writer and the readers ----------------------------------------------


def fetch_checkpoints(con: duckdb.DuckDBPyConnection) -> list[Checkpoint]:
    if CHECKPOINTS_TABLE not in table_names(con):
        return []
    present = {
        name
        for (name,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND table_name = ?",
            [CHECKPOINTS_TABLE],
        ).fetchall()
    }
    if "live_start" in present:
        return [checkpoint_from_row(r) for r in con.execute(_ALL_CHECKPOINTS).fetchall()]
    # A store of layout 1 that no writer has migrated yet (readers cannot): its columns, defaults after.
    old = CHECKPOINT_COLUMNS.split(", live_start")[0]
    sql = f"SELECT {old}, NULL, NULL, NULL, 0, 0 FROM {CHECKPOINTS_TABLE} ORDER BY account, stream"
    return [checkpoint_from_row(r) for r in con.execute(sql).fetchall()]


def fetch_statuses(con: duckdb.DuckDBPyConnection) -> list[StreamStatus]:
    if STATUS_TABLE not in table_names(con):
        return []
    return [status_from_row(r) for r in con.execute(_ALL_STATUSES).fetchall()]


def rows_by_stream(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Stored rows per `log_source` (streams and "healthevents")."""
    if TABLE_NAME not in table_names(con):
        return {}
    return {str(source): int(n) for source, n in con.execute(_ROWS_BY_STREAM).fetchall()}


def newest_event_time(con: duckdb.DuckDBPyConnection, stream: str) -> datetime | None:
    """The newest stored event `timestamp` of `stream` (None when it has no rows)."""
    if TABLE_NAME not in table_names(con):
        return None
    row = first_row(con.execute(_NEWEST, [stream]))
    return None if row is None else _utc(row[0])


def file_mode_private(path: Path) -> None:
    """Make `path` readable by its owner only (best effort: it may belong to someone else)."""
    try:
        if path.exists() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass
