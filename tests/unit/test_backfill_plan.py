"""The backfill plan: slicing history, splitting, and surviving a round trip through the checkpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsentinel.backfill import LATE_WINDOW, MIN_SLICE, PAD, BackfillPlan, Slice, make_plan, split_point

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_plan_covers_history_without_gaps_or_overlaps() -> None:
    start = NOW - timedelta(days=7)
    plan = make_plan(start, NOW, slices=8)
    assert plan is not None
    assert plan.live_start == NOW - LATE_WINDOW
    assert len(plan.slices) == 8
    assert plan.slices[0].start == start
    assert plan.slices[-1].end == plan.live_start
    for before, after in zip(plan.slices, plan.slices[1:], strict=False):
        assert before.end == after.start
    # every moment of history is owned by exactly one slice
    probes = [start + timedelta(minutes=17 * i) for i in range(500)] + [s.start for s in plan.slices]
    for moment in probes:
        if moment < plan.live_start:
            assert sum(s.owns(moment) for s in plan.slices) == 1


def test_short_history_needs_no_plan() -> None:
    assert make_plan(NOW - LATE_WINDOW - MIN_SLICE / 2, NOW, slices=8) is None
    assert make_plan(NOW - timedelta(minutes=10), NOW, slices=8) is None


def test_small_range_gets_fewer_slices_than_workers() -> None:
    plan = make_plan(NOW - LATE_WINDOW - timedelta(minutes=90), NOW, slices=8)
    assert plan is not None
    assert len(plan.slices) == 3


def test_slice_request_is_padded_reset_cursor() -> None:
    s = Slice(0, NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    body = s.request()
    assert body == {
        "limit": 1000,
        "start_time": (s.start - PAD).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end_time": (s.end + PAD).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_split_hands_the_rest_to_a_new_slice() -> None:
    plan = make_plan(NOW - timedelta(days=1), NOW, slices=2)
    assert plan is not None
    first = plan.slices[0]
    busy = Slice(first.id, first.start, first.end, cursor="c", progress=first.start + timedelta(hours=1))
    plan = plan.with_slice(busy)
    at = split_point(busy)
    assert at is not None
    assert busy.progress is not None and busy.progress < at < busy.end
    split, new = plan.split(busy.id, at)
    assert split.get(busy.id).end == at
    assert (new.start, new.end, new.cursor) == (at, first.end, None)
    assert new.id not in {s.id for s in plan.slices}
    with pytest.raises(ValueError, match="outside"):
        split.split(busy.id, first.end + timedelta(hours=1))


def test_nearly_finished_slice_is_not_split() -> None:
    s = Slice(
        0, NOW - timedelta(hours=5), NOW - timedelta(hours=1), progress=NOW - timedelta(hours=1, minutes=40)
    )
    assert split_point(s) is None


def test_plan_round_trips_through_the_checkpoint() -> None:
    plan = make_plan(NOW - timedelta(days=3), NOW, slices=4)
    assert plan is not None
    plan = plan.with_slice(
        Slice(1, plan.slices[1].start, plan.slices[1].end, "cur", plan.slices[1].start, True)
    )
    again = BackfillPlan.from_dict(plan.to_dict())
    assert again == plan
    assert not again.finished
    assert [s.id for s in again.pending()] == [0, 2, 3]


def test_unknown_plan_version_is_refused() -> None:
    plan = make_plan(NOW - timedelta(days=3), NOW, slices=2)
    assert plan is not None
    data = plan.to_dict() | {"version": 99}
    with pytest.raises(ValueError, match="version"):
        BackfillPlan.from_dict(data)
