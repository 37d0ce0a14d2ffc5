"""The API's clock, read from its `Date` header: first-run start times follow it when it is behind ours."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from opsentinel.source.client import EventsClient

pytestmark = pytest.mark.anyio

INTROSPECT = {
    "uuid": "I",
    "issued_at": "2026-11-01T00:00:00Z",
    "features": ["auditevents"],
    "account_uuid": "A",
}


def answer_dated(offset: timedelta | None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {}
        if offset is not None:
            headers["Date"] = format_datetime(datetime.now(UTC) + offset, usegmt=True)
        return httpx.Response(200, json=INTROSPECT, headers=headers)

    return handler


async def test_api_behind_our_clock_moves_api_now_back(make_client: Callable[..., EventsClient]) -> None:
    async with make_client(answer_dated(timedelta(hours=-2))) as client:
        assert client.clock_offset is None
        await client.introspect()
        assert client.clock_offset is not None
        assert abs(client.clock_offset + timedelta(hours=2)) < timedelta(seconds=3)
        assert abs(client.api_now() - (datetime.now(UTC) - timedelta(hours=2))) < timedelta(seconds=3)


@pytest.mark.parametrize("offset", [timedelta(hours=3), timedelta(seconds=-1), timedelta(0), None])
async def test_api_ahead_agreeing_or_silent_keeps_our_clock(
    make_client: Callable[..., EventsClient], offset: timedelta | None
) -> None:
    async with make_client(answer_dated(offset)) as client:
        await client.introspect()
        assert abs(client.api_now() - datetime.now(UTC)) < timedelta(seconds=1)
