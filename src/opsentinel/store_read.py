"""The read side of the DuckDB store, for `op-sentinel status` and `op-sentinel query`.

Readers run in their own process, possibly while `op-sentinel run` writes the same file. They open
it read-only, waiting (up to `wait` seconds) while the writer holds it: a waiting reader touches
`<store>.wait` and the writer gives the file up after its current transaction (see `sinks.duckdb`),
so a reader waits a moment but does not fail. A reader never creates a store: a missing file is
StoreError("no store at <path>").

`run_query` is strictly read-only by construction, not by inspecting the SQL text: the connection
is read-only (no INSERT, UPDATE, DELETE, CREATE, DROP), external access is disabled (no COPY TO, no
ATTACH, no reading or writing other files, no extension installs) and the configuration is locked
so the query cannot turn either back on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from opsentinel import storefile
from opsentinel.errors import StoreError
from opsentinel.state import Checkpoint, StreamStatus

__all__ = [
    "QueryResult",
    "ResultColumn",
    "StoreSummary",
    "open_reader",
    "read_summary",
    "reading",
    "run_query",
]

DEFAULT_WAIT = 30.0


def open_reader(path: str | os.PathLike[str], wait: float = DEFAULT_WAIT) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the store at `path` (UTC time zone, no external access).

    Retries while another process holds the file, for up to `wait` seconds, then raises
    StoreError("the store <path> is busy: another process holds it"). The caller closes it.
    """
    target = Path(path)
    con = storefile.connect(target, read_only=True, wait=wait, config={"enable_external_access": False})
    try:
        con.execute("SET lock_configuration = true")
        storefile.stored_schema_version(con, target)
    except duckdb.Error as exc:  # pragma: no cover - a fresh read-only connection accepts these
        con.close()
        raise storefile.store_error(exc, target) from exc
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def reading(path: str | os.PathLike[str], wait: float = DEFAULT_WAIT) -> Iterator[duckdb.DuckDBPyConnection]:
    """`open_reader` as a context manager; duckdb errors inside become StoreError."""
    target = Path(path)
    con = open_reader(target, wait)
    try:
        yield con
    except duckdb.Error as exc:
        raise storefile.store_error(exc, target) from exc
    finally:
        con.close()


class ResultColumn(NamedTuple):
    name: str
    type: str  # DuckDB's type name, e.g. "VARCHAR", "JSON", "TIMESTAMP WITH TIME ZONE"


class QueryResult(NamedTuple):
    """What `run_query` returns; unpacks as `columns, rows = run_query(...)`."""

    columns: list[ResultColumn]
    rows: list[tuple[Any, ...]]


def run_query(path: str | os.PathLike[str], sql: str, wait: float = DEFAULT_WAIT) -> QueryResult:
    """Run `sql` read-only against the store; all rows are fetched before the file is given back.

    Bad SQL, or SQL that tries to write, is StoreError with DuckDB's message on one line.
    """
    target = Path(path)
    with reading(target, wait) as con:
        try:
            result = con.execute(sql)
            description = result.description
            rows = result.fetchall() if description else []
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {storefile.one_line(exc)}") from exc
    columns = [ResultColumn(str(d[0]), str(d[1])) for d in (description or [])]
    return QueryResult(columns, rows)


@dataclass(frozen=True)
class StoreSummary:
    """Everything `op-sentinel status` shows from a DuckDB store, read in one short visit."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    statuses: list[StreamStatus] = field(default_factory=list)
    rows_by_stream: dict[str, int] = field(default_factory=dict)
    newest_event_time: dict[str, datetime | None] = field(default_factory=dict)


def read_summary(path: str | os.PathLike[str], wait: float = DEFAULT_WAIT) -> StoreSummary:
    """Checkpoints, stream statuses, rows and newest event time per `log_source`."""
    with reading(path, wait) as con:
        rows = storefile.rows_by_stream(con)
        return StoreSummary(
            checkpoints=storefile.fetch_checkpoints(con),
            statuses=storefile.fetch_statuses(con),
            rows_by_stream=rows,
            newest_event_time={s: storefile.newest_event_time(con, s) for s in rows},
        )
