"""The contract every CheckpointStore (and StatusStore) passes: DuckDBStore and FileCheckpointStore."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsentinel.checkpoints_file import FileCheckpointStore
from opsentinel.errors import CheckpointConflict
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.state import Checkpoint, CheckpointStore, StatusStore, StreamStatus

Factory = Callable[[], Any]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["duckdb", "file"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory: each call opens the same store afresh (as a restarted process would)."""
    opened: list[Any] = []

    def factory() -> Any:
        store: Any = (
            DuckDBStore(tmp_path / "store.duckdb")
            if request.param == "duckdb"
            else FileCheckpointStore(tmp_path / "state")
        )
        opened.append(store)
        return store

    yield factory
    for store in opened:
        if isinstance(store, DuckDBStore):
            store.close()


def test_implements_the_protocols(open_store: Factory) -> None:
    store = open_store()
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
    if isinstance(store, DuckDBStore):
        store.close()
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
