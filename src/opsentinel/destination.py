"""Which sink and checkpoint store a run uses, chosen from settings in one place.

DuckDB is its own checkpoint and status store (rows and cursor in one transaction). The Sentinel and
JSONL sinks keep checkpoints and status as files in the state directory (`--state`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from opsentinel.config import Settings
from opsentinel.errors import ConfigError
from opsentinel.ledger import LedgerStore
from opsentinel.sinks.base import Sink
from opsentinel.state import CheckpointStore, StatusStore, StreamStatus
from opsentinel.telemetry import Telemetry
from opsentinel.writerlock import WriterLock

if TYPE_CHECKING:
    from opsentinel.sinks.sentinel import SentinelSink


@dataclass
class Destination:
    """A sink with the stores that go with it: checkpoints, stream status, the delivered-uuid ledgers
    (None when the sink de-duplicates itself) and the one-writer lock of the store."""

    sink: Sink
    store: CheckpointStore
    status: StatusStore
    label: str
    ledgers: LedgerStore | None = None
    writer: WriterLock | None = None
    owns_store: bool = True  # False for a view that shares another Destination's store
    # With a Blob state a replica writes the status of the streams it holds only (see replicas).
    holds: Callable[[str, str], bool] | None = None

    def describe(self) -> str:
        return self.label

    def lock(self) -> None:
        """Take the store's one-writer lock (StoreError naming the holder when another run has it)."""
        if self.writer is not None:
            self.writer.acquire()

    def record_status(self, account: str, telemetry: Telemetry) -> None:
        """Persist each stream's health so `op-sentinel status` (another process) can show it."""
        now = telemetry.clock()
        for health in list(telemetry.health.values()):
            if self.holds is not None and not self.holds(account, health.stream):
                continue
            lag = health.lag(now)
            self.status.write_status(
                StreamStatus(
                    account=account,
                    stream=health.stream,
                    last_success=health.last_success,
                    last_error=health.last_error,
                    last_error_at=health.last_error_at,
                    lag_seconds=lag.total_seconds() if lag is not None else None,
                    rows_stored=health.events_total,
                    health_at=health.health_at,
                    health_category=health.health_category,
                )
            )

    def close(self) -> None:
        try:
            self.sink.close()
            close_store = getattr(self.store, "close", None)
            if self.owns_store and self.store is not cast(object, self.sink) and callable(close_store):
                close_store()
        finally:
            if self.writer is not None:
                self.writer.release()


def _make_parent_dirs(path: Path) -> None:
    """Create the missing directories above `path` (owner-only, like the store files), so that
    `--db data/events.duckdb` works on a first run instead of failing at the first write."""
    missing = []
    current = path.absolute().parent
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    try:
        for directory in reversed(missing):
            directory.mkdir(mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory for --db {path}: {exc.strerror or exc}") from exc


def open_destination(settings: Settings, **sink_options: Any) -> Destination:
    """Build the destination `settings.sink` names. ConfigError when its settings are incomplete."""
    if settings.state_url is not None and settings.sink == "duckdb":
        raise ConfigError(
            "a Blob state (--state URL) is for replicas sharing the work, with --sink sentinel or jsonl; "
            "a DuckDB store keeps its checkpoints in its own file (one writer)"
        )
    if settings.sink == "duckdb":
        from opsentinel.sinks.duckdb import DuckDBStore

        _make_parent_dirs(settings.db)
        store = DuckDBStore(settings.db)
        return Destination(store, store, store, f"duckdb {settings.db}", writer=store.writer_lock())

    if settings.state_url is not None:
        return _blob_destination(settings, **sink_options)

    from opsentinel.checkpoints_file import FileCheckpointStore

    files = FileCheckpointStore(settings.state_dir)
    if settings.sink == "jsonl":
        from opsentinel.sinks.jsonl import JsonlSink

        files.ensure_writable()  # now, not after the first delivery (see ensure_writable)
        return Destination(
            JsonlSink(settings.jsonl_path),
            files,
            files,
            f"jsonl {settings.jsonl_path}",
            ledgers=files,
            writer=files.writer_lock(),
        )

    sink = sentinel_sink(settings, settings.state_dir, **sink_options)
    try:
        files.ensure_writable()
    except BaseException:
        sink.close()
        raise
    return Destination(
        sink,
        files,
        files,
        f"sentinel {settings.dce} {settings.dcr_id} {settings.stream}",
        ledgers=files,
        writer=files.writer_lock(),
    )


def _blob_destination(settings: Settings, **sink_options: Any) -> Destination:
    """A sink with its checkpoints, status and ledgers in a Blob container (replicas share it; the
    leases, not a file lock, keep one writer per stream: see replicas)."""
    from opsentinel.checkpoints.blob import BlobCheckpointStore

    assert settings.state_url is not None
    store = BlobCheckpointStore.open(settings.state_url)
    try:
        store.ensure_writable()
        if settings.sink == "jsonl":
            from opsentinel.sinks.jsonl import JsonlSink

            sink: Sink = JsonlSink(settings.jsonl_path)
            label = f"jsonl {settings.jsonl_path}"
        else:
            sink = sentinel_sink(settings, settings.state_dir, **sink_options)
            label = f"sentinel {settings.dce} {settings.dcr_id} {settings.stream}"
    except BaseException:
        store.close()
        raise
    return Destination(sink, store, store, f"{label} (state {store.state.location})", ledgers=store)


def sentinel_sink(settings: Settings, dead_letter_dir: Path, **options: Any) -> SentinelSink:
    """The Sentinel sink `settings` describe (ConfigError when --dce or --dcr-id is missing)."""
    missing = [flag for flag, value in (("--dce", settings.dce), ("--dcr-id", settings.dcr_id)) if not value]
    if missing:
        raise ConfigError(
            f"--sink sentinel needs {' and '.join(missing)} (or OP_SENTINEL_DCE / OP_SENTINEL_DCR_ID)"
        )
    from opsentinel.sinks.sentinel import SentinelSink

    return SentinelSink(
        str(settings.dce),
        str(settings.dcr_id),
        settings.stream,
        dead_letter_dir=dead_letter_dir,
        history_stream=settings.history_stream or None,
        **options,
    )
