"""EventsClient + CursorPager against the project's simulator over real HTTP on 127.0.0.1.

The simulator is an independent application (its own tokens, cursors, rate limits and faults); these
tests check the two agree on the wire: every event exactly once, through faults, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from opsentinel.errors import AuthError, CursorRejected, FatalError
from opsentinel.simulator import Fault, SimulatorConfig, SimulatorServer
from opsentinel.source.client import EventsClient
from opsentinel.source.paging import CursorPager, dedupe_after_reset
from opsentinel.source.ratelimit import RateLimiter
from opsentinel.source.retry import RetryPolicy
from opsentinel.source.token import ApiToken
from opsentinel.streams import STREAMS, StreamSpec, get_stream

pytestmark = pytest.mark.anyio

AUDIT = get_stream("auditevents")
EVENTS_PER_STREAM = 250


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(events=EVENTS_PER_STREAM, days=7.0, seed=7)) as server:
        yield server


@pytest.fixture
def connect(clock: Any) -> Callable[..., EventsClient]:
    """A client for the simulator: real HTTP, quick retries, limiter on the fake clock (429 waits are
    counted, not slept)."""

    def build(server: SimulatorServer, token: str | None = None) -> EventsClient:
        return EventsClient(
            server.base_url,
            ApiToken(token or server.token),
            limiter=RateLimiter(clock=clock, sleep=clock.sleep),
            retry=RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05),
            timeout=httpx.Timeout(2.0, read=0.5),
        )

    return build


def since() -> datetime:
    return datetime.now(UTC) - timedelta(days=8)


async def drain(client: EventsClient, spec: StreamSpec, pager: CursorPager) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = await client.fetch_page(spec, pager.next_request())
        assert page.rejected == []
        pager.update(page)
        events.extend(page.events)
        if pager.drained:
            return events


async def test_introspect(sim: SimulatorServer, connect: Callable[..., EventsClient]) -> None:
    async with connect(sim) as client:
        info = await client.introspect()
    assert sorted(info.features) == ["auditevents", "itemusages", "signinattempts"]
    assert info.account_uuid == sim.account_uuid


async def test_every_stream_drains_concurrently_exactly_once(
    sim: SimulatorServer, connect: Callable[..., EventsClient]
) -> None:
    async with connect(sim) as client:
        results = await asyncio.gather(
            *(drain(client, spec, CursorPager.reset(since(), limit=100)) for spec in STREAMS)
        )
    for spec, events in zip(STREAMS, results, strict=True):
        expected = [e["uuid"] for e in sim.events(spec.name)]
        assert len(expected) == EVENTS_PER_STREAM
        assert [e["uuid"] for e in events] == expected
        requests = [r for r in sim.request_log if r.path == spec.path]
        assert [r.cursor for r in requests] == [False] + [True] * (len(requests) - 1)


async def test_faults_lose_and_duplicate_nothing(
    sim: SimulatorServer, connect: Callable[..., EventsClient], caplog: pytest.LogCaptureFixture
) -> None:
    for fault in (
        Fault.error(503, stream="auditevents", times=2),
        Fault.rate_limited(retry_after=3, stream="auditevents"),
        Fault.rate_limited(retry_after=None, stream="auditevents"),
        Fault.truncate(stream="auditevents"),
        Fault.reset(stream="auditevents"),
        Fault.empty_has_more(stream="auditevents", times=2),
        Fault.stall(2.0, stream="auditevents"),
    ):
        sim.faults.add(fault)
    caplog.set_level(logging.DEBUG)
    async with connect(sim) as client:
        events = await drain(client, AUDIT, CursorPager.reset(since(), limit=50))
    assert [e["uuid"] for e in events] == [e["uuid"] for e in sim.events("auditevents")]
    faults = {r.fault for r in sim.request_log if r.fault}
    assert faults >= {"status", "truncate", "reset", "empty_has_more", "stall"}
    assert sim.token not in caplog.text


async def test_stream_missing_from_the_token(
    sim: SimulatorServer, connect: Callable[..., EventsClient]
) -> None:
    async with connect(sim, sim.issue_token(features=["auditevents"])) as client:
        info = await client.introspect()
        assert info.features == ["auditevents"]
        with pytest.raises(AuthError, match="'signinattempts' feature"):
            await client.fetch_page(get_stream("signinattempts"), CursorPager.reset(since()).next_request())


async def test_token_from_another_issuer_is_rejected(
    sim: SimulatorServer, connect: Callable[..., EventsClient], secret: str
) -> None:
    async with connect(sim, secret) as client:
        with pytest.raises(AuthError, match="rejected the token"):
            await client.introspect()


async def test_bad_reset_is_fatal_with_the_server_message(
    sim: SimulatorServer, connect: Callable[..., EventsClient]
) -> None:
    async with connect(sim) as client:
        with pytest.raises(FatalError) as info:
            await client.fetch_page(AUDIT, {"limit": 5000})
    assert "(400)" in str(info.value)
    assert "Bad Request" in str(info.value)


async def test_rejected_cursor_falls_back_to_a_reset_without_duplicates(
    sim: SimulatorServer, connect: Callable[..., EventsClient]
) -> None:
    expected = [e["uuid"] for e in sim.events("auditevents")]
    async with connect(sim) as client:
        pager = CursorPager.reset(since(), limit=60)
        stored: list[dict[str, Any]] = []
        newest: datetime | None = None
        for _ in range(2):
            page = await client.fetch_page(AUDIT, pager.next_request())
            pager.update(page)
            stored.extend(page.events)
            newest = page.newest_timestamp
        assert newest is not None

        sim.faults.invalidate_cursors()
        with pytest.raises(CursorRejected):
            await client.fetch_page(AUDIT, pager.next_request())

        pager.reset_from(newest)
        seen = {e["uuid"] for e in stored}
        rest = await drain(client, AUDIT, pager)
    fresh = dedupe_after_reset(rest, seen)
    assert len(fresh) < len(rest)  # the reset re-read the events at the newest stored time
    assert [e["uuid"] for e in stored + fresh] == expected
