"""Fault injection over real sockets: each fault, its targeting, and that slow requests block nobody."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
from tests.simulator.simhelp import OLD, bearer

from opsentinel.simulator import Fault, FaultKind, SimulatorServer

AUDIT = "/api/v2/auditevents"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_error_status_for_the_next_n_requests(sim: SimulatorServer, api: httpx.Client, status: int) -> None:
    sim.faults.add(Fault.error(status, path=AUDIT, times=2))
    for _ in range(2):
        response = api.post(AUDIT, json={})
        assert response.status_code == status
        assert response.json()["status"] == status
    assert api.post(AUDIT, json={}).status_code == 200
    assert [r.fault for r in sim.request_log[-3:]] == ["status", "status", None]


def test_error_fault_uses_the_v1_body_on_v1_paths(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.add(Fault.error(500, stream="itemusages"))
    response = api.post("/api/v1/itemusages", json={})
    assert response.status_code == 500
    assert response.json()["Error"]["Message"]


def test_429_with_and_without_retry_after(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.add(Fault.rate_limited(retry_after=7, path=AUDIT))
    sim.faults.add(Fault.rate_limited(retry_after=None, path=AUDIT))
    first, second = api.post(AUDIT, json={}), api.post(AUDIT, json={})
    assert first.status_code == second.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert "retry-after" not in second.headers
    assert second.json()["status"] == 429


def test_faults_target_their_path_or_stream_only(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.add(Fault.error(503, stream="signinattempts", times=None))
    assert api.post(AUDIT, json={}).status_code == 200
    assert api.get("/api/v2/auth/introspect").status_code == 200
    assert api.post("/api/v2/signinattempts", json={}).status_code == 503
    assert api.post("/api/v1/signinattempts", json={}).status_code == 503
    sim.faults.clear()
    assert api.post("/api/v2/signinattempts", json={}).status_code == 200


def test_faults_apply_before_authentication(sim: SimulatorServer) -> None:
    sim.faults.add(Fault.error(502))
    assert httpx.post(sim.base_url + AUDIT, json={}).status_code == 502
    assert httpx.post(sim.base_url + AUDIT, json={}).status_code == 401


def test_probability_makes_some_requests_fail(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.add(Fault.error(503, path=AUDIT, times=None, probability=0.5))
    statuses = [api.post(AUDIT, json={}).status_code for _ in range(40)]
    assert set(statuses) == {200, 503}


def test_faults_can_be_set_at_start(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(faults=(Fault.error(502, times=1),))
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        assert client.get("/api/v2/auth/introspect").status_code == 502
        assert client.get("/api/v2/auth/introspect").status_code == 200


def test_connection_reset(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.add(Fault.reset(path=AUDIT))
    with pytest.raises(httpx.TransportError):
        api.post(AUDIT, json={})
    assert api.post(AUDIT, json={}).status_code == 200
    assert sim.request_log[-2].status is None
    assert sim.request_log[-2].fault == "reset"


def test_truncated_json_body(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.add(Fault.truncate(path=AUDIT))
    response = api.post(AUDIT, json={"start_time": OLD})
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)
    assert orjson.loads(api.post(AUDIT, json={"start_time": OLD}).content)["items"]


def test_stall_mid_body_then_close(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.add(Fault.stall(0.2, path=AUDIT))
    with pytest.raises(httpx.TransportError):
        api.post(AUDIT, json={"start_time": OLD})
    assert api.post(AUDIT, json={"start_time": OLD}).status_code == 200


def test_empty_page_with_has_more_keeps_the_chain(sim: SimulatorServer, api: httpx.Client) -> None:
    expected = api.post(AUDIT, json={"start_time": OLD, "limit": 10}).json()
    sim.faults.add(Fault.empty_has_more(path=AUDIT, times=2))
    empty = api.post(AUDIT, json={"start_time": OLD, "limit": 10}).json()
    assert empty["items"] == []
    assert empty["has_more"] is True
    again = api.post(AUDIT, json={"cursor": empty["cursor"]}).json()
    assert again == {"cursor": empty["cursor"], "has_more": True, "items": []}
    assert api.post(AUDIT, json={"cursor": empty["cursor"]}).json()["items"] == expected["items"]


def test_page_cap_below_the_limit(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.page_cap = 7
    page = api.post(AUDIT, json={"start_time": OLD, "limit": 100}).json()
    assert len(page["items"]) == 7
    assert page["has_more"] is True
    sim.faults.page_cap = None
    assert len(api.post(AUDIT, json={"cursor": page["cursor"]}).json()["items"]) == 100


def test_a_delayed_request_does_not_hold_up_others(sim: SimulatorServer) -> None:
    sim.faults.add(Fault.delay(60, path="/api/v2/auth/introspect"))
    outcome: list[object] = []

    def slow() -> None:
        try:
            outcome.append(httpx.get(f"{sim.base_url}/api/v2/auth/introspect", headers=bearer(sim.token)))
        except httpx.TransportError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    for _ in range(500):  # wait until the slow request is being handled (and delayed)
        if sim.request_log:
            break
        threading.Event().wait(0.01)
    response = httpx.post(sim.base_url + AUDIT, json={}, headers=bearer(sim.token))
    assert response.status_code == 200
    assert thread.is_alive()  # still delayed while the other request was answered
    sim.stop()  # ends the delay
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert outcome


def test_global_latency_knob_still_answers(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.faults.latency = 0.05
    assert api.post(AUDIT, json={}).status_code == 200
    assert sim.request_log[-1].status == 200


def test_twenty_concurrent_requests(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(events=2000, latency=0.05)

    def fetch(i: int) -> int:
        stream = ["auditevents", "signinattempts", "itemusages"][i % 3]
        body = {"start_time": OLD, "limit": 1000}
        return httpx.post(f"{sim.base_url}/api/v2/{stream}", json=body, headers=bearer(sim.token)).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(fetch, range(20))) == [200] * 20


def test_rules_are_used_up_and_listed(sim: SimulatorServer, api: httpx.Client) -> None:
    rule = sim.faults.add(Fault.error(503, path=AUDIT, times=3))
    assert sim.faults.rules == [rule]
    api.post(AUDIT, json={})
    assert sim.faults.rules[0].times == 2
    assert list(sim.faults.fired) == [(FaultKind.STATUS, AUDIT)]


def test_fault_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="times"):
        Fault.error(503, times=0)
    with pytest.raises(ValueError, match="probability"):
        Fault.error(503, probability=0)
    with pytest.raises(KeyError):
        Fault.error(503, stream="events")
