"""Cursor chains: exactly once, in order, live tail, late events, and every way a cursor is refused."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from tests.simulator.simhelp import OLD, T0, bearer, drain

from opsentinel.simulator import ManualClock, SimulatorServer
from opsentinel.simulator.rfc3339 import format_nanos, parse_ns, to_ns

STREAMS = ["auditevents", "signinattempts", "itemusages"]


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("limit", [1000, 37])
def test_a_chain_delivers_every_event_once_in_time_order(
    sim: SimulatorServer, api: httpx.Client, stream: str, limit: int
) -> None:
    items, _ = drain(api, f"/api/v2/{stream}", {"start_time": OLD, "limit": limit})
    uuids = [e["uuid"] for e in items]
    assert uuids == [e["uuid"] for e in sim.events(stream)]
    assert len(set(uuids)) == len(uuids) == 300
    stamps = [parse_ns(e["timestamp"]) for e in items]
    assert stamps == sorted(stamps)


def test_has_more_is_true_until_the_last_page(api: httpx.Client) -> None:
    pages = []
    body: dict[str, object] = {"start_time": OLD, "limit": 100}
    while True:
        page = api.post("/api/v2/auditevents", json=body).json()
        pages.append(page)
        if not page["has_more"]:
            break
        body = {"cursor": page["cursor"]}
    assert [len(p["items"]) for p in pages] == [100, 100, 100]
    assert [p["has_more"] for p in pages] == [True, True, False]  # the last full page knows it is last


def test_nothing_new_returns_the_same_cursor(api: httpx.Client) -> None:
    _, cursor = drain(api, "/api/v2/signinattempts", {"start_time": OLD, "limit": 1000})
    for _ in range(2):
        page = api.post("/api/v2/signinattempts", json={"cursor": cursor}).json()
        assert page == {"cursor": cursor, "has_more": False, "items": []}


def test_cursors_are_opaque_base64url_and_short(api: httpx.Client) -> None:
    cursor = api.post("/api/v2/itemusages", json={}).json()["cursor"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert len(cursor) <= 200
    base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def test_the_live_tail_appears_on_an_open_chain(
    sim: SimulatorServer, api: httpx.Client, clock: ManualClock
) -> None:
    _, cursor = drain(api, "/api/v2/auditevents", {"start_time": OLD, "limit": 1000})
    clock.advance(5)
    added = sim.add_events("auditevents", 3)
    page = api.post("/api/v2/auditevents", json={"cursor": cursor}).json()
    assert [e["uuid"] for e in page["items"]] == [e["uuid"] for e in added]
    assert page["items"] == added
    assert page["has_more"] is False
    assert page["cursor"] != cursor
    again = api.post("/api/v2/auditevents", json={"cursor": page["cursor"]}).json()
    assert again["items"] == []
    assert again["cursor"] == page["cursor"]


def test_a_future_end_time_keeps_the_chain_live_until_it_passes(
    sim: SimulatorServer, api: httpx.Client, clock: ManualClock
) -> None:
    end = format_nanos(to_ns(T0 + timedelta(minutes=10)))
    _, cursor = drain(api, "/api/v2/itemusages", {"start_time": OLD, "end_time": end, "limit": 1000})
    clock.advance(60)
    inside = sim.add_events("itemusages", 2)
    page = api.post("/api/v2/itemusages", json={"cursor": cursor}).json()
    assert [e["uuid"] for e in page["items"]] == [e["uuid"] for e in inside]
    clock.advance(3600)
    sim.add_events("itemusages", 2)  # after end_time: not on this chain
    later = api.post("/api/v2/itemusages", json={"cursor": page["cursor"]}).json()
    assert later == {"cursor": page["cursor"], "has_more": False, "items": []}


def test_late_events_are_caught_once_by_an_existing_chain(sim: SimulatorServer, api: httpx.Client) -> None:
    start = T0 - timedelta(days=2)
    _, cursor = drain(api, "/api/v2/auditevents", {"start_time": format_nanos(to_ns(start)), "limit": 1000})
    late = sim.add_events("auditevents", 2, at=T0 - timedelta(days=1))
    too_old = sim.add_events("auditevents", 1, at=T0 - timedelta(days=3))  # before the chain's start
    page = api.post("/api/v2/auditevents", json={"cursor": cursor}).json()
    uuids = [e["uuid"] for e in page["items"]]
    assert uuids == [e["uuid"] for e in late]
    assert too_old[0]["uuid"] not in uuids
    assert api.post("/api/v2/auditevents", json={"cursor": page["cursor"]}).json()["items"] == []


def test_the_trickle_adds_events_while_running(
    make_sim: Callable[..., SimulatorServer], clock: ManualClock
) -> None:
    sim = make_sim(trickle=6)  # one event per stream every 10 s
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        _, cursor = drain(client, "/api/v2/signinattempts", {"start_time": OLD, "limit": 1000})
        assert sim.event_count("signinattempts") == 300
        clock.advance(35)
        page = client.post("/api/v2/signinattempts", json={"cursor": cursor}).json()
    assert len(page["items"]) == 3
    assert sim.event_count("signinattempts") == 303
    stamps = [parse_ns(e["timestamp"]) for e in page["items"]]
    assert stamps == sorted(stamps)
    assert stamps[0] > to_ns(T0) - 1


def test_the_cursor_carries_the_limit(api: httpx.Client) -> None:
    first = api.post("/api/v2/auditevents", json={"start_time": OLD, "limit": 7}).json()
    second = api.post("/api/v2/auditevents", json={"cursor": first["cursor"]}).json()
    assert len(first["items"]) == len(second["items"]) == 7


def test_a_v2_cursor_continues_on_the_v1_endpoint_of_the_same_stream(api: httpx.Client) -> None:
    first = api.post("/api/v2/itemusages", json={"start_time": OLD, "limit": 5}).json()
    v1 = api.post("/api/v1/itemusages", json={"cursor": first["cursor"]})
    v2 = api.post("/api/v2/itemusages", json={"cursor": first["cursor"]})
    assert v1.status_code == 200
    assert [e["uuid"] for e in v1.json()["items"]] == [e["uuid"] for e in v2.json()["items"]]


def _flip(cursor: str, index: int) -> str:
    char = "A" if cursor[index] != "A" else "B"
    return cursor[:index] + char + cursor[index + 1 :]


@pytest.mark.parametrize("index", [0, 5, 12, 30, -1])
def test_a_tampered_cursor_is_400(api: httpx.Client, index: int) -> None:
    cursor = api.post("/api/v2/auditevents", json={"start_time": OLD}).json()["cursor"]
    response = api.post("/api/v2/auditevents", json={"cursor": _flip(cursor, index)})
    assert response.status_code == 400
    assert response.json()["status"] == 400


def test_a_cut_cursor_is_400(api: httpx.Client) -> None:
    cursor = api.post("/api/v2/auditevents", json={}).json()["cursor"]
    assert api.post("/api/v2/auditevents", json={"cursor": cursor[:-4]}).status_code == 400
    assert api.post("/api/v1/auditevents", json={"cursor": cursor + "AAAA"}).status_code == 400


def test_a_cursor_from_another_stream_is_400(api: httpx.Client) -> None:
    cursor = api.post("/api/v2/auditevents", json={}).json()["cursor"]
    response = api.post("/api/v2/signinattempts", json={"cursor": cursor})
    assert response.status_code == 400
    assert "auditevents" in response.json()["message"]
    assert api.post("/api/v1/itemusages", json={"cursor": cursor}).json()["Error"]["Message"]


def test_a_cursor_from_another_account_is_400(sim: SimulatorServer, api: httpx.Client) -> None:
    cursor = api.post("/api/v2/auditevents", json={}).json()["cursor"]
    other = sim.issue_token(account="A" * 26)
    response = httpx.post(
        f"{sim.base_url}/api/v2/auditevents", json={"cursor": cursor}, headers=bearer(other)
    )
    assert response.status_code == 400


def test_a_cursor_from_another_simulator_is_400(make_sim: Callable[..., SimulatorServer]) -> None:
    one, two = make_sim(seed=1), make_sim(seed=2)
    cursor = httpx.post(f"{one.base_url}/api/v2/auditevents", json={}, headers=bearer(one.token)).json()[
        "cursor"
    ]
    response = httpx.post(
        f"{two.base_url}/api/v2/auditevents", json={"cursor": cursor}, headers=bearer(two.token)
    )
    assert response.status_code == 400


def test_invalidated_cursors_are_refused_and_a_reset_recovers(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    first = api.post("/api/v2/auditevents", json={"start_time": OLD, "limit": 10}).json()
    sim.faults.invalidate_cursors()
    assert api.post("/api/v2/auditevents", json={"cursor": first["cursor"]}).status_code == 400
    fresh = api.post("/api/v2/auditevents", json={"start_time": OLD, "limit": 10}).json()
    assert fresh["items"] == first["items"]
    assert api.post("/api/v2/auditevents", json={"cursor": fresh["cursor"]}).status_code == 200


def test_cursors_survive_a_restart_with_the_same_seed(make_sim: Callable[..., SimulatorServer]) -> None:
    first = make_sim(seed=5)
    page = httpx.post(
        f"{first.base_url}/api/v2/auditevents",
        json={"start_time": OLD, "limit": 10},
        headers=bearer(first.token),
    ).json()
    first.stop()
    second = make_sim(seed=5)
    more = httpx.post(
        f"{second.base_url}/api/v2/auditevents", json={"cursor": page["cursor"]}, headers=bearer(first.token)
    )
    assert more.status_code == 200
    expected = [e["uuid"] for e in second.events("auditevents")][10:20]
    assert [e["uuid"] for e in more.json()["items"]] == expected
