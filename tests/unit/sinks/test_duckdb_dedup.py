"""DuckDBStore never stores an event twice, whichever way it comes back, and writes that arrive
together share a transaction without one writer's conflict failing another's rows."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsentinel.errors import CheckpointConflict
from opsentinel.schema import TABLE_NAME
from opsentinel.sinks.base import Batch
from opsentinel.sinks.duckdb import DuckDBStore, _Coverage
from opsentinel.state import Checkpoint

NOW = datetime(2026, 5, 1, tzinfo=UTC)
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def event(n: int, *, second: int | None = None, stream: str = "auditevents") -> dict[str, Any]:
    """Event `n`: uuid from n, timestamp n ms after BASE (or whole `second`s, as sign-ins are)."""
    moment = BASE + (timedelta(seconds=second) if second is not None else timedelta(milliseconds=n))
    return {
        "uuid": f"{stream[:2].upper()}{n:024d}",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "action": "x",
    }


def rows(db: Path) -> tuple[int, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute(f'SELECT count(*), count(DISTINCT (log_source, uuid_s)) FROM "{TABLE_NAME}"')
        total, distinct = found.fetchall()[0]
    return int(total), int(distinct)


def test_coverage_meets_exactly_the_stored_ranges() -> None:
    cov = _Coverage()
    assert cov.met(0, 100) is None
    cov.add(10, 20)
    cov.add(40, 50)
    assert cov.met(0, 9) is None
    assert cov.met(21, 39) is None
    assert cov.met(20, 30) == (20, 20)  # a shared instant counts
    assert cov.met(15, 45) == (15, 45)
    assert cov.met(0, 100) == (10, 50)
    cov.add(18, 42)  # bridges both
    assert cov.spans == [(10, 50)]
    cov.add(60, 60)
    assert cov.spans == [(10, 50), (60, 60)]
    assert cov.met(55, 59) is None


def test_many_spans_merge_into_wider_ones_never_narrower() -> None:
    cov = _Coverage()
    for k in range(_Coverage.LIMIT + 1):
        cov.add(10 * k, 10 * k + 1)
    assert len(cov.spans) <= _Coverage.LIMIT
    for k in range(_Coverage.LIMIT + 1):
        assert cov.met(10 * k, 10 * k) is not None


def test_repeats_of_any_age_and_shared_boundary_instants_are_dropped(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    store = DuckDBStore(db)
    cp = Checkpoint("a", "signinattempts")
    # pages whose boundaries share a second, as whole-second sign-in times do
    cp = store.write(
        Batch("signinattempts", [event(i, second=i // 3) for i in range(0, 30)], NOW), cp
    ).checkpoint
    cp = store.write(
        Batch("signinattempts", [event(i, second=i // 3) for i in range(29, 60)], NOW), cp
    ).checkpoint
    assert (store.last_inserted, store.last_duplicates) == (30, 1)
    # a restarted slice re-delivers old events among new ones, out of order
    again = [event(5, second=1), event(100, second=50), event(45, second=15)]
    cp = store.write(Batch("signinattempts", again, NOW), cp).checkpoint
    assert (store.last_inserted, store.last_duplicates) == (1, 2)
    assert cp is not None
    store.close()
    assert rows(db) == (61, 61)


def test_a_stream_written_by_another_store_meanwhile_is_compared_with_what_it_wrote(tmp_path: Path) -> None:
    """Another process between this one's bursts: its checkpoint version tells, and its rows count."""
    db = tmp_path / "s.duckdb"
    mine, other = DuckDBStore(db), DuckDBStore(db)
    cp = mine.write(
        Batch("auditevents", [event(i) for i in range(10)], NOW), Checkpoint("a", "auditevents")
    ).checkpoint
    mine.close()
    cp = other.write(Batch("auditevents", [event(i) for i in range(10, 20)], NOW), cp).checkpoint
    other.close()
    # this store continues from the other's checkpoint and is sent the other's events again
    assert cp is not None
    mine.write(Batch("auditevents", [event(i) for i in range(15, 25)], NOW), cp)
    assert (mine.last_inserted, mine.last_duplicates) == (5, 5)
    mine.close()
    assert rows(db) == (25, 25)


def test_a_fresh_store_on_an_existing_file_compares_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    first = DuckDBStore(db)
    cp = first.write(
        Batch("itemusages", [event(i) for i in range(50)], NOW), Checkpoint("a", "itemusages")
    ).checkpoint
    first.close()
    second = DuckDBStore(db)  # a restart: the cursor was rejected, the window is read again
    second.write(Batch("itemusages", [event(i) for i in range(40, 60)], NOW), cp)
    assert (second.last_inserted, second.last_duplicates) == (10, 10)
    second.close()
    assert rows(db) == (60, 60)


