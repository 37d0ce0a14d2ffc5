"""A 200 body becomes a Page: strict envelope, lenient items, bad items rejected but never fatal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from opsentinel.source.page import MalformedResponse, parse_page

REQUEST = {"cursor": "c0"}


def parse(body: Any) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_page("auditevents", raw, REQUEST)


def test_events_are_delivered_untouched(page_json: Callable[..., Any]) -> None:
    events = [
        {
            "uuid": "A1",
            "timestamp": "2024-12-02T11:54:21.24645983Z",
            "action": "some-new-action",  # unknown enum value
            "brand_new_field": {"nested": [1, 2]},
            "client": {"ip": "10.0.0.1"},  # V1 doc typo
            "location": None,
            "aux_id": None,
        },
        {"uuid": "A2", "timestamp": "2024-12-02T08:55:00-03:00"},
    ]
    page = parse(page_json(events, cursor="c1", has_more=True))
    assert page.events == events
    assert page.rejected == []
    assert page.cursor == "c1"
    assert page.has_more is True
    assert page.stream == "auditevents"
    assert page.request == REQUEST
    # 08:55-03:00 is 11:55Z: newer than 11:54:21Z despite sorting lower as text.
    assert page.newest_timestamp == datetime(2024, 12, 2, 11, 55, tzinfo=UTC)
    assert page.oldest_timestamp == datetime(2024, 12, 2, 11, 54, 21, 246459, tzinfo=UTC)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-18T12:00:00Z",
        "2026-11-18T12:00:00.1Z",
        "2026-11-18T12:00:00.123456789Z",
        "2026-11-18T12:00:00+05:30",
        "2026-11-18T12:00:00-00:00",
        "2026-11-18t12:00:00z",
    ],
)
def test_every_rfc3339_variant_is_accepted(page_json: Callable[..., Any], stamp: str) -> None:
    page = parse(page_json([{"uuid": "U", "timestamp": stamp}]))
    assert len(page.events) == 1
    assert page.newest_timestamp is not None
    assert page.newest_timestamp.tzinfo is not None


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("just a string", "not an object"),
        ([1, 2], "not an object"),
        (None, "not an object"),
        ({"timestamp": "2026-11-18T12:00:00Z"}, "uuid"),
        ({"uuid": 42, "timestamp": "2026-11-18T12:00:00Z"}, "uuid"),
        ({"uuid": "", "timestamp": "2026-11-18T12:00:00Z"}, "uuid"),
        ({"uuid": "U"}, "timestamp"),
        ({"uuid": "U", "timestamp": None}, "timestamp"),
        ({"uuid": "U", "timestamp": 1763467200}, "timestamp"),
        ({"uuid": "U", "timestamp": "2026-11-18T12:00:00"}, "RFC 3339"),  # no offset: ambiguous
        ({"uuid": "U", "timestamp": "2026-11-18"}, "RFC 3339"),
        ({"uuid": "U", "timestamp": "2026-13-18T12:00:00Z"}, "RFC 3339"),
        ({"uuid": "U", "timestamp": "2026-11-18T12:00:00.1234567890Z"}, "RFC 3339"),
        ({"uuid": "U", "timestamp": "yesterday"}, "RFC 3339"),
    ],
)
def test_a_bad_item_is_rejected_and_the_rest_delivered(
    page_json: Callable[..., Any], make_event: Callable[..., Any], item: Any, reason: str
) -> None:
    good = [make_event("G1"), make_event("G2", "2026-11-18T12:00:01Z")]
    page = parse(page_json([good[0], item, good[1]], cursor="c9"))
    assert page.events == good
    assert page.cursor == "c9"
    assert len(page.rejected) == 1
    rejection = page.rejected[0]
    assert rejection.index == 1
    assert reason in rejection.reason
    assert rejection.raw_excerpt


def test_rejection_excerpt_is_short_and_scrubbed(page_json: Callable[..., Any], secret: str) -> None:
    item = {"uuid": 1, "note": secret, "padding": "x" * 1000}
    page = parse(page_json([item]))
    excerpt = page.rejected[0].raw_excerpt
    assert len(excerpt) <= 200
    assert secret not in excerpt
    assert page.newest_timestamp is None


def test_empty_page(page_json: Callable[..., Any]) -> None:
    page = parse(page_json([], cursor="same", has_more=False))
    assert page.events == []
    assert page.newest_timestamp is None
    assert page.oldest_timestamp is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"cursor": "c1", "has_more": false, "items": [{"uuid": "A", "timest',  # truncated
        b"[]",
        b"null",
        {"has_more": False, "items": []},
        {"cursor": "", "has_more": False, "items": []},
        {"cursor": 5, "has_more": False, "items": []},
        {"cursor": "c", "items": []},
        {"cursor": "c", "has_more": "true", "items": []},
        {"cursor": "c", "has_more": 1, "items": []},
        {"cursor": "c", "has_more": False},
        {"cursor": "c", "has_more": False, "items": None},
        {"cursor": "c", "has_more": False, "items": {"0": {}}},
    ],
)
def test_malformed_envelope(body: Any) -> None:
    with pytest.raises(MalformedResponse):
        parse(body)
