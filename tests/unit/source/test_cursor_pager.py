"""CursorPager as a state machine, without HTTP: ResetCursor first, then only the cursor, loop guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from opsentinel.errors import FatalError
from opsentinel.source.page import Page
from opsentinel.source.paging import CursorPager, dedupe_after_reset

START = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


def page(cursor: str, has_more: bool, n: int = 1, request: dict[str, Any] | None = None) -> Page:
    events = [{"uuid": f"E{i}", "timestamp": "2026-11-18T12:00:00Z"} for i in range(n)]
    return Page("auditevents", events, cursor, has_more, request or {})


def test_first_request_is_a_reset_then_only_the_cursor_forever() -> None:
    pager = CursorPager.reset(START)
    assert pager.next_request() == {"limit": 1000, "start_time": "2026-11-18T12:00:00Z"}
    pager.update(page("c1", has_more=True))
    assert pager.next_request() == {"cursor": "c1"}
    pager.update(page("c2", has_more=False))
    assert pager.drained
    # Next poll, and every one after it: the cursor alone (limit and window travel inside it).
    for _ in range(3):
        assert pager.next_request() == {"cursor": "c2"}
        pager.update(page("c2", has_more=False, n=0))
    assert pager.cursor == "c2"


def test_reset_with_end_time_limit_and_other_zone() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    pager = CursorPager.reset(
        datetime(2026, 11, 18, 17, 30, 0, 250000, tzinfo=ist), START + timedelta(days=1), limit=250
    )
    assert pager.next_request() == {
        "limit": 250,
        "start_time": "2026-11-18T12:00:00.250000Z",
        "end_time": "2026-11-19T12:00:00Z",
    }


def test_resume_starts_from_the_stored_cursor() -> None:
    pager = CursorPager.resume("stored")
    assert not pager.resetting
    assert pager.next_request() == {"cursor": "stored"}


def test_a_failed_request_is_asked_again_unchanged() -> None:
    pager = CursorPager.reset(START)
    first = pager.next_request()
    assert pager.next_request() == first  # no update(): the request failed
    pager.update(page("c1", has_more=True))
    assert pager.next_request() == pager.next_request() == {"cursor": "c1"}


def test_empty_pages_with_has_more_are_legal() -> None:
    pager = CursorPager.resume("c1")
    pager.update(page("c1", has_more=True, n=0))
    pager.update(page("c1", has_more=True, n=0))
    assert not pager.drained
    assert pager.next_request() == {"cursor": "c1"}
    pager.update(page("c2", has_more=False))
    assert pager.drained


def test_empty_pages_with_a_moving_cursor_never_trip_the_guard() -> None:
    pager = CursorPager.resume("c0")
    for i in range(1, 20):
        pager.update(page(f"c{i}", has_more=True, n=0))
    assert pager.next_request() == {"cursor": "c19"}


def test_the_same_cursor_with_has_more_again_and_again_is_a_loop() -> None:
    pager = CursorPager.resume("c1", max_stalled_pages=3)
    for _ in range(3):
        pager.update(page("c1", has_more=True, n=0))
    with pytest.raises(FatalError, match="pagination loop detected on auditevents"):
        pager.update(page("c1", has_more=True, n=0))


def test_progress_resets_the_loop_guard() -> None:
    pager = CursorPager.resume("c1", max_stalled_pages=2)
    pager.update(page("c1", has_more=True, n=0))
    pager.update(page("c1", has_more=True, n=0))
    pager.update(page("c2", has_more=True))
    pager.update(page("c2", has_more=True, n=0))
    pager.update(page("c2", has_more=True, n=0))
    with pytest.raises(FatalError):
        pager.update(page("c2", has_more=True, n=0))


def test_same_cursor_when_drained_is_normal_polling() -> None:
    pager = CursorPager.resume("c1", max_stalled_pages=1)
    for _ in range(10):
        pager.update(page("c1", has_more=False, n=0))
    assert pager.drained


def test_reset_from_after_a_rejected_cursor() -> None:
    pager = CursorPager.resume("stale")
    newest = datetime(2026, 11, 18, 12, 34, 56, 789000, tzinfo=UTC)
    pager.reset_from(newest)
    assert pager.resetting
    assert pager.next_request() == {"limit": 1000, "start_time": "2026-11-18T12:34:56.789000Z"}
    pager.update(page("fresh", has_more=False))
    assert pager.next_request() == {"cursor": "fresh"}


def test_dedupe_after_reset_drops_events_already_stored() -> None:
    events = [{"uuid": "A"}, {"uuid": "B"}, {"uuid": "C"}]
    assert dedupe_after_reset(events, {"A", "C"}) == [{"uuid": "B"}]
    assert dedupe_after_reset(events, []) == events


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"cursor": "c", "start_time": START},
        {"cursor": ""},
        {"cursor": "c", "limit": 10},
        {"start_time": START, "limit": 0},
        {"start_time": START, "limit": 1001},
        {"start_time": datetime(2026, 11, 18, 12, 0)},  # naive: zone unknown
        {"start_time": START, "end_time": START},
    ],
)
def test_invalid_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CursorPager(**kwargs)
