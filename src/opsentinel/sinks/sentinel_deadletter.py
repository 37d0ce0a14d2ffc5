"""The dead-letter file: records Azure refused (or that cannot be sent), kept for a person to look at.

One JSON object per line in `<dir>/dead-letter.jsonl`, created 0600 (records hold names and email
addresses): `{"time", "stream", "reason", "record"}`. A line is flushed and fsynced before `add`
returns, because the caller then treats the record as resolved and lets the checkpoint move past it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from opsentinel.errors import StoreError
from opsentinel.timefmt import format_rfc3339

__all__ = ["DEAD_LETTER_FILE", "DeadLetterFile"]

DEAD_LETTER_FILE: Final = "dead-letter.jsonl"


class DeadLetterFile:
    """Appends dead-lettered records to `directory/dead-letter.jsonl`; safe to share between threads."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / DEAD_LETTER_FILE
        self._lock = threading.Lock()

    def add(self, *, stream: str, reason: str, record: Mapping[str, Any]) -> None:
        """Append one line durably; StoreError (one line) when the file cannot be written."""
        line = orjson.dumps(
            {
                "time": format_rfc3339(datetime.now(UTC)),
                "stream": stream,
                "reason": reason,
                "record": record,
            },
            default=str,
        )
        with self._lock:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.fchmod(fd, 0o600)
                    data = memoryview(line + b"\n")
                    while data:
                        data = data[os.write(fd, data) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StoreError(
                    f"cannot write the dead-letter file {self.path}: {exc.strerror or exc}"
                ) from exc
