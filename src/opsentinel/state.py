"""Checkpoints: what a stream has durably delivered, and the small store protocol that keeps them.

A checkpoint is keyed by (account, stream): one account's cursor is never handed to another account's
token. Stores offer two operations only, `read` and `commit` (compare-and-set on `version`), so that a
future store in Azure Blob Storage with leases fits the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Checkpoint:
    """Where a stream stands after its last delivered page.

    `cursor` is the live chain's Events API cursor (None before its first page). `live_start` is
    where the live chain began on the stream's first run: it owns every event stamped at or after it,
    and it is stored from the first commit on, so a restart never reads history again with it.
    `first_run_at` is when the first run began: events stamped before it are history (the Sentinel
    sink keeps them out of the analytic rules' table). `caught_up_at` is when (in the API's clock)
    the live chain last asked for the page that said `has_more: false`: everything indexed before
    it has been read, so a rejected cursor restarts the late window before it (or, before the
    chain ever caught up, at `live_start`).
    `newest_event_time` is the newest event time delivered. The counters: `events_delivered` (rows
    the sink newly stored or accepted), `events_duplicate` (events dropped because they were
    already delivered), `events_dead_lettered` (records the sink refused and set aside).
    `version` is the store's compare-and-set token: 0 means "never committed", every commit stores
    version + 1. `backfill` holds a first run's history plan (None when no backfill is running).
    """

    account: str
    stream: str
    cursor: str | None = None
    newest_event_time: datetime | None = None
    events_delivered: int = 0
    version: int = 0
    updated_at: datetime | None = None
    backfill: dict[str, Any] | None = field(default=None, compare=False)
    live_start: datetime | None = None
    first_run_at: datetime | None = None
    caught_up_at: datetime | None = None
    events_duplicate: int = 0
    events_dead_lettered: int = 0

    def advanced(self, **changes: Any) -> Checkpoint:
        """A copy with `changes` applied; the store sets version and updated_at on commit."""
        return replace(self, **changes)

    def tallied(self, delivered: int, duplicate: int = 0, dead_lettered: int = 0) -> Checkpoint:
        """A copy with one delivery's counts added."""
        return replace(
            self,
            events_delivered=self.events_delivered + delivered,
            events_duplicate=self.events_duplicate + duplicate,
            events_dead_lettered=self.events_dead_lettered + dead_lettered,
        )


@runtime_checkable
class CheckpointStore(Protocol):
    """Durable checkpoints keyed by (account, stream).

    `commit` stores `checkpoint` only if the stored version still equals `checkpoint.version`
    (commit-if-unchanged) and returns what was stored (version + 1, updated_at set). Otherwise it raises
    `CheckpointConflict` and stores nothing. A commit is durable when it returns.
    """

    def read(self, account: str, stream: str) -> Checkpoint | None: ...

    def commit(self, checkpoint: Checkpoint) -> Checkpoint: ...

    def list(self) -> list[Checkpoint]: ...


@dataclass(frozen=True)
class StreamStatus:
    """The health of one stream as `op-sentinel status` shows it, kept by the pipeline per (account, stream).

    `last_success`: when a page was last delivered; `last_error` / `last_error_at`: the last failure's
    one-line text and time (kept after a later success, so `status` can show what happened);
    `lag_seconds`: how far the newest delivered event is behind the clock; `rows_stored`: rows the
    sink holds (or has accepted) for the stream. `updated_at` is set by the store when None.
    `health_at` / `health_category`: the last health row written (kept by the file and Blob stores, so
    short-lived hosts write one only when due).
    """

    account: str
    stream: str
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    lag_seconds: float | None = None
    rows_stored: int = 0
    updated_at: datetime | None = None
    health_at: datetime | None = None  # when a health row was last written, and its category
    health_category: str | None = None


@runtime_checkable
class StatusStore(Protocol):
    """Where StreamStatus records live: the DuckDB store itself, or files next to the checkpoints.

    `write_status` replaces the record of (status.account, status.stream) and is durable when it returns.
    """

    def write_status(self, status: StreamStatus) -> None: ...

    def read_statuses(self) -> list[StreamStatus]: ...
