"""The sink protocol: where rows go, and whether the sink can commit a checkpoint with them.

A transactional sink (DuckDB) stores a batch's rows and the stream's new checkpoint in one
transaction and is itself the CheckpointStore. Any other sink only stores rows; the pipeline then
records what was acknowledged in the stream's ledger and commits the checkpoint to a separate store,
only after `write` returned (commit after ack).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from opsentinel.state import Checkpoint


@dataclass(frozen=True)
class Receipt:
    """What a `write` did with a batch: every event ends as delivered, duplicate or dead-lettered.

    `delivered`: rows the sink newly stored or accepted; `duplicates`: rows it dropped because it
    already held them (DuckDB); `dead_lettered`: records it refused and set aside. `checkpoint`: for
    a transactional sink, the checkpoint it stored with the rows (its counters include these counts).
    """

    delivered: int
    duplicates: int = 0
    dead_lettered: int = 0
    checkpoint: Checkpoint | None = None


@dataclass(frozen=True)
class Batch:
    """Events of one `log_source` (a stream name, or "healthevents"), as the API sent them.

    `times`, when given, holds each event's `timestamp` as the page parser read it (aligned with
    `events`), so a sink need not parse it again. `prepared` is the sink's own form of the rows when
    its `prepare` made one (else None). `on_resolved`, when given, is called by a sink that delivers a
    batch in parts with the positions (in `events`) of each part the moment it is accepted (True) or
    dead-lettered (False), so the pipeline can record the acknowledgement before the whole batch is
    done; it may be called from the sink's threads and may raise (StoreError), which fails the write.
    `boundary`, when given, is the stream's first-run boundary: a sink that keeps history apart (the
    Sentinel sink's history stream) sends events stamped before it there. `before_send`, when given,
    is called before every request or write the sink starts for the batch; it raises to stop it
    (a replica whose ownership of the stream may end before the request would).
    """

    log_source: str
    events: Sequence[Mapping[str, Any]]
    ingested_at: datetime
    times: Sequence[datetime] | None = None
    prepared: Any = None
    on_resolved: Callable[[Sequence[int], bool], None] | None = None
    boundary: datetime | None = None
    before_send: Callable[[], None] | None = None


class Sink(Protocol):
    """Destination of rows.

    `write` returns only when the sink has durably accepted every event of `batch` (or recorded the
    ones it proved bad, e.g. in a dead-letter file); it raises otherwise, and then only the parts
    reported through `batch.on_resolved` may be assumed delivered. When `transactional` is True,
    `checkpoint` is required and is committed in the same transaction as the rows (compare-and-set
    on its version, counters raised by the receipt's counts: `Checkpoint.tallied`); the receipt
    carries the stored checkpoint. When False, `checkpoint` must be None.
    """

    name: str
    transactional: bool

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None) -> Receipt: ...

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
