"""Helpers for the store and sink tests: realistic events, and child processes that use a store.

Child processes run as `python -m tests.contract.storehelp <role> ...` from the repository root, so
tests exercise real cross-process locking, crashes (SIGKILL) and write failures (RLIMIT_FSIZE).
Each role prints one JSON line per step on stdout and exits non-zero on an unexpected error.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "tests" / "fixtures" / "onepassword_docs"
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

_TEMPLATES = {
    "auditevents": "v2_auditevents_response_example",
    "signinattempts": "v2_signinattempts_response_example",
    "itemusages": "v2_itemusages_response_example",
}


def template(stream: str) -> dict[str, Any]:
    data = json.loads((DOCS / f"{_TEMPLATES[stream]}.json").read_text())
    return dict(data["items"][0])


def make_events(stream: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """`n` events of `stream` with unique uuids and ascending timestamps (event i at BASE_TIME + i ms)."""
    base = template(stream)
    out = []
    for i in range(start, start + n):
        moment = BASE_TIME + timedelta(milliseconds=i)
        out.append(
            dict(
                base,
                uuid=f"{stream[:2].upper()}{i:024d}",
                timestamp=moment.isoformat().replace("+00:00", "Z"),
            )
        )
    return out


def spawn(role: str, *args: str) -> subprocess.Popen[str]:
    """Start a child process running `role` (see `main`), stdout piped, in the repository root."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.contract.storehelp", role, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> dict[str, Any]:
    """The next JSON line the child prints (fails the test if it exits or stays silent)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            return dict(json.loads(line))
        if proc.poll() is not None:
            raise AssertionError(
                f"child exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
    raise AssertionError("child printed nothing in time")


# --- child roles ------------------------------------------------------------------------------


def _say(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


def _writer(path: str, seconds: str, batch: str, stop_file: str = "") -> None:
    """Write batches with a checkpoint each for `seconds` (0 = until killed) or until `stop_file`
    exists; report each commit."""
    from opsentinel.sinks.base import Batch
    from opsentinel.sinks.duckdb import DuckDBStore
    from opsentinel.state import Checkpoint

    store = DuckDBStore(path)
    size = int(batch)
    cp = store.read("acct", "auditevents") or Checkpoint("acct", "auditevents")
    end = time.monotonic() + float(seconds) if float(seconds) else float("inf")
    _say(ready=True)
    k = cp.events_delivered // size
    while time.monotonic() < end and not (stop_file and os.path.exists(stop_file)):
        events = make_events("auditevents", size, start=k * size)
        cp = (
            store.write(
                Batch("auditevents", events, datetime.now(UTC)),
                cp.advanced(cursor=f"c{k}"),
            ).checkpoint
            or cp
        )
        k += 1
        _say(committed=cp.events_delivered)
    store.close()


def _reader(path: str, reads: str) -> None:
    """Open read-only and count rows `reads` times, a moment apart; report every count."""
    from opsentinel.schema import TABLE_NAME
    from opsentinel.store_read import reading

    for _ in range(int(reads)):
        with reading(path, wait=30.0) as con:
            rows = con.execute(f'SELECT count(*) FROM "{TABLE_NAME}"').fetchall()
            cps = con.execute("SELECT events_delivered FROM opsentinel_checkpoints").fetchall()
        _say(rows=rows[0][0], checkpoint=cps[0][0] if cps else 0)
        time.sleep(0.1)


def _hold(path: str, mode: str) -> None:
    """Open the file (`rw` or `ro`) with plain duckdb and keep it open until killed."""
    import duckdb

    con = duckdb.connect(path, read_only=(mode == "ro"))
    _say(holding=True)
    time.sleep(120)
    con.close()


def _limited_write(kind: str, path: str, limit: str) -> None:
    """Write with the file-size limit at `limit` bytes (a full disk, as far as the writer can tell)."""
    from opsentinel.errors import StoreError
    from opsentinel.sinks.base import Batch

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
    try:
        if kind == "duckdb":
            from opsentinel.sinks.duckdb import DuckDBStore

            store = DuckDBStore(path)
            cp = store.read("acct", "auditevents")
            assert cp is not None
            store.write(Batch("auditevents", make_events("auditevents", 5000, 10_000), datetime.now(UTC)), cp)
            store.close()
        elif kind == "file":
            from opsentinel.checkpoints_file import FileCheckpointStore

            fstore = FileCheckpointStore(path)
            (current,) = fstore.list()
            fstore.commit(current.advanced(cursor="x" * 10_000))
        else:
            from opsentinel.sinks.jsonl import JsonlSink

            sink = JsonlSink(path)
            sink.write(Batch("auditevents", make_events("auditevents", 2000, 10_000), datetime.now(UTC)))
    except StoreError as exc:
        _say(error=str(exc))
        return
    _say(error=None)


def _file_committer(state_dir: str, count: str) -> None:
    """Increment a file checkpoint `count` times with read + commit-if-unchanged, retrying conflicts."""
    from opsentinel.checkpoints_file import FileCheckpointStore
    from opsentinel.errors import CheckpointConflict
    from opsentinel.state import Checkpoint

    store = FileCheckpointStore(state_dir)
    done = conflicts = 0
    while done < int(count):
        current = store.read("acct", "auditevents") or Checkpoint("acct", "auditevents")
        try:
            store.commit(current.advanced(events_delivered=current.events_delivered + 1))
            done += 1
        except CheckpointConflict:
            conflicts += 1
    _say(done=done, conflicts=conflicts)


ROLES = {
    "writer": _writer,
    "reader": _reader,
    "hold": _hold,
    "limited-write": _limited_write,
    "file-committer": _file_committer,
}


def main(argv: list[str]) -> None:
    ROLES[argv[0]](*argv[1:])


if __name__ == "__main__":
    os.umask(0o022)
    main(sys.argv[1:])
