"""The dead-letter file: records Azure refused (or that cannot be sent), kept for a person to look at.

One JSON object per line in `<dir>/dead-letter.jsonl`, created 0600 (records hold names and email
addresses): `{"time", "stream", "reason", "record"}`, plus `"history": true` for a record that was
on its way to the history stream (so a resend sends it there again). A line is flushed and fsynced
before `add` returns, because the caller then treats the record as resolved and lets the checkpoint
move past it.

`op-sentinel resend-dead-letters` takes lines out again once Azure accepts them (`remove`). Both
sides hold an `flock` on the file while they touch it, and an appender checks that the file it
locked is still the one at the path (a removal replaces it atomically), so no line is ever lost
between a running `run` appending and a resend rewriting.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from opsentinel.errors import StoreError
from opsentinel.timefmt import format_rfc3339

__all__ = ["DEAD_LETTER_FILE", "DeadLetter", "DeadLetterFile"]

DEAD_LETTER_FILE: Final = "dead-letter.jsonl"


@dataclass(frozen=True)
class DeadLetter:
    """One line of the file: `key` identifies it (a digest of the line), `record` is what was sent."""

    key: str
    stream: str
    reason: str
    record: dict[str, Any]
    history: bool = False


class DeadLetterFile:
    """Appends dead-lettered records to `directory/dead-letter.jsonl`; safe to share between threads
    and processes."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / DEAD_LETTER_FILE
        self._lock = threading.Lock()

    def add(self, *, stream: str, reason: str, record: Mapping[str, Any], history: bool = False) -> None:
        """Append one line durably; StoreError (one line) when the file cannot be written."""
        entry: dict[str, Any] = {
            "time": format_rfc3339(datetime.now(UTC)),
            "stream": stream,
            "reason": reason,
            "record": record,
        }
        if history:
            entry["history"] = True
        line = orjson.dumps(entry, default=str)
        with self._lock:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with self._locked_file(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
                    data = memoryview(line + b"\n")
                    while data:
                        data = data[os.write(fd, data) :]
                    os.fsync(fd)
            except OSError as exc:
                raise StoreError(
                    f"cannot write the dead-letter file {self.path}: {exc.strerror or exc}"
                ) from exc

    def read(self) -> list[DeadLetter]:
        """Every whole line, oldest first (a line that does not parse is a StoreError naming it)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read the dead-letter file {self.path}: {exc.strerror or exc}") from exc
        out = []
        for number, line in enumerate(raw.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):
                break  # cut short by a crash while it was appended: never acknowledged
            try:
                data = orjson.loads(line)
                out.append(
                    DeadLetter(
                        _key(line), str(data["stream"]), str(data.get("reason", "")), dict(data["record"])
                    )
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise StoreError(
                    f"line {number} of the dead-letter file {self.path} is not valid: {exc}"
                ) from exc
        return out

    def remove(self, keys: set[str]) -> int:
        """Take the lines whose key is in `keys` out of the file (atomically); how many were taken."""
        if not keys:
            return 0
        with self._lock:
            try:
                with self._locked_file(os.O_RDONLY) as fd:
                    size = os.fstat(fd).st_size
                    raw = os.pread(fd, size, 0)
                    lines = raw.splitlines(keepends=True)
                    kept = [line for line in lines if not (line.endswith(b"\n") and _key(line) in keys)]
                    tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
                    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    try:
                        os.write(out, b"".join(kept))
                        os.fsync(out)
                    finally:
                        os.close(out)
                    os.replace(tmp, self.path)  # still under the lock of the file it replaces
                    return len(lines) - len(kept)
            except FileNotFoundError:
                return 0
            except OSError as exc:
                reason = exc.strerror or exc
                raise StoreError(
                    f"cannot rewrite the dead-letter file {self.path}: {reason} (unchanged)"
                ) from exc

    @contextmanager
    def _locked_file(self, flags: int) -> Iterator[int]:
        """The file at the path, opened and flock'ed; reopened if it was replaced while we waited."""
        while True:
            fd = os.open(self.path, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    continue
                if flags & os.O_CREAT:
                    os.fchmod(fd, 0o600)
                yield fd
                return
            finally:
                os.close(fd)  # closing releases the flock


def _key(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()[:32]
