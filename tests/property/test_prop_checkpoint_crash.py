"""Property tests of the file checkpoint store: any sequence of commits cut by a crash at any system
call (including halfway through a write) leaves a checkpoint that reads back as the last committed
one or the one being committed, never a torn or unreadable file, and the store goes on working.

Each example runs the commits in a forked child that dies with `os._exit` (no cleanup, no flush: a
crash) at the chosen call; this process then reads what is on disk."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from opsentinel import checkpoints_file
from opsentinel.checkpoints_file import FileCheckpointStore
from opsentinel.state import Checkpoint

ACCOUNT, STREAM = "ACCT", "auditevents"
T0 = datetime(2026, 5, 1, tzinfo=UTC)

checkpoint_values = st.fixed_dictionaries(
    {
        "cursor": st.one_of(st.none(), st.text(min_size=1, max_size=3000)),
        "newest": st.one_of(st.none(), st.integers(0, 10**9)),
        "events": st.integers(0, 10**12),
        "backfill": st.one_of(
            st.none(),
            st.dictionaries(
                st.text(max_size=8),
                st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=50)),
                max_size=5,
            ),
        ),
    }
)


def _checkpoint(value: dict[str, Any], version: int) -> Checkpoint:
    newest = None if value["newest"] is None else T0 + timedelta(microseconds=value["newest"])
    return Checkpoint(
        ACCOUNT,
        STREAM,
        cursor=value["cursor"],
        newest_event_time=newest,
        events_delivered=value["events"],
        version=version,
        backfill=value["backfill"],
    )


class _CrashingOs:
    """`os` for checkpoints_file that dies at the `crash_at`-th call of open/write/fsync/replace
    (a write is cut to half its bytes first)."""

    def __init__(self, crash_at: int) -> None:
        self._crash_at = crash_at
        self._calls = 0

    def _tick(self) -> bool:
        self._calls += 1
        return self._calls == self._crash_at

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in ("open", "write", "fsync", "replace"):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._tick():
                if name == "write":
                    fd, data = args
                    os.write(fd, bytes(data[: len(data) // 2]))
                os._exit(0)
            return real(*args, **kwargs)

        return call


def _run_child(state: Path, values: list[dict[str, Any]], crash_at: int, report: int) -> None:
    """In the child: commit `values` one by one, reporting each stored version, dying at `crash_at`."""
    try:
        checkpoints_file.os = _CrashingOs(crash_at)  # type: ignore[attr-defined]
        store = FileCheckpointStore(state, clock=lambda: T0)
        version = 0
        for value in values:
            stored = store.commit(_checkpoint(value, version))
            version = stored.version
            os.write(report, f"{version}\n".encode())
    finally:
        os._exit(0)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(checkpoint_values, min_size=1, max_size=4), crash_at=st.integers(1, 30))
def test_a_crash_at_any_call_leaves_a_readable_checkpoint(
    values: list[dict[str, Any]], crash_at: int
) -> None:
    state = Path(tempfile.mkdtemp(prefix="cp-crash-"))
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_end)
            _run_child(state, values, crash_at, write_end)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end) as reports:
            committed = [int(line) for line in reports.read().split()]

        store = FileCheckpointStore(state, clock=lambda: T0)
        found = store.read(ACCOUNT, STREAM)  # never raises: no torn file
        last = committed[-1] if committed else 0
        if found is None:
            assert last == 0, "a committed checkpoint disappeared"
        else:
            # What a commit that returned stored is there; the one cut short is there whole or not at all.
            assert found.version in (last, last + 1)
            expected = _checkpoint(values[found.version - 1], found.version)
            assert (found.cursor, found.newest_event_time, found.events_delivered, found.backfill) == (
                expected.cursor,
                expected.newest_event_time,
                expected.events_delivered,
                expected.backfill,
            )
        assert [c.version for c in store.list()] == ([found.version] if found else [])
        # ... and the store goes on: the next commit succeeds.
        again = store.commit(_checkpoint(values[0], found.version if found else 0))
        assert store.read(ACCOUNT, STREAM) == again
    finally:
        shutil.rmtree(state, ignore_errors=True)


names = st.text(min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(account=names, stream=names)
def test_any_account_and_stream_name_stays_inside_the_state_directory(account: str, stream: str) -> None:
    state = Path(tempfile.mkdtemp(prefix="cp-names-"))
    try:
        store = FileCheckpointStore(state / "state")
        stored = store.commit(Checkpoint(account, stream, cursor="c"))
        assert store.read(account, stream) == stored
        assert [(c.account, c.stream) for c in store.list()] == [(account, stream)]
        for path in state.rglob("*"):
            assert path.resolve().is_relative_to((state / "state").resolve())
            if path.is_file():
                assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    finally:
        shutil.rmtree(state, ignore_errors=True)
