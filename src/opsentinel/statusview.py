"""`op-sentinel status`: per stream, checkpoint age, newest event time, rows stored, last error.

Reads only: the DuckDB store read-only (waiting while `run` holds it), or the state directory's files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from opsentinel.config import Settings
from opsentinel.errors import StoreError
from opsentinel.state import Checkpoint, StreamStatus
from opsentinel.timefmt import format_duration, format_rfc3339


@dataclass(frozen=True)
class StreamView:
    account: str
    stream: str
    checkpoint_at: datetime | None
    newest_event: datetime | None
    rows: int
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    lag_seconds: float | None
    duplicates: int = 0
    dead_lettered: int = 0
    history: tuple[int, int] | None = None  # (slices done, slices) while a first run reads history
    owner: str | None = None  # with a Blob state: the replica that holds (or last held) the unit
    lease: str | None = None  # with a Blob state: the unit's lease state (leased, available, ...)


Key = tuple[str, str]


def collect(settings: Settings) -> list[StreamView]:
    """One view per (account, stream) known to the store, plus health rows' counts when present."""
    if settings.state_url is not None:  # a Blob state holds the checkpoints whatever the sink
        return _blob_views(settings.state_url)
    if settings.sink == "duckdb":
        from opsentinel.store_read import read_summary

        if not settings.db.exists():
            raise StoreError(f"no store at {settings.db} (run `op-sentinel run` first, or pass --db)")
        summary = read_summary(settings.db)
        cps = summary.checkpoints
        if len({c.account for c in cps}) <= 1:  # the table's own counts (rows stored before too)
            rows = {(c.account, c.stream): summary.rows_by_stream.get(c.stream, 0) for c in cps}
            newest = {(c.account, c.stream): summary.newest_event_time.get(c.stream) for c in cps}
            return _views(cps, summary.statuses, rows, newest)
        return _views(cps, summary.statuses, *_from_checkpoints(cps))
    from opsentinel.checkpoints_file import FileCheckpointStore

    if not settings.state_dir.exists():
        raise StoreError(
            f"no state directory at {settings.state_dir} (run `op-sentinel run` first, or pass --state)"
        )
    files = FileCheckpointStore(settings.state_dir)
    checkpoints = files.list()
    return _views(checkpoints, files.read_statuses(), *_from_checkpoints(checkpoints))


def _from_checkpoints(checkpoints: list[Checkpoint]) -> tuple[dict[Key, int], dict[Key, datetime | None]]:
    rows = {(c.account, c.stream): c.events_delivered for c in checkpoints}
    newest = {(c.account, c.stream): c.newest_event_time for c in checkpoints}
    return rows, newest


def _blob_views(url: str) -> list[StreamView]:
    """Every unit of a Blob state from one listing (owner, lease, status) and its checkpoint."""
    from dataclasses import replace

    from opsentinel.checkpoints.blob import BlobCheckpointStore
    from opsentinel.checkpoints.membership import read_membership

    store = BlobCheckpointStore.open(url)
    try:
        membership = read_membership(store.state)
        checkpoints = store.list()
    finally:
        store.close()
    statuses = [u.status for u in membership.units if u.status is not None]
    views = _views(checkpoints, statuses, *_from_checkpoints(checkpoints))
    units = {(u.account, u.stream): u for u in membership.units}
    out = []
    for view in views:
        unit = units.get((view.account, view.stream))
        out.append(view if unit is None else replace(view, owner=unit.owner, lease=unit.lease_state))
    return out


def _views(
    checkpoints: list[Checkpoint],
    statuses: list[StreamStatus],
    rows: dict[Key, int],
    newest: dict[Key, datetime | None],
) -> list[StreamView]:
    by_key = {(s.account, s.stream): s for s in statuses}
    keys = sorted({(c.account, c.stream) for c in checkpoints} | set(by_key))
    cps = {(c.account, c.stream): c for c in checkpoints}
    views = []
    for account, stream in keys:
        cp = cps.get((account, stream))
        st = by_key.get((account, stream))
        views.append(
            StreamView(
                account=account,
                stream=stream,
                checkpoint_at=cp.updated_at if cp else None,
                newest_event=newest.get((account, stream)) or (cp.newest_event_time if cp else None),
                rows=rows.get((account, stream), 0),
                last_success=st.last_success if st else None,
                last_error=st.last_error if st else None,
                last_error_at=st.last_error_at if st else None,
                lag_seconds=st.lag_seconds if st else None,
                duplicates=cp.events_duplicate if cp else 0,
                dead_lettered=cp.events_dead_lettered if cp else 0,
                history=_history(cp),
            )
        )
    return views


def _history(cp: Checkpoint | None) -> tuple[int, int] | None:
    if cp is None or not cp.backfill:
        return None
    slices = cp.backfill.get("slices") or []
    return sum(1 for s in slices if s.get("done")), len(slices)


def _age(moment: datetime | None, now: datetime) -> str:
    return "-" if moment is None else format_duration(now - moment) + " ago"


def _json(view: StreamView, now: datetime) -> dict[str, Any]:
    def t(m: datetime | None) -> str | None:
        return format_rfc3339(m) if m else None

    return {
        "account": view.account,
        "stream": view.stream,
        "checkpoint_at": t(view.checkpoint_at),
        "checkpoint_age_seconds": int((now - view.checkpoint_at).total_seconds())
        if view.checkpoint_at
        else None,
        "newest_event": t(view.newest_event),
        "rows": view.rows,
        "last_success": t(view.last_success),
        "last_error": view.last_error,
        "last_error_at": t(view.last_error_at),
        "lag_seconds": view.lag_seconds,
        "duplicates": view.duplicates,
        "dead_lettered": view.dead_lettered,
        "history": None
        if view.history is None
        else {"slices_done": view.history[0], "slices": view.history[1]},
        "owner": view.owner,
        "lease": view.lease,
    }


def print_status(settings: Settings, output_format: str) -> None:
    now = datetime.now(UTC)
    views = collect(settings)
    if output_format == "json":
        sys.stdout.write(
            orjson.dumps([_json(v, now) for v in views], option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        return
    if not views:
        print("no stream has run yet")
        return
    table = Table(title=None, show_lines=False)
    replicas = any(v.lease is not None for v in views)
    headers = ("stream", "checkpoint", "newest event", "rows", "duplicates", "dead letters", "history")
    for header in (*headers, "last success", "last error", *(("owner", "lease") if replicas else ())):
        table.add_column(header)
    for v in views:
        error = f"{v.last_error} ({_age(v.last_error_at, now)})" if v.last_error else "-"
        history = "complete" if v.history is None else f"{v.history[0]}/{v.history[1]} slices"
        owner = (v.owner or "-", v.lease or "-") if replicas else ()
        table.add_row(
            v.stream,
            _age(v.checkpoint_at, now),
            format_rfc3339(v.newest_event) if v.newest_event else "-",
            f"{v.rows:,}",
            f"{v.duplicates:,}",
            f"{v.dead_lettered:,}",
            history,
            _age(v.last_success, now),
            error,
            *owner,
        )
    Console(width=max(170, Console().width)).print(table)
    accounts = sorted({v.account for v in views})
    print(f"account{'s' if len(accounts) > 1 else ''}: {', '.join(accounts)}")
