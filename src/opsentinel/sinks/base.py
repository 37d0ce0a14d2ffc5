"""The sink protocol: where rows go, and whether the sink can commit a checkpoint with them.

A transactional sink (DuckDB) stores a batch's rows and the stream's new checkpoint in one
transaction and is itself the CheckpointStore. Any other sink only stores rows; the pipeline then
commits the checkpoint to a separate store, and only after `write` returned (commit after ack).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from opsentinel.state import Checkpoint


@dataclass(frozen=True)
class Batch:
    """Events of one `log_source` (a stream name, or "healthevents"), as the API sent them.

    `times`, when given, holds each event's `timestamp` as the page parser read it (aligned with
    `events`), so a sink need not parse it again. `prepared` is the sink's own form of the rows when
    its `prepare` made one (else None).
    """

    log_source: str
    events: Sequence[Mapping[str, Any]]
    ingested_at: datetime
    times: Sequence[datetime] | None = None
    prepared: Any = None


class Sink(Protocol):
    """Destination of rows.

    `write` returns only when the sink has durably accepted every event of `batch` (or recorded the
    ones it rejected, e.g. in a dead-letter file); it raises otherwise, and then nothing may be
    assumed delivered. When `transactional` is True, `checkpoint` is required and is committed in the
    same transaction as the rows (compare-and-set on its version); the stored checkpoint is returned.
    When False, `checkpoint` must be None and None is returned.
    """

    name: str
    transactional: bool

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None) -> Checkpoint | None: ...

    def prepare(self, batch: Batch) -> Batch:
        """The CPU work of `write` that needs no lock, done ahead: the pipeline calls it before it
        takes the stream's commit lock, so one page's rows are built while another's are stored.
        Returns the batch to pass to `write` (`batch` itself when there is nothing to prepare). No I/O.
        """
        ...

    def check(self) -> str:
        """Prove the destination is usable; return a one-line description or raise UserError."""
        ...

    def close(self) -> None: ...
