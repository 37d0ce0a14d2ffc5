"""A sink that appends rows to a JSON Lines file (or stdout), for piping into other tools.

Each row is one JSON object with the 33 columns of `OnePasswordEventLogs_CL` in table order:
dynamic columns nested (not strings), datetimes RFC 3339 in UTC with `Z`, NULL as null.

Not transactional: `write` returns after the lines are flushed and fsync'ed; the pipeline then
records the batch's uuids in the stream's ledger and commits the checkpoint to a FileCheckpointStore.
A crash after the write and before the ledger record is the one case that can write a line twice
(the batch was in flight); anything the ledger holds is never written again.
Path "-" writes to stdout (flushed, not fsync'ed). A new file is created with mode 0600.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Final

import orjson

from opsentinel.errors import StoreError
from opsentinel.schema import COLUMNS
from opsentinel.sinks.base import Batch, Receipt
from opsentinel.state import Checkpoint
from opsentinel.transform import to_columns

__all__ = ["JsonlSink", "row_object"]

_NAMES: Final = tuple(c.name for c in COLUMNS)
_DYNAMIC: Final = tuple(c.kind == "dynamic" for c in COLUMNS)
_OPTIONS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def row_object(values: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """One row (33 values in table order) as the JSON object a line holds."""
    return {
        name: orjson.Fragment(v) if dyn and v is not None else v
        for name, v, dyn in zip(_NAMES, values, _DYNAMIC, strict=True)
    }


class JsonlSink:
    """Appends one line per event to `path` ("-" = stdout)."""

    name = "jsonl"
    transactional = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._stdout = self.path == "-"
        self._fd: int | None = None  # unbuffered: what write() returned for is in the file
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonlSink({self.path!r})"

    def prepare(self, batch: Batch) -> Batch:
        return batch  # not transactional: `write` already runs outside the commit lock

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None) -> Receipt:
        """Append the batch's rows; returns once they are on disk (stdout: flushed).

        On failure (StoreError) a partly written batch is cut off again, so the file stays whole lines.
        """
        if checkpoint is not None:
            raise ValueError(
                "the jsonl sink is not transactional: commit checkpoints to a FileCheckpointStore"
            )
        columns = to_columns(batch.log_source, batch.events, batch.ingested_at, batch.times)
        payload = b"".join(
            orjson.dumps(row_object(row), option=_OPTIONS) + b"\n" for row in zip(*columns, strict=True)
        )
        if batch.before_send is not None:
            batch.before_send()
        with self._lock:
            if self._stdout:
                self._write_stdout(payload)
            else:
                self._append(payload)
        return Receipt(len(batch.events))

    def check(self) -> str:
        if not self._stdout:
            with self._lock:
                self._open()
        return f"JSON Lines to {self._label()}"

    def close(self) -> None:
        with self._lock:
            if self._stdout:
                sys.stdout.flush()
                return
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    def _write_stdout(self, payload: bytes) -> None:
        try:
            sys.stdout.buffer.write(payload)
            sys.stdout.buffer.flush()
        except OSError as exc:
            raise StoreError(f"cannot write {self._label()}: {exc.strerror or exc}") from exc

    def _append(self, payload: bytes) -> None:
        fd = self._open()
        try:
            start = os.fstat(fd).st_size
        except OSError as exc:
            raise StoreError(f"cannot write {self._label()}: {exc.strerror or exc}") from exc
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)  # best effort: no torn line for the next run to append to
            except OSError:
                pass
            raise StoreError(f"cannot write {self._label()}: {exc.strerror or exc}") from exc

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open {self._label()}: {exc.strerror or exc}") from exc
        return self._fd

    def _label(self) -> str:
        return "stdout" if self._stdout else str(Path(self.path))
