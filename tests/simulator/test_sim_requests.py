"""Request bodies: every 400, ResetCursor defaults, limits and time windows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any

import httpx
import pytest
from tests.simulator.simhelp import OLD, T0, bearer, drain

from opsentinel.simulator import SimulatorServer
from opsentinel.simulator.rfc3339 import format_nanos, from_ns, parse_ns, to_ns

HOUR = timedelta(hours=1)


def iso(when: Any) -> str:
    return format_nanos(to_ns(when))


BAD_BODIES: list[tuple[str, bytes]] = [
    ("not-json", b"{limit: 5}"),
    ("truncated-json", b'{"limit": 5'),
    ("array", b"[]"),
    ("string", b'"hello"'),
    ("number", b"100"),
    ("limit-zero", b'{"limit": 0}'),
    ("limit-negative", b'{"limit": -1}'),
    ("limit-too-big", b'{"limit": 1001}'),
    ("limit-float", b'{"limit": 10.5}'),
    ("limit-float-integral", b'{"limit": 100.0}'),
    ("limit-string", b'{"limit": "100"}'),
    ("limit-bool", b'{"limit": true}'),
    ("limit-object", b'{"limit": {}}'),
    ("start-not-rfc3339", b'{"start_time": "yesterday"}'),
    ("start-no-offset", b'{"start_time": "2025-06-01T10:00:00"}'),
    ("start-space", b'{"start_time": "2025-06-01 10:00:00Z"}'),
    ("start-bad-date", b'{"start_time": "2025-02-30T10:00:00Z"}'),
    ("start-ten-digit-fraction", b'{"start_time": "2025-06-01T10:00:00.1234567890Z"}'),
    ("start-number", b'{"start_time": 1717236000}'),
    ("end-not-rfc3339", b'{"end_time": "now"}'),
    ("end-list", b'{"end_time": ["2025-06-01T10:00:00Z"]}'),
    ("start-after-end", b'{"start_time": "2025-06-01T11:00:00Z", "end_time": "2025-06-01T10:00:00Z"}'),
    ("cursor-number", b'{"cursor": 12345}'),
    ("cursor-garbage", b'{"cursor": "aGVsbG8hIGlzIGl0IG1lIHlvdSBhcmUgbG9va2luZyBmb3IK"}'),
    ("cursor-not-base64", b'{"cursor": "not a cursor!"}'),
]


@pytest.mark.parametrize(("name", "body"), BAD_BODIES, ids=[n for n, _ in BAD_BODIES])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_bad_bodies_get_400(api: httpx.Client, name: str, body: bytes, version: str) -> None:
    response = api.post(f"/api/{version}/signinattempts", content=body)
    assert response.status_code == 400, name
    payload = response.json()
    if version == "v1":
        assert payload["Error"]["Message"].startswith("Bad Request")
    else:
        assert payload["status"] == 400
        assert payload["message"].startswith("Bad Request")


def test_empty_object_is_a_valid_reset(api: httpx.Client) -> None:
    response = api.post("/api/v2/auditevents", json={})
    assert response.status_code == 200
    assert set(response.json()) == {"cursor", "has_more", "items"}


def test_missing_body_is_a_reset_by_default(api: httpx.Client) -> None:
    assert api.post("/api/v2/auditevents").status_code == 200


def test_missing_body_can_be_made_an_error(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(missing_body="error")
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        assert client.post("/api/v2/auditevents").status_code == 400
        assert client.post("/api/v2/auditevents", json={}).status_code == 200


def test_a_non_empty_cursor_wins_over_reset_fields(api: httpx.Client) -> None:
    first = api.post("/api/v2/itemusages", json={"limit": 2, "start_time": OLD}).json()
    mixed = api.post("/api/v2/itemusages", json={"cursor": first["cursor"], "limit": 5000, "start_time": "x"})
    assert mixed.status_code == 200
    assert len(mixed.json()["items"]) == 2  # the cursor's limit, the other keys ignored


def test_empty_or_null_cursor_means_reset(api: httpx.Client) -> None:
    for body in (
        {"cursor": "", "limit": 3, "start_time": OLD},
        {"cursor": None, "limit": 3, "start_time": OLD},
    ):
        page = api.post("/api/v2/itemusages", json=body).json()
        assert len(page["items"]) == 3


@pytest.fixture
def dense(make_sim: Callable[..., SimulatorServer]) -> SimulatorServer:
    """3000 events a stream over one day: about 125 an hour."""
    return make_sim(events=3000, days=1)


def test_default_limit_is_100_and_default_window_the_last_hour(dense: SimulatorServer) -> None:
    with httpx.Client(base_url=dense.base_url, headers=bearer(dense.token)) as client:
        first = client.post("/api/v2/auditevents", json={}).json()
        assert len(first["items"]) == 100
        assert first["has_more"] is True
        items, _ = drain(client, "/api/v2/auditevents", {})
    start, end = to_ns(T0 - HOUR), to_ns(T0)
    expected = [e["uuid"] for e in dense.events("auditevents") if start <= parse_ns(e["timestamp"]) <= end]
    assert 100 < len(expected) < 200
    assert [e["uuid"] for e in items] == expected


def test_limit_1000_is_the_largest_page(dense: SimulatorServer) -> None:
    with httpx.Client(base_url=dense.base_url, headers=bearer(dense.token)) as client:
        page = client.post("/api/v2/signinattempts", json={"limit": 1000, "start_time": OLD}).json()
        assert len(page["items"]) == 1000
        assert page["has_more"] is True
        assert (
            len(client.post("/api/v2/signinattempts", json={"limit": 1, "start_time": OLD}).json()["items"])
            == 1
        )


def test_start_time_defaults_to_one_hour_before_end_time(dense: SimulatorServer) -> None:
    end = T0 - timedelta(hours=5)
    with httpx.Client(base_url=dense.base_url, headers=bearer(dense.token)) as client:
        items, _ = drain(client, "/api/v2/itemusages", {"end_time": iso(end), "limit": 1000})
    lo, hi = to_ns(end - HOUR), to_ns(end)
    expected = [e["uuid"] for e in dense.events("itemusages") if lo <= parse_ns(e["timestamp"]) <= hi]
    assert expected
    assert [e["uuid"] for e in items] == expected


def test_window_bounds_are_inclusive_and_any_rfc3339_form_works(dense: SimulatorServer) -> None:
    events = list(dense.events("signinattempts"))
    target = events[1500]
    ts = parse_ns(target["timestamp"])
    # The same instant written with a -03:00 offset and a 9-digit fraction.
    local = from_ns(ts).astimezone(timezone(timedelta(hours=-3)))
    shifted = local.strftime("%Y-%m-%dT%H:%M:%S") + ".000000000-03:00"
    body = {"start_time": shifted, "end_time": target["timestamp"], "limit": 1000}
    with httpx.Client(base_url=dense.base_url, headers=bearer(dense.token)) as client:
        page = client.post("/api/v2/signinattempts", json=body).json()
    same_second = [e["uuid"] for e in events if parse_ns(e["timestamp"]) == ts]
    assert [e["uuid"] for e in page["items"]] == same_second
    assert target["uuid"] in same_second


def test_start_time_is_clamped_to_120_days(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(events=600, days=200)
    horizon = to_ns(T0 - timedelta(days=120))
    all_events = list(sim.events("auditevents"))
    assert parse_ns(all_events[0]["timestamp"]) < horizon  # older history exists ...
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        items, _ = drain(client, "/api/v2/auditevents", {"start_time": OLD, "limit": 1000})
    assert items  # ... but is never served
    assert min(parse_ns(e["timestamp"]) for e in items) >= horizon
    assert [e["uuid"] for e in items] == [
        e["uuid"] for e in all_events if parse_ns(e["timestamp"]) >= horizon
    ]


def test_end_time_bounds_the_chain_even_for_new_events(sim: SimulatorServer, api: httpx.Client) -> None:
    end = T0 - timedelta(days=3)
    items, cursor = drain(api, "/api/v2/itemusages", {"start_time": OLD, "end_time": iso(end), "limit": 50})
    assert items
    assert max(parse_ns(e["timestamp"]) for e in items) <= to_ns(end)
    assert len(items) == sum(1 for e in sim.events("itemusages") if parse_ns(e["timestamp"]) <= to_ns(end))
    sim.add_events("itemusages", 3)
    again = api.post("/api/v2/itemusages", json={"cursor": cursor}).json()
    assert again == {"cursor": cursor, "has_more": False, "items": []}


def test_a_window_older_than_retention_is_empty(api: httpx.Client) -> None:
    old_end = iso(T0 - timedelta(days=200))
    page = api.post("/api/v2/auditevents", json={"end_time": old_end}).json()
    assert page["items"] == []
    assert page["has_more"] is False
