"""The pre-rendered benchmark server answers what op-sentinel asks, correctly: windows, chains, has_more."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from bench.prerendered_server import Api, build_stream

from opsentinel.simulator.rfc3339 import NS, format_nanos

START = 1_700_000_000 * NS
END = START + 3600 * NS
TOKEN = "bench-token"


@pytest.fixture(scope="module")
def api() -> Api:
    streams = [
        build_stream("auditevents", 0, 250, seed=3, start_ns=START, end_ns=END),
        build_stream("signinattempts", 1, 40, seed=3, start_ns=START, end_ns=END),
    ]
    return Api(streams, TOKEN, "ACCOUNT", END)


def _post(api: Api, stream: str, body: dict[str, Any], token: str = TOKEN) -> tuple[int, Any]:
    status, parts = api.handle("POST", f"/api/v2/{stream}", f"Bearer {token}".encode(), orjson.dumps(body))
    return status, orjson.loads(b"".join(bytes(p) for p in parts))


def _chain(api: Api, stream: str, first: dict[str, Any]) -> list[dict[str, Any]]:
    status, page = _post(api, stream, first)
    assert status == 200
    items = list(page["items"])
    while page["has_more"]:
        status, page = _post(api, stream, {"cursor": page["cursor"]})
        assert status == 200
        items += page["items"]
    # At the end, the same cursor comes back with nothing new.
    status, again = _post(api, stream, {"cursor": page["cursor"]})
    assert (status, again["items"], again["has_more"], again["cursor"]) == (200, [], False, page["cursor"])
    return items


def test_an_open_ended_chain_returns_every_event_once_in_order(api: Api) -> None:
    items = _chain(api, "auditevents", {"limit": 7, "start_time": format_nanos(START - NS)})
    stream = api.streams["/api/v2/auditevents"]
    assert len(items) == 250
    assert len({e["uuid"] for e in items}) == 250
    assert [e["timestamp"] for e in items] == sorted(e["timestamp"] for e in items)
    assert items[0] == orjson.loads(bytes(stream.items(0, 1)))


def test_a_window_returns_exactly_its_events(api: Api) -> None:
    stream = api.streams["/api/v2/auditevents"]
    lo_ns, hi_ns = stream.times[40], stream.times[90]  # both ends inclusive, as the API's are
    items = _chain(
        api, "auditevents", {"limit": 10, "start_time": format_nanos(lo_ns), "end_time": format_nanos(hi_ns)}
    )
    expected = [i for i, t in enumerate(stream.times) if lo_ns <= t <= hi_ns]
    assert [e["uuid"] for e in items] == [
        orjson.loads(bytes(stream.items(i, i + 1)))["uuid"] for i in expected
    ]


def test_has_more_is_false_on_a_page_that_ends_the_window(api: Api) -> None:
    status, page = _post(api, "signinattempts", {"limit": 40, "start_time": format_nanos(START - NS)})
    assert (status, len(page["items"]), page["has_more"]) == (200, 40, False)


def test_refusals(api: Api) -> None:
    assert _post(api, "auditevents", {}, token="wrong")[0] == 401
    assert _post(api, "auditevents", {"cursor": "garbage!"})[0] == 400
    _, page = _post(api, "signinattempts", {"limit": 5, "start_time": format_nanos(START)})
    assert _post(api, "auditevents", {"cursor": page["cursor"]})[0] == 400  # another stream's cursor
    assert _post(api, "auditevents", {"limit": 1001})[0] == 400
    assert api.handle("GET", "/api/v2/nope", b"", b"")[0] == 404
