"""One writer per store: the lock a `run` holds on its DuckDB file or state directory for its lifetime.

Two `run`s on one store would both page every stream: duplicates in Sentinel and JSONL (nothing
fences their uploads), twice the API's rate budget, and commit conflicts in DuckDB. So a run takes an
exclusive `flock` on `<store>.lock` (DuckDB) or `<state>/run.lock` and writes its pid, host and start
time into it; a second run finds the lock taken and stops with one line naming the holder. The lock
is the open file descriptor: the kernel releases it when the process ends, however it ends, so a
crashed run never leaves a stale lock behind. Readers (`status`, `query`) take no lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import orjson

from opsentinel.errors import StoreError
from opsentinel.timefmt import format_rfc3339

__all__ = ["WriterLock"]


class WriterLock:
    """An exclusive, process-lifetime lock on `path`; `acquire()` or StoreError naming the holder."""

    def __init__(self, path: Path, store_label: str) -> None:
        self.path = path
        self._label = store_label
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"WriterLock({str(self.path)!r})"

    def acquire(self) -> WriterLock:
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(
                f"cannot write {self._label}: {exc.strerror or exc} (creating its lock file {self.path.name})"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise StoreError(
                f"another op-sentinel run ({holder}) is writing to {self._label}; stop it first, or use "
                "another store (one writer per store)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self._label}: {exc.strerror or exc} ({self.path})") from exc
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": format_rfc3339(datetime.now(UTC))}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps(info) + b"\n", 0)
        except OSError:
            pass  # the lock itself holds; the holder's name is only a courtesy to the next run
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing releases the flock

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, object]:
    try:
        data = orjson.loads(os.pread(fd, 4096, 0))
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(info: dict[str, object]) -> str:
    pid, host, since = info.get("pid"), info.get("host"), info.get("since")
    if pid is None:
        return "holder unknown"
    text = f"pid {pid} on {host or 'an unknown host'}"
    return f"{text}, since {since}" if since else text
