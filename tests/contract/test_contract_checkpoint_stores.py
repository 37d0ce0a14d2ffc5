"""The contract every checkpoint store passes: DuckDBStore, FileCheckpointStore and the Blob store
(on Azurite), each where it has the capability.

- CheckpointStore and StatusStore: all three.
- LedgerStore (the delivered-uuid ledger of non-transactional sinks): file and Blob (DuckDB de-duplicates
  by uuid inside its own transaction and keeps no ledger).
- A write that fails (file: the state directory made immutable; Blob: Azurite stopped) is one clear
  StoreError and leaves the previous state as it was: file and Blob. DuckDB's failed writes are covered
  by its full-disk tests (tests/unit/sinks).

The Blob store is used as a run uses it: a unit is claimed (leased) before it is written. Its lease
fencing has its own suite (test_contract_blob_leases.py).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.azurite import Azurite, require_azurite

from opsentinel.checkpoints.blob import BlobCheckpointStore
from opsentinel.checkpoints.leases import Leases
from opsentinel.checkpoints_file import FileCheckpointStore
from opsentinel.errors import CheckpointConflict, StoreError
from opsentinel.ledger import LedgerStore
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.state import Checkpoint, CheckpointStore, StatusStore, StreamStatus

Factory = Callable[[], Any]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class ClaimingBlobStore:
    """The Blob store the way a replica uses it: claim a unit's lease, then write it."""

    def __init__(self, url: str, replica: str = "contract") -> None:
        self.store = BlobCheckpointStore.open(url)
        # The longest lease: nothing renews it in these synchronous tests.
        self.leases = Leases(self.store.state, replica, duration=60)

    def _claim(self, account: str, stream: str) -> None:
        if (account, stream) not in self.store.state.owned:
            self.leases.claim(account, stream)

    def commit(self, checkpoint: Checkpoint) -> Checkpoint:
        self._claim(checkpoint.account, checkpoint.stream)
        return self.store.commit(checkpoint)

    def write_status(self, status: StreamStatus) -> None:
        self._claim(status.account, status.stream)
        self.store.write_status(status)

    def append_ledger(self, account: str, stream: str, entries: list[tuple[str, int]]) -> None:
        self._claim(account, stream)
        self.store.append_ledger(account, stream, entries)

    def rewrite_ledger(self, account: str, stream: str, entries: list[tuple[str, int]]) -> None:
        self._claim(account, stream)
        self.store.rewrite_ledger(account, stream, entries)

    def __getattr__(self, name: str) -> Any:  # read, list, read_statuses, load_ledger
        return getattr(self.store, name)

    def close(self) -> None:
        for lease in list(self.store.state.owned.values()):
            self.leases.release(lease)
        self.store.close()


def _close(store: Any) -> None:
    if isinstance(store, DuckDBStore | ClaimingBlobStore):
        store.close()


