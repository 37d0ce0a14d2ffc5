"""Which sink and checkpoint store a run uses, chosen from settings in one place.

DuckDB is its own checkpoint and status store (rows and cursor in one transaction). The Sentinel and
JSONL sinks keep checkpoints and status as files in the state directory (`--state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsentinel.config import Settings
from opsentinel.errors import ConfigError
from opsentinel.sinks.base import Sink
from opsentinel.state import CheckpointStore, StatusStore, StreamStatus
from opsentinel.telemetry import Telemetry


@dataclass
class Destination:
    """A sink with the stores that go with it."""

    sink: Sink
    store: CheckpointStore
    status: StatusStore
    label: str

    def describe(self) -> str:
        return self.label

    def record_status(self, account: str, telemetry: Telemetry) -> None:
        """Persist each stream's health so `op-sentinel status` (another process) can show it."""
        now = telemetry.clock()
        for health in list(telemetry.health.values()):
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
                )
            )

    def close(self) -> None:
        self.sink.close()


def open_destination(settings: Settings, **sink_options: Any) -> Destination:
    """Build the destination `settings.sink` names. ConfigError when its settings are incomplete."""
    if settings.sink == "duckdb":
        from opsentinel.sinks.duckdb import DuckDBStore

        store = DuckDBStore(settings.db)
        return Destination(store, store, store, f"duckdb {settings.db}")

    from opsentinel.checkpoints_file import FileCheckpointStore

    files = FileCheckpointStore(settings.state)
    if settings.sink == "jsonl":
        from opsentinel.sinks.jsonl import JsonlSink

        return Destination(JsonlSink(settings.jsonl_path), files, files, f"jsonl {settings.jsonl_path}")

    missing = [flag for flag, value in (("--dce", settings.dce), ("--dcr-id", settings.dcr_id)) if not value]
    if missing:
        raise ConfigError(
            f"--sink sentinel needs {' and '.join(missing)} (or OP_SENTINEL_DCE / OP_SENTINEL_DCR_ID)"
        )
    from opsentinel.sinks.sentinel import SentinelSink

    sink = SentinelSink(
        str(settings.dce),
        str(settings.dcr_id),
        settings.stream,
        dead_letter_dir=settings.state,
        **sink_options,
    )
    return Destination(sink, files, files, f"sentinel {settings.dce} {settings.dcr_id} {settings.stream}")
