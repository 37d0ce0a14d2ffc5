"""Rate limits: 429 with the version's body, Retry-After to the window's end, per account, switchable."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from tests.simulator.simhelp import bearer

from opsentinel.simulator import ManualClock, SimulatorServer

AUDIT = "/api/v2/auditevents"


def test_per_minute_limit(make_sim: Callable[..., SimulatorServer], clock: ManualClock) -> None:
    clock.advance(10)  # 10 s into the minute
    sim = make_sim(rate_limit_per_minute=3)
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        assert [client.post(AUDIT, json={}).status_code for _ in range(3)] == [200] * 3
        refused = client.post(AUDIT, json={})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "50"
        assert refused.json() == {"status": 429, "message": refused.json()["message"]}
        v1 = client.post("/api/v1/auditevents", json={})
        assert v1.status_code == 429
        assert v1.json()["Error"]["Message"]
        assert client.get("/api/v2/auth/introspect").status_code == 429  # every endpoint counts
        clock.advance(50)
        assert client.post(AUDIT, json={}).status_code == 200


def test_per_hour_limit(make_sim: Callable[..., SimulatorServer], clock: ManualClock) -> None:
    sim = make_sim(rate_limit_per_minute=0, rate_limit_per_hour=5)
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        assert [client.post(AUDIT, json={}).status_code for _ in range(5)] == [200] * 5
        refused = client.post(AUDIT, json={})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "3600"  # T0 is on the hour
        clock.advance(3600)
        assert client.post(AUDIT, json={}).status_code == 200


def test_retry_after_can_be_switched_off(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(rate_limit_per_minute=1, retry_after=False)
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        client.post(AUDIT, json={})
        refused = client.post(AUDIT, json={})
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers


def test_limits_are_per_account(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(rate_limit_per_minute=2)
    other = sim.issue_token(account="B" * 26)
    for token in (sim.token, other):
        with httpx.Client(base_url=sim.base_url, headers=bearer(token)) as client:
            assert [client.get("/api/v2/auth/introspect").status_code for _ in range(3)] == [200, 200, 429]


def test_limits_can_be_disabled(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(rate_limit_per_minute=0, rate_limit_per_hour=0)
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        assert {client.get("/api/v2/auth/introspect").status_code for _ in range(50)} == {200}


def test_the_default_is_600_a_minute(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim()
    assert (sim.app.limiter.per_minute, sim.app.limiter.per_hour) == (600, 30_000)
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
        statuses = [client.get("/api/v2/auth/introspect").status_code for _ in range(601)]
    assert statuses.count(200) == 600
    assert statuses[-1] == 429


def test_unauthenticated_requests_do_not_count(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(rate_limit_per_minute=1)
    for _ in range(3):
        assert httpx.post(sim.base_url + AUDIT, json={}).status_code == 401
    assert httpx.post(sim.base_url + AUDIT, json={}, headers=bearer(sim.token)).status_code == 200
