"""Checkpoints and stream status as small JSON files, for sinks that cannot hold them (jsonl, sentinel).

Layout under the state directory (`--state`, default `.op-sentinel/`):

    run.lock                                   the running writer's lock (see writerlock)
    checkpoints/.lock                          fcntl lock: commit-if-unchanged across processes
    checkpoints/<account>/<stream>.json        one Checkpoint
    ledger/<account>/<stream>.jsonl            the delivered-uuid ledger (see ledger): appended
    status/<account>/<stream>.json             one StreamStatus

Names are percent-encoded (anything but letters, digits, `-` and `_`; a long one shortened with its
SHA-256, see _encode), so no account or stream can escape its directory. Every file carries
`format_version`. Files are written atomically (a temporary file in the same directory, fsync,
rename, fsync of the directory), with mode 0600 in 0700 directories: a crash leaves the old file or
the new one, never a torn one.

A checkpoint file that cannot be read or parsed is a StoreError naming it, never a silent fresh
start (which would re-read up to 120 days of history, or skip it). A failed write (read-only
directory, full disk) is a StoreError and leaves the previous file as it was.

The ledger is a log: each append is one line `{"u": [uuids], "t": [epoch microseconds]}`, written and
fsync'ed before `append_ledger` returns. A line cut short by a crash was never acknowledged; loading
ignores it and the next append cuts it off. Compaction rewrites the file atomically.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from opsentinel.checkpoints.codec import (
    FORMAT_VERSION,
    checkpoint_from_json,
    checkpoint_json,
    decode_record,
    encode_name,
    ledger_line,
    parse_ledger,
    status_from_json,
    status_json,
)
from opsentinel.errors import CheckpointConflict, StoreError
from opsentinel.state import Checkpoint, StreamStatus
from opsentinel.writerlock import WriterLock

__all__ = ["FORMAT_VERSION", "FileCheckpointStore"]


_MAX_NAME: Final = 160  # characters of an encoded name in a file name (NAME_MAX is 255 bytes)


def _encode(name: str) -> str:
    """encode_name, shortened for the file system when long: a prefix and the name's SHA-256.
    `~` never occurs in an encoded name, so a shortened one cannot equal a plain one."""
    encoded = encode_name(name)
    if len(encoded) <= _MAX_NAME:
        return encoded
    return f"{encoded[: _MAX_NAME - 65]}~{hashlib.sha256(name.encode()).hexdigest()}"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class FileCheckpointStore:
    """CheckpointStore and StatusStore over JSON files in `state_dir`. Safe across threads and processes."""

    def __init__(
        self, state_dir: str | os.PathLike[str], *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.state_dir = Path(state_dir)
        self._checkpoints = self.state_dir / "checkpoints"
        self._status = self.state_dir / "status"
        self._ledger = self.state_dir / "ledger"
        self._clock = clock
        self._thread_lock = threading.Lock()
        self._ledger_lock = threading.Lock()
        self._ledger_sizes: dict[Path, int] = {}  # ledger file -> length of its whole lines

    def writer_lock(self) -> WriterLock:
        """The lock a `run` holds on this state directory (see writerlock)."""
        return WriterLock(self.state_dir / "run.lock", f"the state directory {self.state_dir}")

    def __repr__(self) -> str:
        return f"FileCheckpointStore({str(self.state_dir)!r})"

    # CheckpointStore ---------------------------------------------------------------------------

    def read(self, account: str, stream: str) -> Checkpoint | None:
        path = self._path(self._checkpoints, account, stream)
        data = _load(path, "checkpoint")
        return None if data is None else self._checkpoint(data, path)

    def commit(self, checkpoint: Checkpoint) -> Checkpoint:
        """Store `checkpoint` if the stored version equals `checkpoint.version` (0 = none stored)."""
        path = self._path(self._checkpoints, checkpoint.account, checkpoint.stream)
        with self._locked(self._checkpoints):
            current = self.read(checkpoint.account, checkpoint.stream)
            stored_version = 0 if current is None else current.version
            if stored_version != checkpoint.version:
                raise CheckpointConflict(
                    f"checkpoint of {checkpoint.stream} (account {checkpoint.account}) is at version "
                    f"{stored_version}, not {checkpoint.version}: another run committed first"
                )
            stored = replace(checkpoint, version=checkpoint.version + 1, updated_at=self._clock())
            self._write(path, checkpoint_json(stored))
        return stored

    def list(self) -> list[Checkpoint]:
        out = []
        for path in self._files(self._checkpoints):
            data = _load(path, "checkpoint")
            if data is not None:
                out.append(self._checkpoint(data, path))
        return sorted(out, key=lambda c: (c.account, c.stream))

    def ensure_writable(self) -> None:
        """Create the state directory (0700) if needed and prove files can be written in it.

        For a run to call before it delivers anything: a sink that is not transactional commits the
        checkpoint only after the delivery, so a state directory found unwritable only then would
        have the same events delivered again on every retry. StoreError (one line) otherwise.
        """
        for root in (self._checkpoints, self._status):
            try:
                _make_private_dirs(root)
                probe = root / f".probe.{os.getpid()}.{secrets.token_hex(4)}.tmp"
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, b"{}\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                    probe.unlink(missing_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot write the state directory {self.state_dir}: {_reason(exc)}"
                ) from exc

    # StatusStore -------------------------------------------------------------------------------

    def write_status(self, status: StreamStatus) -> None:
        if status.updated_at is None:
            status = replace(status, updated_at=self._clock())
        path = self._path(self._status, status.account, status.stream)
        with self._locked(self._status):
            self._write(path, status_json(status))

    def read_statuses(self) -> builtins.list[StreamStatus]:
        out = []
        for path in self._files(self._status):
            data = _load(path, "status")
            if data is not None:
                out.append(status_from_json(data, f"the status file {path}"))
        return sorted(out, key=lambda s: (s.account, s.stream))

    # LedgerStore -------------------------------------------------------------------------------

    def load_ledger(self, account: str, stream: str) -> builtins.list[tuple[str, int]]:
        path = self._ledger_path(account, stream)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self._ledger_sizes[path] = 0
            return []
        except OSError as exc:
            raise StoreError(f"cannot read the ledger file {path}: {_reason(exc)}") from exc
        entries, whole = parse_ledger(raw, f"the ledger file {path}")
        self._ledger_sizes[path] = whole
        return entries

    def append_ledger(self, account: str, stream: str, entries: Sequence[tuple[str, int]]) -> None:
        if not entries:
            return
        path = self._ledger_path(account, stream)
        line = ledger_line(entries)
        with self._ledger_lock:
            try:
                _make_private_dirs(path.parent)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # read: to find a torn last line
                try:
                    end = self._ledger_sizes.get(path)
                    if end is None or os.fstat(fd).st_size != end:
                        end = self._whole_lines(fd)
                        os.ftruncate(fd, end)  # a line cut short by a crash
                    view = memoryview(line)
                    offset = end
                    while view:
                        written = os.pwrite(fd, view, offset)
                        view, offset = view[written:], offset + written
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self._ledger_sizes.pop(path, None)
                raise StoreError(f"cannot write the ledger file {path}: {_reason(exc)}") from exc
            self._ledger_sizes[path] = end + len(line)

    def rewrite_ledger(self, account: str, stream: str, entries: Sequence[tuple[str, int]]) -> None:
        path = self._ledger_path(account, stream)
        payload = ledger_line(entries) if entries else b""
        with self._ledger_lock:
            self._write_bytes(path, payload)
            self._ledger_sizes[path] = len(payload)

    def _ledger_path(self, account: str, stream: str) -> Path:
        return self._ledger / _encode(account) / f"{_encode(stream)}.jsonl"

    @staticmethod
    def _whole_lines(fd: int) -> int:
        """The length of the file's whole lines (up to and including its last newline)."""
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
        return data.rfind(b"\n") + 1

    # files -------------------------------------------------------------------------------------

    @staticmethod
    def _path(root: Path, account: str, stream: str) -> Path:
        return root / _encode(account) / f"{_encode(stream)}.json"

    @staticmethod
    def _files(root: Path) -> Iterator[Path]:
        if not root.is_dir():
            return
        try:
            for sub in sorted(root.iterdir()):
                if sub.is_dir():
                    yield from sorted(p for p in sub.glob("*.json") if not p.name.startswith("."))
        except OSError as exc:
            raise StoreError(f"cannot read the state directory {root}: {_reason(exc)}") from exc

    def _checkpoint(self, data: dict[str, Any], path: Path) -> Checkpoint:
        cp = checkpoint_from_json(data, f"the checkpoint file {path}")
        if self._path(path.parent.parent, cp.account, cp.stream) != path:
            raise StoreError(
                f"the checkpoint file {path} holds another stream's checkpoint; fix or remove it"
            )
        return cp

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        self._write_bytes(path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")

    @staticmethod
    def _write_bytes(path: Path, payload: bytes) -> None:
        """Atomically replace `path` with `payload` (tmp in the same directory, fsync, rename, fsync dir)."""
        try:
            _make_private_dirs(path.parent)
            tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {_reason(exc)} (the previous file is unchanged)") from exc

    @contextmanager
    def _locked(self, root: Path) -> Iterator[None]:
        """Exclusive across threads (threading lock) and processes (flock on root/.lock)."""
        with self._thread_lock:
            try:
                _make_private_dirs(root)
                fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot use the state directory {root}: {_reason(exc)}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock


def _load(path: Path, what: str) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read the {what} file {path}: {_reason(exc)}") from exc
    return decode_record(raw, f"the {what} file {path}")


def _make_private_dirs(directory: Path) -> None:
    """mkdir -p, with mode 0700 for every directory it creates."""
    missing = []
    current = directory
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode is narrowed by the umask, never widened


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