@pytest.fixture(params=["duckdb", "file", "blob"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory: each call opens the same store afresh (as a restarted process would)."""
    opened: list[Any] = []
    url = request.getfixturevalue("blob_state_url") if request.param == "blob" else ""

    def factory() -> Any:
        store: Any
        if request.param == "duckdb":
            store = DuckDBStore(tmp_path / "store.duckdb")
        elif request.param == "file":
            store = FileCheckpointStore(tmp_path / "state")
        else:
            store = ClaimingBlobStore(url)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        _close(store)


def test_implements_the_protocols(open_store: Factory) -> None:
    store = open_store()
    store = getattr(store, "store", store)
    assert isinstance(store, CheckpointStore)
    assert isinstance(store, StatusStore)


def test_reading_a_missing_checkpoint_gives_none(open_store: Factory) -> None:
    assert open_store().read("acct", "auditevents") is None
    assert open_store().list() == []


def test_commit_from_version_0_then_1(open_store: Factory) -> None:
    store = open_store()
    first = store.commit(
        Checkpoint("acct", "auditevents", cursor="c1", newest_event_time=T0, events_delivered=10)
    )
    assert first.version == 1
    assert first.updated_at is not None
    assert first.updated_at.tzinfo is not None
    assert store.read("acct", "auditevents") == first

    second = store.commit(first.advanced(cursor="c2", events_delivered=25))
    assert second.version == 2
    assert (second.cursor, second.events_delivered) == ("c2", 25)
    assert store.read("acct", "auditevents") == second


def test_a_stale_commit_raises_and_stores_nothing(open_store: Factory) -> None:
    store = open_store()
    first = store.commit(Checkpoint("acct", "auditevents", cursor="c1"))
    second = store.commit(first.advanced(cursor="c2"))
    with pytest.raises(CheckpointConflict):
        store.commit(first.advanced(cursor="stale"))  # version 1, but 2 is stored
    with pytest.raises(CheckpointConflict):
        store.commit(Checkpoint("acct", "auditevents", cursor="fresh"))  # version 0, but one exists
    with pytest.raises(CheckpointConflict):
        store.commit(second.advanced(version=7, cursor="ahead"))
    assert store.read("acct", "auditevents") == second


def test_list_holds_every_checkpoint(open_store: Factory) -> None:
    store = open_store()
    for stream in ("signinattempts", "auditevents", "itemusages"):
        store.commit(Checkpoint("acct", stream, cursor=f"{stream}-1"))
    listed = store.list()
    assert [(c.account, c.stream, c.cursor) for c in listed] == [
        ("acct", "auditevents", "auditevents-1"),
        ("acct", "itemusages", "itemusages-1"),
        ("acct", "signinattempts", "signinattempts-1"),
    ]


def test_accounts_are_isolated(open_store: Factory) -> None:
    store = open_store()
    a = store.commit(Checkpoint("ACCOUNT-A", "auditevents", cursor="a-cursor"))
    assert store.read("ACCOUNT-B", "auditevents") is None
    b = store.commit(Checkpoint("ACCOUNT-B", "auditevents", cursor="b-cursor"))
    assert store.read("ACCOUNT-A", "auditevents") == a
    assert store.read("ACCOUNT-B", "auditevents") == b
    assert {c.account for c in store.list()} == {"ACCOUNT-A", "ACCOUNT-B"}


def test_unusual_names_stay_apart(open_store: Factory) -> None:
    store = open_store()
    names = ["", "../x", "a/b", "a%2Fb", "é", "a.b", "."]
    for name in names:
        store.commit(Checkpoint(name, "auditevents", cursor=f"cursor of {name!r}"))
    for name in names:
        got = store.read(name, "auditevents")
        assert got is not None
        assert got.cursor == f"cursor of {name!r}"
    assert len(store.list()) == len(names)


def test_everything_survives_reopening(open_store: Factory) -> None:
    store = open_store()
    backfill = {"slices": [{"start": "2026-01-01T00:00:00Z", "cursor": "s1", "done": False}]}
    stored = store.commit(
        Checkpoint(
            "acct",
            "signinattempts",
            cursor="c9",
            newest_event_time=T0 + timedelta(microseconds=123456),
            events_delivered=123_456_789,
            backfill=backfill,
        )
    )
    _close(store)
    again = open_store().read("acct", "signinattempts")
    assert again == stored
    assert again.backfill == backfill
    assert again.newest_event_time == T0 + timedelta(microseconds=123456)
    assert again.updated_at == stored.updated_at


def test_stream_status_round_trip_and_replace(open_store: Factory) -> None:
    store = open_store()
    assert store.read_statuses() == []
    failing = StreamStatus(
        "acct",
        "itemusages",
        last_success=T0,
        last_error="429 from the API",
        last_error_at=T0 + timedelta(seconds=5),
        lag_seconds=12.5,
        rows_stored=42,
    )
    store.write_status(failing)
    store.write_status(StreamStatus("acct", "auditevents", rows_stored=1, updated_at=T0))
    got = {s.stream: s for s in open_store().read_statuses()}
    assert got["itemusages"].last_error == "429 from the API"
    assert got["itemusages"].last_error_at == T0 + timedelta(seconds=5)
    assert got["itemusages"].lag_seconds == 12.5
    assert got["itemusages"].rows_stored == 42
    assert got["itemusages"].updated_at is not None
    assert got["auditevents"].updated_at == T0

    store.write_status(
        StreamStatus("acct", "itemusages", last_success=T0 + timedelta(minutes=1), rows_stored=50)
    )
    again = {s.stream: s for s in open_store().read_statuses()}
    assert len(again) == 2
    assert again["itemusages"].rows_stored == 50
    assert again["itemusages"].last_error is None


# --- the delivered-uuid ledger (file and Blob) -------------------------------------------------


@pytest.fixture(params=["file", "blob"])
def open_ledger_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[Any] = []
    url = request.getfixturevalue("blob_state_url") if request.param == "blob" else ""

    def factory() -> Any:
        store = FileCheckpointStore(tmp_path / "state") if request.param == "file" else ClaimingBlobStore(url)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        _close(store)


def _entries(start: int, n: int) -> list[tuple[str, int]]:
    return [(f"uuid-{i:06d}", 1_772_366_400_000_000 + i) for i in range(start, start + n)]


def test_ledger_appends_load_back_in_order(open_ledger_store: Factory) -> None:
    store = open_ledger_store()
    assert isinstance(getattr(store, "store", store), LedgerStore)
    assert store.load_ledger("acct", "auditevents") == []
    store.append_ledger("acct", "auditevents", _entries(0, 3))
    store.append_ledger("acct", "auditevents", [])  # nothing to record: no write
    store.append_ledger("acct", "auditevents", _entries(3, 2))
    assert store.load_ledger("acct", "auditevents") == _entries(0, 5)
    assert open_ledger_store().load_ledger("acct", "auditevents") == _entries(0, 5)  # durable


def test_ledger_rewrite_replaces_it_and_appends_follow(open_ledger_store: Factory) -> None:
    store = open_ledger_store()
    store.append_ledger("acct", "signinattempts", _entries(0, 50))
    store.rewrite_ledger("acct", "signinattempts", _entries(40, 10))
    assert store.load_ledger("acct", "signinattempts") == _entries(40, 10)
    store.append_ledger("acct", "signinattempts", _entries(50, 1))
    assert open_ledger_store().load_ledger("acct", "signinattempts") == _entries(40, 11)
    store.rewrite_ledger("acct", "signinattempts", [])
    assert open_ledger_store().load_ledger("acct", "signinattempts") == []
    store.append_ledger("acct", "signinattempts", _entries(60, 1))
    assert open_ledger_store().load_ledger("acct", "signinattempts") == _entries(60, 1)


def test_ledgers_are_per_account_and_stream(open_ledger_store: Factory) -> None:
    store = open_ledger_store()
    store.append_ledger("A", "auditevents", _entries(0, 2))
    store.append_ledger("A", "itemusages", _entries(10, 1))
    store.append_ledger("a/b", "auditevents", _entries(20, 1))
    store.rewrite_ledger("A", "itemusages", [])
    again = open_ledger_store()
    assert again.load_ledger("A", "auditevents") == _entries(0, 2)
    assert again.load_ledger("A", "itemusages") == []
    assert again.load_ledger("a/b", "auditevents") == _entries(20, 1)
    assert again.load_ledger("B", "auditevents") == []


def test_a_large_ledger_survives_a_rewrite(open_ledger_store: Factory) -> None:
    """A day of uuids at a busy account: a rewrite larger than one Append Block (4 MiB)."""
    big = [(f"{i:026d}", 1_772_366_400_000_000 + i) for i in range(120_000)]
    store = open_ledger_store()
    store.rewrite_ledger("acct", "auditevents", big)
    store.append_ledger("acct", "auditevents", _entries(0, 1))
    assert open_ledger_store().load_ledger("acct", "auditevents") == [*big, *_entries(0, 1)]


def test_a_ledger_line_cut_short_by_a_crash_is_dropped_and_appends_go_on(tmp_path: Path) -> None:
    """File only: an Append Block is atomic, so a Blob ledger never holds a torn line."""
    FileCheckpointStore(tmp_path).append_ledger("acct", "auditevents", _entries(0, 2))
    path = tmp_path / "ledger" / "acct" / "auditevents.jsonl"
    path.write_bytes(path.read_bytes() + b'{"u": ["uuid-000002"], "t": [17')  # the crash
    for load_first in (True, False):  # a restarted run loads first; a bare store may not
        store = FileCheckpointStore(tmp_path)
        if load_first:
            assert store.load_ledger("acct", "auditevents") == _entries(0, 2)
        store.append_ledger("acct", "auditevents", _entries(2 + load_first, 1))
    expected = [*_entries(0, 2), *_entries(3, 1), *_entries(2, 1)]
    assert FileCheckpointStore(tmp_path).load_ledger("acct", "auditevents") == expected


# --- failed writes keep the previous state (file and Blob) -------------------------------------


@contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """Nothing under `path` can be created, changed or removed, even by root (ext4's immutable
    attribute): a state directory whose writes fail."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make the state directory unwritable as root")
    made = subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
        pytest.skip(f"this file system has no immutable attribute ({made.stderr.strip()})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(path)], check=True)


@pytest.fixture(params=["file", "blob"])
def failing_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, Callable[[], AbstractContextManager[None]], Factory]]:
    """(store, outage, reopen): inside `outage()` every write fails; `reopen()` opens it afresh."""
    if request.param == "file":

        def reopen_file() -> Any:
            return FileCheckpointStore(tmp_path / "state")

        yield reopen_file(), lambda: _immutable(tmp_path / "state"), reopen_file
        return
    require_azurite()
    server = Azurite(tmp_path / "azurite", in_memory=False).start()  # its data survives a restart
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
    url = server.state_url()
    opened: list[ClaimingBlobStore] = []

    def reopen_blob() -> Any:
        opened.append(ClaimingBlobStore(url, replica=f"r{len(opened)}"))
        return opened[-1]

    @contextmanager
    def stopped() -> Iterator[None]:
        server.stop()
        try:
            yield
        finally:
            server.start()
            # Azurite forgets leases over a restart, as if they had run out (nobody else took
            # them): the renewal task of a run renews them, as here.
            for store in opened:
                for lease in list(store.store.state.owned.values()):
                    store.leases.renew(lease)

    try:
        yield reopen_blob(), stopped, reopen_blob
    finally:
        for store in opened:
            try:
                store.close()
            except StoreError:
                pass
        server.stop()


