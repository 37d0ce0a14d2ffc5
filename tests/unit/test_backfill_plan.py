"""The backfill plan: slicing history, sizing it from a probe, and surviving a round trip through the
checkpoint (including plans written by 0.1, whose slices may have been split)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from opsentinel.backfill import (
    MIN_SLICE,
    PAD,
    SLICES_PER_WORKER,
    BackfillPlan,
    Slice,
    estimate_pages,
    make_plan,
    needs_plan,
    slice_count,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIVE = NOW - timedelta(hours=24)


def test_plan_covers_history_without_gaps_or_overlaps() -> None:
    start = LIVE - timedelta(days=7)
    plan = make_plan(start, LIVE, 8)
    assert plan.live_start == LIVE
    assert len(plan.slices) == 8
    by_start = sorted(plan.slices, key=lambda s: s.start)
    assert by_start[0].start == start
    assert by_start[-1].end == LIVE
    for before, after in itertools.pairwise(by_start):
        assert before.end == after.start
    probes = [start + timedelta(minutes=17 * i) for i in range(500)] + [s.start for s in plan.slices]
    for moment in probes:
        if moment < LIVE:
            assert sum(s.owns(moment) for s in plan.slices) == 1


def test_newest_history_is_read_first() -> None:
    plan = make_plan(LIVE - timedelta(days=2), LIVE, 4)
    assert [s.end for s in plan.slices] == sorted((s.end for s in plan.slices), reverse=True)


def test_short_history_needs_no_plan() -> None:
    assert not needs_plan(LIVE - MIN_SLICE / 2, LIVE, 8)
    assert not needs_plan(LIVE - timedelta(days=3), LIVE, 0)
    assert needs_plan(LIVE - MIN_SLICE, LIVE, 1)


def test_slice_count_follows_density_span_and_workers() -> None:
    start = LIVE - timedelta(days=7)
    # a probe page covering 1% of the span: about 100 pages, so about 50 slices, capped per worker
    assert slice_count(start, LIVE, 8, 100.0) == 8 * SLICES_PER_WORKER
    # at least one slice per worker, whatever the probe suggests
    assert slice_count(start, LIVE, 8, 6.0) == 8
    assert slice_count(start, LIVE, 2, 6.0) == 3
    assert slice_count(start, LIVE, 1, 1.0) == 2
    # never shorter than MIN_SLICE
    assert slice_count(LIVE - timedelta(minutes=90), LIVE, 8, 1000.0) == 3


def test_estimate_pages_from_the_probe_page() -> None:
    start = LIVE - timedelta(days=10)
    assert estimate_pages(start, LIVE, [start + timedelta(days=1)]) == pytest.approx(10.0)
    assert estimate_pages(start, LIVE, []) == 1.0
    assert estimate_pages(start, LIVE, [start]) > 100  # one instant fills a page: dense


def test_slice_request_is_padded_and_never_older_than_the_floor() -> None:
    s = Slice(0, NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    assert s.request() == {
        "limit": 1000,
        "start_time": (s.start - PAD).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end_time": (s.end + PAD).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    floor = s.start
    assert s.window(floor) == (floor, s.end + PAD)
    assert not s.expired(floor)
    assert s.expired(s.end + PAD)


def test_a_slice_that_has_not_started_can_be_divided() -> None:
    plan = make_plan(LIVE - timedelta(days=2), LIVE, 2)
    dense = plan.slices[0]
    divided, parts = plan.divided(dense.id, 3)
    assert {s.id for s in parts}.isdisjoint(s.id for s in plan.slices)
    assert min(p.start for p in parts) == dense.start and max(p.end for p in parts) == dense.end
    assert dense.id not in {s.id for s in divided.slices}
    started = plan.with_slice(replace(plan.slices[1], cursor="c"))
    with pytest.raises(ValueError, match="started"):
        started.divided(plan.slices[1].id, 2)


def test_plan_round_trips_through_the_checkpoint() -> None:
    plan = make_plan(LIVE - timedelta(days=3), LIVE, 4)
    one = plan.get(1)
    plan = plan.with_slice(Slice(1, one.start, one.end, "cur", one.start, True, read=1234, last_uuid="U"))
    again = BackfillPlan.from_dict(plan.to_dict())
    assert again == plan
    assert not again.finished
    assert sorted(s.id for s in again.pending()) == [0, 2, 3]


def test_a_plan_written_by_0_1_is_still_read() -> None:
    old = {
        "version": 1,
        "live_start": "2026-11-25T11:00:00Z",
        "next_id": 3,
        "slices": [
            {"id": 0, "start": "2026-11-24T00:00:00Z", "end": "2026-11-24T12:00:00Z", "cursor": "c0",
             "progress": "2026-11-24T06:00:00Z", "done": False},
            {"id": 2, "start": "2026-11-24T12:00:00Z", "end": "2026-11-25T11:00:00Z", "cursor": None,
             "progress": None, "done": False},
        ],
    }  # fmt: skip
    plan = BackfillPlan.from_dict(old)
    assert plan.live_start == datetime(2026, 11, 25, 11, tzinfo=UTC)
    assert [(s.id, s.cursor, s.read) for s in plan.slices] == [(0, "c0", 0), (2, None, 0)]


def test_unknown_plan_version_is_refused() -> None:
    data = make_plan(LIVE - timedelta(days=3), LIVE, 2).to_dict() | {"version": 99}
    with pytest.raises(ValueError, match="version"):
        BackfillPlan.from_dict(data)
