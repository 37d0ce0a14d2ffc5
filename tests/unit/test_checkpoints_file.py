"""FileCheckpointStore: atomic private files, loud corruption, cross-process commit-if-unchanged."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.contract.storehelp import spawn, wait_for_line

from opsentinel.checkpoints_file import FORMAT_VERSION, FileCheckpointStore
from opsentinel.errors import StoreError
from opsentinel.state import Checkpoint, StreamStatus

T0 = datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def committed(state: Path) -> tuple[FileCheckpointStore, Checkpoint, Path]:
    store = FileCheckpointStore(state)
    cp = store.commit(
        Checkpoint("ACCT", "auditevents", cursor="c1", newest_event_time=T0, events_delivered=3)
    )
    return store, cp, state / "checkpoints" / "ACCT" / "auditevents.json"


def test_the_file_is_readable_json_with_a_format_version(state: Path) -> None:
    _, cp, path = committed(state)
    data = json.loads(path.read_text())
    assert data == {
        "format_version": FORMAT_VERSION,
        "account": "ACCT",
        "stream": "auditevents",
        "cursor": "c1",
        "newest_event_time": "2026-02-03T04:05:06.789000Z",
        "events_delivered": 3,
        "version": 1,
        "updated_at": data["updated_at"],
        "backfill": None,
        "live_start": None,
        "first_run_at": None,
        "caught_up_at": None,
        "events_duplicate": 0,
        "events_dead_lettered": 0,
    }
    assert datetime.fromisoformat(data["updated_at"]) == cp.updated_at


def test_files_are_0600_and_directories_0700(state: Path) -> None:
    old = os.umask(0o022)
    try:
        store, _, _ = committed(state)
        store.write_status(StreamStatus("ACCT", "auditevents"))
    finally:
        os.umask(old)
    for p in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), p


def test_no_temporary_files_are_left_behind(state: Path) -> None:
    store, cp, path = committed(state)
    for k in range(5):
        cp = store.commit(cp.advanced(cursor=f"c{k}"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["auditevents.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not JSON"),
        (b'{"format_version": 1, "account": "ACCT", "stream": "auditevents", "cur', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"account": "ACCT"}', "no format_version"),
        (
            b'{"format_version": 1, "account": "ACCT", "stream": "auditevents", "cursor": 5,'
            b' "events_delivered": 0, "version": 1}',
            "cursor is not a str",
        ),
        (
            b'{"format_version": 1, "account": "ACCT", "stream": "auditevents", "events_delivered": 0,'
            b' "version": 1, "newest_event_time": "yesterday"}',
            "corrupt",
        ),
        (
            b'{"format_version": 1, "account": "OTHER", "stream": "auditevents", "events_delivered": 0,'
            b' "version": 1}',
            "another stream",
        ),
        (b'{"format_version": 1, "account": "ACCT", "stream": "auditevents"}', "corrupt"),
    ],
)
def test_a_corrupt_checkpoint_is_a_loud_error_naming_the_file(
    state: Path, content: bytes, reason: str
) -> None:
    store, _, path = committed(state)
    path.write_bytes(content)
    for action in (lambda: store.read("ACCT", "auditevents"), store.list):
        with pytest.raises(StoreError, match=reason) as info:
            action()
        assert str(path) in str(info.value)
    with pytest.raises(StoreError):
        store.commit(Checkpoint("ACCT", "auditevents"))  # never a silent fresh start
    assert path.read_bytes() == content


def test_a_newer_format_is_refused(state: Path) -> None:
    store, _, path = committed(state)
    data = json.loads(path.read_text())
    data["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="upgrade op-sentinel"):
        store.read("ACCT", "auditevents")


def test_an_unreadable_checkpoint_is_an_error(state: Path) -> None:
    store, _, path = committed(state)
    path.unlink()
    path.mkdir()  # EISDIR even for root
    with pytest.raises(StoreError, match="cannot read the checkpoint file"):
        store.read("ACCT", "auditevents")


def test_a_state_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as info:
        FileCheckpointStore(blocker).commit(Checkpoint("a", "auditevents"))
    assert str(blocker) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_state_directory_keeps_the_old_file(state: Path) -> None:
    store, cp, path = committed(state)
    path.parent.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="previous file is unchanged"):
            store.commit(cp.advanced(cursor="c2"))
    finally:
        path.parent.chmod(0o700)
    assert store.read("ACCT", "auditevents") == cp


def test_a_full_disk_keeps_the_old_file(state: Path) -> None:
    store, cp, path = committed(state)
    before = path.read_bytes()
    child = spawn("limited-write", "file", str(state), "4096")  # the new file needs > 10 kB
    result = wait_for_line(child)
    child.communicate(timeout=30)
    assert "previous file is unchanged" in result["error"]
    assert path.read_bytes() == before
    assert store.read("ACCT", "auditevents") == cp
    assert sorted(p.name for p in path.parent.iterdir()) == ["auditevents.json"]


def test_commit_if_unchanged_holds_across_processes(state: Path) -> None:
    children = [spawn("file-committer", str(state), "25") for _ in range(3)]
    reports = [wait_for_line(c, timeout=60) for c in children]
    for c in children:
        c.communicate(timeout=30)
        assert c.returncode == 0
    cp = FileCheckpointStore(state).read("acct", "auditevents")
    assert cp is not None
    assert sum(r["done"] for r in reports) == 75
    assert cp.events_delivered == 75  # no lost update
    assert cp.version == 75


def test_status_files_round_trip(state: Path) -> None:
    store = FileCheckpointStore(state)
    store.write_status(
        StreamStatus("ACCT", "itemusages", last_error="HTTP 503", last_error_at=T0, lag_seconds=3)
    )
    (got,) = FileCheckpointStore(state).read_statuses()
    assert (got.last_error, got.last_error_at, got.lag_seconds) == ("HTTP 503", T0, 3.0)
    assert (state / "status" / "ACCT" / "itemusages.json").exists()
    (state / "status" / "ACCT" / "itemusages.json").write_text("{")
    with pytest.raises(StoreError, match="status file"):
        store.read_statuses()


def test_a_name_too_long_for_a_file_name_is_shortened_and_kept_apart(state: Path) -> None:
    """40 four-byte characters percent-encode to 480: more than a file name may hold (255)."""
    store = FileCheckpointStore(state)
    long_a, long_b = "\U00010000" * 40, "\U00010000" * 39 + "\U00010001"
    a = store.commit(Checkpoint(long_a, long_b, cursor="a"))
    b = store.commit(Checkpoint(long_b, long_a, cursor="b"))
    assert (store.read(long_a, long_b), store.read(long_b, long_a)) == (a, b)
    assert [c.cursor for c in store.list()] == ["a", "b"]
    store.append_ledger(long_a, long_b, [("u", 1)])
    assert store.load_ledger(long_a, long_b) == [("u", 1)]
    assert all(len(p.name) < 255 for p in state.rglob("*"))