def test_failed_writes_are_one_line_errors_and_keep_the_previous_state(
    failing_store: tuple[Any, Callable[[], AbstractContextManager[None]], Factory],
) -> None:
    store, outage, reopen = failing_store
    cp = store.commit(Checkpoint("acct", "auditevents", cursor="c1", events_delivered=5))
    store.append_ledger("acct", "auditevents", _entries(0, 3))
    store.write_status(StreamStatus("acct", "auditevents", last_error="one", rows_stored=5))
    with outage():
        attempts = [
            lambda: store.commit(cp.advanced(cursor="c2", events_delivered=9)),
            lambda: store.append_ledger("acct", "auditevents", _entries(3, 2)),
            lambda: store.rewrite_ledger("acct", "auditevents", _entries(2, 1)),
            lambda: store.write_status(StreamStatus("acct", "auditevents", last_error="two")),
        ]
        for attempt in attempts:
            with pytest.raises(StoreError) as info:
                attempt()
            text = str(info.value)
            assert "\n" not in text
            assert "AccountKey" not in text
            assert "Traceback" not in text
    assert store.read("acct", "auditevents") == cp
    assert store.load_ledger("acct", "auditevents") == _entries(0, 3)
    assert [s.last_error for s in store.read_statuses()] == ["one"]
    # The same process carries on once storage is back, from exactly where it stood.
    later = store.commit(cp.advanced(cursor="c2"))
    assert later.version == 2
    store.append_ledger("acct", "auditevents", _entries(3, 1))
    again = reopen()
    assert again.read("acct", "auditevents") == later
    assert again.load_ledger("acct", "auditevents") == _entries(0, 4)
    with pytest.raises(CheckpointConflict):
        store.commit(cp.advanced(cursor="stale"))