def test_concurrent_writes_share_commits_and_a_conflict_fails_only_its_own(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    store = DuckDBStore(db)
    streams = ["auditevents", "signinattempts", "itemusages"]
    stale = store.write(
        Batch("itemusages", [event(0, stream="itemusages")], NOW), Checkpoint("a", "itemusages")
    ).checkpoint
    assert stale is not None
    store.write(Batch("itemusages", [], NOW), stale)  # `stale` is now one version behind
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(streams) * 2)

    def run(stream: str, offset: int) -> None:
        cp = Checkpoint("a" if offset == 0 else "b", stream)
        if stream == "itemusages" and offset == 0:
            cp = stale
        barrier.wait()
        try:
            for k in range(20):
                events = [event(1 + offset + 10 * k + i, stream=stream) for i in range(10)]
                written = store.write(Batch(stream, events, NOW), cp).checkpoint
                assert written is not None
                cp = written
        except CheckpointConflict as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s, o)) for s in streams for o in (0, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1 and "itemusages (account a)" in str(errors[0])
    store.close()
    # 5 writers x 200 events, plus the first itemusages event
    assert rows(db) == (1001, 1001)
    assert store.list()[0].version == 20


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pages=st.lists(
        st.tuples(
            st.sampled_from(["auditevents", "signinattempts"]),
            st.lists(st.integers(min_value=0, max_value=300), min_size=0, max_size=40),
        ),
        min_size=1,
        max_size=12,
    ),
    restart_at=st.integers(min_value=0, max_value=12),
)
def test_whatever_comes_again_is_stored_once(
    tmp_path: Path, pages: list[tuple[str, list[int]]], restart_at: int
) -> None:
    db = tmp_path / f"p{uuid.uuid4().hex}.duckdb"  # tmp_path is shared by the examples
    store = DuckDBStore(db)
    cps: dict[str, Checkpoint | None] = {}
    seen: dict[str, set[int]] = {}
    for k, (stream, numbers) in enumerate(pages):
        if k == restart_at:  # a new process on the same file
            store.close()
            store = DuckDBStore(db)
        events = [event(n, second=n // 7, stream=stream) for n in numbers]
        cp = cps.get(stream) or Checkpoint("a", stream)
        cps[stream] = store.write(Batch(stream, events, NOW), cp).checkpoint
        new = set(numbers) - seen.setdefault(stream, set())
        assert store.last_inserted == len(new)
        assert store.last_duplicates == len(numbers) - len(new)
        seen[stream] |= new
    store.close()
    total = sum(len(v) for v in seen.values())
    assert rows(db) == (total, total)


def test_health_rows_are_compared_too(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    store = DuckDBStore(db)
    health = {"uuid": "h1", "timestamp": "2026-05-01T08:30:00Z", "category": "healthy"}
    store.write(Batch("healthevents", [health], NOW), None)
    store.write(Batch("healthevents", [health], NOW), None)
    store.close()
    assert rows(db) == (1, 1)


@pytest.mark.parametrize("n", [0, 1])
def test_an_empty_or_tiny_batch_commits_its_checkpoint(tmp_path: Path, n: int) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    cp = store.write(
        Batch("auditevents", [event(i) for i in range(n)], NOW), Checkpoint("a", "auditevents")
    ).checkpoint
    assert cp is not None and cp.version == 1
    assert store.read("a", "auditevents") == cp
    store.close()


def test_merged_pages_are_checked_each_on_its_own_range(tmp_path: Path) -> None:
    """Pages of two far-apart slices in one write: only the one that meets stored rows is compared,
    and a repeat across the merged pages is dropped too."""
    db = tmp_path / "s.duckdb"
    store = DuckDBStore(db)
    cp = store.write(
        Batch("auditevents", [event(i) for i in range(100, 110)], NOW), Checkpoint("a", "auditevents")
    ).checkpoint
    early = store.prepare(Batch("auditevents", [event(i) for i in range(0, 10)], NOW))
    late = store.prepare(Batch("auditevents", [event(i) for i in range(105, 120)] + [event(3)], NOW))
    merged = store.merge([early, late])
    assert len(merged.events) == 26
    assert cp is not None
    store.write(merged, cp)
    assert (store.last_inserted, store.last_duplicates) == (20, 6)
    store.close()
    assert rows(db) == (30, 30)
