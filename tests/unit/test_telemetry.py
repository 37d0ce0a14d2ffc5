"""Telemetry: typed events become log lines and the health rows the Log Ingestion Failure rule watches."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from opsentinel import __version__
from opsentinel.telemetry import (
    EventsRejected,
    PageDelivered,
    StreamDrained,
    StreamFailed,
    Telemetry,
    new_event_uuid,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NEWEST = datetime(2026, 11, 25, 11, 59, 30, 250000, tzinfo=UTC)
DETAILS = {
    "stream",
    "last_success",
    "last_error",
    "last_error_at",
    "lag_seconds",
    "newest_event",
    "events_delivered",
    "events_duplicate",
    "events_dead_lettered",
    "events_rejected",
    "backfilling",
    "connector",
    "replica",
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def telemetry(clock: Clock) -> Telemetry:
    return Telemetry(account="ACCOUNTUUID", clock=clock)


def _drained(t: Telemetry, stream: str, events: int = 0) -> None:
    t.stream_drained(StreamDrained(stream, events, 1, None, None))


def _records(t: Telemetry) -> dict[str, dict[str, object]]:
    return {str(r["type"]): r for r in t.health_records()}


def test_no_health_rows_before_any_stream_reported(telemetry: Telemetry) -> None:
    assert telemetry.health_records() == []


def test_a_health_row_per_stream_in_the_documented_shape(telemetry: Telemetry, clock: Clock) -> None:
    telemetry.page_delivered(PageDelivered("auditevents", 40, 2, NEWEST, False, 40))
    _drained(telemetry, "auditevents", 40)
    clock.advance(90)

    [row] = telemetry.health_records()

    assert row["category"] == "healthy"
    assert row["type"] == "auditevents"
    assert row["account_uuid"] == "ACCOUNTUUID"
    assert row["timestamp"] == "2026-11-25T12:01:30Z"
    assert re.fullmatch(r"[A-Z2-7]{26}", str(row["uuid"]))
    details = row["details"]
    assert isinstance(details, dict)
    assert set(details) == DETAILS
    assert details["stream"] == "auditevents"
    assert details["last_success"] == "2026-11-25T12:00:00Z"
    assert details["lag_seconds"] == 90
    assert details["newest_event"] == "2026-11-25T11:59:30.250000Z"
    assert details["events_delivered"] == 40
    assert details["events_rejected"] == 2
    assert details["last_error"] is None
    assert details["connector"] == f"op-sentinel/{__version__}"


def test_each_health_row_has_a_fresh_uuid(telemetry: Telemetry) -> None:
    _drained(telemetry, "auditevents")
    first = telemetry.health_records()[0]["uuid"]
    second = telemetry.health_records()[0]["uuid"]
    assert first != second
    assert len({new_event_uuid() for _ in range(100)}) == 100


def test_categories_follow_the_stream_failing_and_recovering(telemetry: Telemetry, clock: Clock) -> None:
    telemetry.stream_failed(StreamFailed("itemusages", "the Events API answered 500", None))
    failing = _records(telemetry)["itemusages"]
    assert failing["category"] == "failing"
    details = failing["details"]
    assert isinstance(details, dict)
    assert details["last_error"] == "the Events API answered 500"
    assert details["last_error_at"] == "2026-11-25T12:00:00Z"
    assert details["last_success"] is None
    assert details["lag_seconds"] is None

    clock.advance(10)
    _drained(telemetry, "itemusages")
    healthy = _records(telemetry)["itemusages"]
    assert healthy["category"] == "healthy"
    details = healthy["details"]
    assert isinstance(details, dict)
    assert details["last_error"] == "the Events API answered 500"  # kept: status shows what happened


def test_an_empty_account_is_null(clock: Clock) -> None:
    t = Telemetry(clock=clock)
    _drained(t, "auditevents")
    assert t.health_records()[0]["account_uuid"] is None


def test_a_health_row_is_due_after_each_streams_first_poll(telemetry: Telemetry) -> None:
    assert telemetry.take_changed()  # at start-up
    assert not telemetry.take_changed()
    _drained(telemetry, "auditevents")
    assert telemetry.take_changed()  # starting -> healthy
    _drained(telemetry, "auditevents")
    assert not telemetry.take_changed()  # still healthy: the interval decides
    _drained(telemetry, "signinattempts")
    assert telemetry.take_changed()


def test_a_health_row_is_due_when_a_stream_turns_failing_or_healthy(telemetry: Telemetry) -> None:
    _drained(telemetry, "auditevents")
    telemetry.take_changed()
    telemetry.stream_failed(StreamFailed("auditevents", "boom", None))
    assert telemetry.take_changed()
    telemetry.stream_failed(StreamFailed("auditevents", "boom again", None))
    assert not telemetry.take_changed()
    _drained(telemetry, "auditevents")
    assert telemetry.take_changed()


def test_delivered_counts_add_up_and_the_newest_event_only_moves_forward(telemetry: Telemetry) -> None:
    later = NEWEST + timedelta(minutes=1)
    telemetry.page_delivered(PageDelivered("itemusages", 10, 0, later, True, 10))
    telemetry.page_delivered(PageDelivered("itemusages", 5, 1, NEWEST, False, 15))
    details = _records(telemetry)["itemusages"]["details"]
    assert isinstance(details, dict)
    assert details["events_delivered"] == 15
    assert details["events_rejected"] == 1
    assert details["newest_event"] == "2026-11-25T12:00:30.250000Z"


def test_log_lines(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="opsentinel")
    telemetry.page_delivered(PageDelivered("auditevents", 3, 0, NEWEST, True, 3))
    telemetry.stream_drained(StreamDrained("auditevents", 3, 1, NEWEST, NEWEST))
    telemetry.stream_failed(StreamFailed("itemusages", "answered 503", timedelta(seconds=20)))
    telemetry.events_rejected(EventsRejected("signinattempts", 2, "no timestamp"))

    by_level = {(r.levelno, r.getMessage()) for r in caplog.records}
    assert (
        logging.DEBUG,
        "page stream=auditevents events=3 duplicates=0 dead_lettered=0 rejected=0 "
        "newest=2026-11-25T11:59:30.250000Z has_more=true",
    ) in by_level
    assert (
        logging.INFO,
        "cycle stream=auditevents events=3 pages=1 "
        "span=2026-11-25T11:59:30.250000Z..2026-11-25T11:59:30.250000Z",
    ) in by_level
    assert (logging.WARNING, "stream=itemusages failed: answered 503 (retrying in 20s)") in by_level
    assert (
        logging.WARNING,
        "stream=signinattempts rejected 2 malformed event(s): no timestamp",
    ) in by_level
