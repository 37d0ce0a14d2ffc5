"""The pure pieces without sockets: timestamps, cursor codec, store paging, and the app core."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.simulator.simhelp import T0

from opsentinel.simulator import Request, SimulatorApp, SimulatorConfig
from opsentinel.simulator.cursors import CursorCodec, CursorState, InvalidCursor, account_tag
from opsentinel.simulator.rfc3339 import NS, format_millis, format_nanos, format_seconds, parse_ns, to_ns
from opsentinel.simulator.store import StreamLog


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),
        ("2021-03-01T16:32:50-03:00", "2021-03-01T19:32:50Z"),
        ("2024-12-02T11:54:21.24645983Z", "2024-12-02T11:54:21.24645983Z"),
        ("2024-12-02T11:54:21.000000001+00:00", "2024-12-02T11:54:21.000000001Z"),
        ("2024-12-02t11:54:21.5z", "2024-12-02T11:54:21.5Z"),
        ("2024-12-02T23:30:00.100+05:30", "2024-12-02T18:00:00.1Z"),
    ],
)
def test_rfc3339_parsing_is_exact_to_the_nanosecond(text: str, expected: str) -> None:
    assert format_nanos(parse_ns(text)) == expected


@given(st.integers(min_value=0, max_value=4_000_000_000 * NS))
def test_formats_round_trip_at_their_precision(ns: int) -> None:
    assert parse_ns(format_nanos(ns)) == ns
    assert parse_ns(format_millis(ns)) == ns - ns % 1_000_000
    assert parse_ns(format_seconds(ns)) == ns - ns % NS
    assert format_nanos(ns) == format_nanos(to_ns(datetime.fromtimestamp(ns // NS, UTC)) + ns % NS)


def test_cursor_round_trip_and_rejections() -> None:
    epoch = [0]
    codec = CursorCodec(b"secret", epoch=lambda: epoch[0])
    state = CursorState("itemusages", 123_456_789, 250, 5 * NS, None, account_tag("ACCOUNT"))
    text = codec.encode(state)
    assert codec.decode(text) == state
    bounded = CursorState("auditevents", 0, 1, 0, 99 * NS, account_tag("X"))
    assert codec.decode(codec.encode(bounded)) == bounded
    for bad in ("", "!!!!", text[:-1], text + "A", text.replace(text[3], "Z" if text[3] != "Z" else "Y", 1)):
        with pytest.raises(InvalidCursor):
            codec.decode(bad)
    with pytest.raises(InvalidCursor):
        CursorCodec(b"other").decode(text)
    epoch[0] = 1
    with pytest.raises(InvalidCursor):
        codec.decode(text)


def _log(count: int = 1000, *, stream: str = "signinattempts") -> StreamLog:
    return StreamLog(
        stream, seed=3, count=count, start_ns=0, end_ns=3600 * NS, trickle_per_minute=0, clock=lambda: 0
    )


def test_history_timestamps_never_decrease_and_lookups_agree() -> None:
    log = _log(5000)
    stamps = [log.history_ts(i) for i in range(5000)]
    assert stamps == sorted(stamps)
    assert all(ts % NS == 0 for ts in stamps)  # sign-ins: whole seconds
    for probe in (0, 1, stamps[700], stamps[700] + 1, stamps[-1], 3600 * NS):
        assert log.first_at_or_after(probe) == sum(1 for ts in stamps if ts < probe)
        assert log.first_after(probe) == sum(1 for ts in stamps if ts <= probe)


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=3600))
def test_paging_visits_each_windowed_event_once(want: int, start_s: int) -> None:
    log = _log(300)
    start = start_s * NS
    expected = [i for i in range(300) if log.history_ts(i) >= start]
    seen: list[int] = []
    position = 0
    for _ in range(400):
        page = log.page(position, start, None, want)
        seen += [seq for seq, _ in page.events]
        assert len(page.events) <= want
        if not page.has_more:
            break
        position = page.next_position
    assert seen == expected


def test_the_app_core_answers_without_sockets() -> None:
    app = SimulatorApp(SimulatorConfig(events=50, now=T0, clock=lambda: to_ns(T0)))
    headers = {"authorization": f"Bearer {app.issue_token()}"}
    body = orjson.dumps({"start_time": "2000-01-01T00:00:00Z", "limit": 1000})
    response = app.handle(Request("POST", "/api/v2/itemusages", headers, body))
    assert response.status == 200
    assert ("Content-Type", "application/json; charset=utf-8") in response.headers
    assert len(orjson.loads(response.body)["items"]) == 50
    assert app.handle(Request("GET", "/api/v2/itemusages?x=1", headers)).status == 405
    assert app.handle(Request("POST", "/api/v2/itemusages", {}, body)).status == 401
