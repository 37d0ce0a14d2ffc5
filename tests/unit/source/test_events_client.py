"""EventsClient over MockTransport: requests, retries, error translation, shared back-off, auth scope."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from opsentinel.errors import (
    AuthError,
    ConfigError,
    CursorRejected,
    FatalError,
    RateLimited,
    RetriableError,
    UserError,
)
from opsentinel.source.client import EventsClient, _BearerAuth
from opsentinel.source.ratelimit import RateLimiter
from opsentinel.source.token import ApiToken
from opsentinel.streams import get_stream

pytestmark = pytest.mark.anyio

AUDIT = get_stream("auditevents")
SIGNIN = get_stream("signinattempts")
RESET = {"limit": 1000, "start_time": "2026-11-18T12:00:00Z"}
INTROSPECT = {
    "uuid": "INTEGRATION",
    "issued_at": "2026-11-01T10:00:00-03:00",
    "features": ["auditevents", "signinattempts"],
    "account_uuid": "ACCOUNT",
}

Handler = Callable[[httpx.Request], httpx.Response]
MakeClient = Callable[..., EventsClient]


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


def sequence(*responses: httpx.Response | Exception) -> Handler:
    """A handler answering each request with the next response (or raising the next exception)."""
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handle


def refused(request: httpx.Request) -> httpx.Response:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as exc:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request) from exc


def dns_failure(request: httpx.Request) -> httpx.Response:
    try:
        raise socket.gaierror(-2, "Name or service not known")
    except socket.gaierror as exc:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request) from exc


# -- introspect -----------------------------------------------------------------------------------


async def test_introspect(make_client: MakeClient, recorder: Any, secret: str) -> None:
    async with make_client(sequence(ok(INTROSPECT))) as client:
        info = await client.introspect()
    assert info.features == ["auditevents", "signinattempts"]
    assert info.account_uuid == "ACCOUNT"
    (request,) = recorder.requests
    assert request.method == "GET"
    assert str(request.url) == "https://events.1password.com/api/v2/auth/introspect"
    assert request.headers["Authorization"] == f"Bearer {secret}"
    assert request.headers["User-Agent"].startswith("op-sentinel/")


async def test_introspect_401_fails_at_once(make_client: MakeClient, recorder: Any) -> None:
    async with make_client(
        sequence(httpx.Response(401, json={"status": 401, "message": "Unauthorized"}))
    ) as c:
        with pytest.raises(AuthError) as info:
            await c.introspect()
    assert str(info.value) == (
        "the Events API rejected the token (401): check it is current and was issued for events.1password.com"
    )
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("handler", "reason"), [(refused, "connection refused"), (dns_failure, "host name not found")]
)
async def test_introspect_unreachable_is_one_user_line_after_quick_tries(
    make_client: MakeClient, recorder: Any, clock: Any, handler: Handler, reason: str
) -> None:
    async with make_client(handler) as client:
        with pytest.raises(UserError) as info:
            await client.introspect()
    message = str(info.value)
    assert "events.1password.com" in message
    assert reason in message
    assert "\n" not in message
    assert len(recorder.requests) == 3
    assert sum(clock.sleeps) <= 2.0


async def test_introspect_malformed_body(make_client: MakeClient, recorder: Any) -> None:
    handler = sequence(*(httpx.Response(200, content=b'{"uuid": "X", "feat') for _ in range(3)))
    async with make_client(handler) as client:
        with pytest.raises(FatalError, match=r"malformed response from events\.1password\.com"):
            await client.introspect()
    assert len(recorder.requests) == 3


# -- fetch_page: success ----------------------------------------------------------------------------


async def test_fetch_page_posts_json_and_returns_the_page(
    make_client: MakeClient, recorder: Any, secret: str, page_json: Any, make_event: Any
) -> None:
    events = [make_event("A"), make_event("B", "2026-11-18T12:00:05.5Z")]
    async with make_client(sequence(ok(page_json(events, cursor="c1", has_more=True)))) as client:
        page = await client.fetch_page(AUDIT, RESET)
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://events.1password.com/api/v2/auditevents"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Bearer {secret}"
    assert json.loads(request.content) == RESET
    assert page.stream == "auditevents"
    assert page.events == events
    assert (page.cursor, page.has_more) == ("c1", True)
    assert page.request == RESET
    assert secret not in repr(page)
    assert page.newest_timestamp is not None
    assert page.newest_timestamp.second == 5


async def test_bad_items_are_rejected_but_the_page_is_delivered(
    make_client: MakeClient, page_json: Any, make_event: Any
) -> None:
    body = page_json([make_event("A"), {"uuid": "B", "timestamp": "not a time"}, 7], cursor="c2")
    async with make_client(sequence(ok(body))) as client:
        page = await client.fetch_page(AUDIT, {"cursor": "c1"})
    assert [e["uuid"] for e in page.events] == ["A"]
    assert [r.index for r in page.rejected] == [1, 2]
    assert page.cursor == "c2"


# -- fetch_page: retries ------------------------------------------------------------------------------


async def test_5xx_is_retried_with_backoff(
    make_client: MakeClient, recorder: Any, clock: Any, page_json: Any
) -> None:
    handler = sequence(
        httpx.Response(503, text="unavailable"),
        httpx.Response(500, json={"status": 500, "message": "x"}),
        ok(page_json()),
    )
    async with make_client(handler) as client:
        page = await client.fetch_page(AUDIT, RESET)
    assert page.cursor == "c1"
    assert len(recorder.requests) == 3
    assert clock.sleeps == [1.0, 2.0]


async def test_5xx_exhausted_is_retriable(make_client: MakeClient, recorder: Any, clock: Any) -> None:
    handler = sequence(
        *(httpx.Response(502, json={"status": 502, "message": "bad gateway"}) for _ in range(4))
    )
    async with make_client(handler) as client:
        with pytest.raises(RetriableError) as info:
            await client.fetch_page(AUDIT, RESET)
    assert info.value.status == 502
    assert "after 4 attempts" in str(info.value)
    assert "bad gateway" in str(info.value)
    assert clock.sleeps == [1.0, 2.0, 4.0]


async def test_429_with_retry_after_pauses_then_retries(
    make_client: MakeClient, recorder: Any, page_json: Any
) -> None:
    handler = sequence(httpx.Response(429, headers={"Retry-After": "7"}), ok(page_json()))
    async with make_client(handler) as client:
        await client.fetch_page(AUDIT, RESET)
    assert recorder.times == [1000.0, 1007.0]


async def test_429_without_retry_after_uses_backoff(
    make_client: MakeClient, recorder: Any, page_json: Any
) -> None:
    handler = sequence(httpx.Response(429), httpx.Response(429), ok(page_json()))
    async with make_client(handler) as client:
        await client.fetch_page(AUDIT, RESET)
    assert recorder.times == [1000.0, 1001.0, 1003.0]


async def test_429_exhausted_is_rate_limited(make_client: MakeClient) -> None:
    handler = sequence(*(httpx.Response(429, headers={"Retry-After": "3"}) for _ in range(4)))
    async with make_client(handler) as client:
        with pytest.raises(RateLimited) as info:
            await client.fetch_page(AUDIT, RESET)
    assert info.value.retry_after == 3.0
    assert isinstance(info.value, RetriableError)


async def test_429_on_one_stream_pauses_every_stream(
    make_client: MakeClient, recorder: Any, clock: Any, page_json: Any
) -> None:
    limited = asyncio.Event()
    audit_calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal audit_calls
        if request.url.path == AUDIT.path:
            audit_calls += 1
            if audit_calls == 1:
                limited.set()
                return httpx.Response(429, headers={"Retry-After": "10"})
        return ok(page_json())

    async with make_client(handler) as client:

        async def signins_after_the_429() -> None:
            await limited.wait()
            await client.fetch_page(SIGNIN, RESET)

        await asyncio.gather(client.fetch_page(AUDIT, RESET), signins_after_the_429())

    sent = list(zip((r.url.path for r in recorder.requests), recorder.times, strict=True))
    assert sent[0] == (AUDIT.path, 1000.0)
    assert sorted(sent[1:]) == [(AUDIT.path, 1010.0), (SIGNIN.path, 1010.0)]


async def test_429_pauses_the_shared_limiter_even_when_retries_are_spent(
    make_client: MakeClient, recorder: Any, clock: Any, page_json: Any
) -> None:
    from opsentinel.source.retry import RetryPolicy

    handler = sequence(httpx.Response(429, headers={"Retry-After": "30"}), ok(page_json()))
    async with make_client(handler, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(RateLimited):
            await client.fetch_page(AUDIT, RESET)
        assert clock.now == 1000.0  # the failing call itself did not wait
        await client.fetch_page(SIGNIN, RESET)
    assert recorder.times == [1000.0, 1030.0]


async def test_limiter_keeps_concurrent_streams_within_budget(
    make_client: MakeClient, recorder: Any, clock: Any, page_json: Any
) -> None:
    from opsentinel.source.ratelimit import RateLimit

    limiter = RateLimiter([RateLimit(5, 60.0)], clock=clock, sleep=clock.sleep)
    async with make_client(lambda r: ok(page_json()), limiter=limiter) as client:

        async def stream(spec: Any) -> None:
            for _ in range(4):
                await client.fetch_page(spec, {"cursor": "c1"})

        await asyncio.gather(stream(AUDIT), stream(SIGNIN), stream(get_stream("itemusages")))

    times = recorder.times
    assert len(times) == 12
    assert max(sum(1 for o in times if t - 60 < o <= t) for t in times) == 5
    assert times.count(1000.0) == 5  # the first minute's budget goes out at once


async def test_timeouts_are_retried(make_client: MakeClient, recorder: Any, page_json: Any) -> None:
    handler = sequence(httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), ok(page_json()))
    async with make_client(handler) as client:
        page = await client.fetch_page(AUDIT, RESET)
    assert page.cursor == "c1"
    assert len(recorder.requests) == 3


async def test_connection_errors_during_a_run_are_retriable(make_client: MakeClient, recorder: Any) -> None:
    async with make_client(refused) as client:
        with pytest.raises(RetriableError) as info:
            await client.fetch_page(AUDIT, RESET)
    assert not isinstance(info.value, UserError)
    assert "connection refused" in str(info.value)
    assert "auditevents" in str(info.value)
    assert len(recorder.requests) == 4


async def test_malformed_body_is_retried(make_client: MakeClient, recorder: Any, page_json: Any) -> None:
    handler = sequence(httpx.Response(200, content=b'{"cursor": "c1", "has_mo'), ok(page_json(cursor="c5")))
    async with make_client(handler) as client:
        page = await client.fetch_page(AUDIT, RESET)
    assert page.cursor == "c5"


async def test_malformed_body_after_retries_is_fatal(make_client: MakeClient, recorder: Any) -> None:
    handler = sequence(*(httpx.Response(200, content=b"<html>oops</html>") for _ in range(4)))
    async with make_client(handler) as client:
        with pytest.raises(FatalError) as info:
            await client.fetch_page(AUDIT, RESET)
    assert str(info.value).startswith("malformed response from events.1password.com/api/v2/auditevents")
    assert len(recorder.requests) == 4


# -- fetch_page: errors that are not retried ----------------------------------------------------------


async def test_400_on_a_reset_is_fatal_with_the_server_message(
    make_client: MakeClient, recorder: Any
) -> None:
    body = {"status": 400, "message": "limit must be between 1 and 1000"}
    async with make_client(sequence(httpx.Response(400, json=body))) as client:
        with pytest.raises(FatalError) as info:
            await client.fetch_page(AUDIT, {"limit": 5000})
    assert not isinstance(info.value, CursorRejected)
    assert "limit must be between 1 and 1000" in str(info.value)
    assert info.value.status == 400
    assert len(recorder.requests) == 1


async def test_400_on_a_cursor_is_cursor_rejected(make_client: MakeClient, recorder: Any) -> None:
    body = {"Error": {"Message": "Bad Request"}}  # the V1 shape, seen from the real API
    async with make_client(sequence(httpx.Response(400, json=body))) as client:
        with pytest.raises(CursorRejected, match="Bad Request"):
            await client.fetch_page(AUDIT, {"cursor": "garbled"})
    assert len(recorder.requests) == 1


async def test_401_names_the_missing_feature(make_client: MakeClient, recorder: Any) -> None:
    async with make_client(sequence(httpx.Response(401, json={"Error": {"Message": "Unauthorized"}}))) as c:
        with pytest.raises(AuthError, match="'signinattempts' feature"):
            await c.fetch_page(SIGNIN, RESET)
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("status", [403, 404, 405])
async def test_other_client_errors_are_fatal_without_retry(
    make_client: MakeClient, recorder: Any, status: int
) -> None:
    async with make_client(sequence(httpx.Response(status, text="nope"))) as client:
        with pytest.raises(FatalError) as info:
            await client.fetch_page(AUDIT, RESET)
    assert f"answered {status}" in str(info.value)
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("response", "shown"),
    [
        (httpx.Response(400, text="plain text: bad cursor"), "plain text: bad cursor"),
        (httpx.Response(400, html="<html><body><h1>400</h1></body></html>"), "HTML page"),
        (httpx.Response(400, content=b""), "(no message)"),
        (httpx.Response(400, json={"status": 400}), '{"status":400}'),
        (httpx.Response(400, json={"error": "bad json"}), "bad json"),
    ],
)
async def test_odd_error_bodies_are_tolerated(
    make_client: MakeClient, response: httpx.Response, shown: str
) -> None:
    async with make_client(sequence(response)) as client:
        with pytest.raises(FatalError) as info:
            await client.fetch_page(AUDIT, RESET)
    assert shown in str(info.value)


async def test_long_server_messages_are_truncated(make_client: MakeClient) -> None:
    body = {"status": 400, "message": "x" * 5000}
    async with make_client(sequence(httpx.Response(400, json=body))) as client:
        with pytest.raises(FatalError) as info:
            await client.fetch_page(AUDIT, RESET)
    assert len(str(info.value)) < 300


# -- where the token goes ------------------------------------------------------------------------------


async def test_redirect_is_not_followed_and_names_the_target(make_client: MakeClient, recorder: Any) -> None:
    moved = httpx.Response(307, headers={"Location": "https://evil.example.com/api/v2/auditevents?x=1"})
    async with make_client(sequence(moved)) as client:
        with pytest.raises(FatalError) as info:
            await client.fetch_page(AUDIT, RESET)
    assert "evil.example.com" in str(info.value)
    assert "x=1" not in str(info.value)
    assert [r.url.host for r in recorder.requests] == ["events.1password.com"]


async def test_relative_redirect_names_our_own_host(make_client: MakeClient) -> None:
    async with make_client(sequence(httpx.Response(301, headers={"Location": "/elsewhere"}))) as client:
        with pytest.raises(FatalError, match=r"redirected /api/v2/auditevents to events\.1password\.com"):
            await client.fetch_page(AUDIT, RESET)


@pytest.mark.parametrize(
    ("url", "gets_token"),
    [
        ("https://events.1password.com/api/v2/auditevents", True),
        ("https://EVENTS.1password.com:443/x", True),
        ("https://evil.example.com/api/v2/auditevents", False),
        ("http://events.1password.com/api/v2/auditevents", False),
        ("https://events.1password.com:8443/api/v2/auditevents", False),
        ("https://events.1password.com.evil.example/", False),
    ],
)
def test_bearer_is_attached_only_to_the_base_url_origin(secret: str, url: str, gets_token: bool) -> None:
    auth = _BearerAuth(httpx.URL("https://events.1password.com"), ApiToken(secret))
    request = httpx.Request("GET", url, headers={"Authorization": "Bearer leftover"})
    flow = auth.auth_flow(request)
    sent = next(flow)
    assert ("Authorization" in sent.headers) is gets_token
    if gets_token:
        assert sent.headers["Authorization"] == f"Bearer {secret}"


def test_tls_verification_cannot_be_turned_off_for_a_remote_host(token: ApiToken) -> None:
    with pytest.raises(ConfigError, match="cannot be turned off"):
        EventsClient("https://events.1password.com", token, verify=False)
    EventsClient("https://127.0.0.1:8443", token, verify=False)  # loopback only: allowed


def test_the_client_rechecks_the_base_url(token: ApiToken) -> None:
    with pytest.raises(ConfigError, match="must not end with '/'"):
        EventsClient("https://events.1password.com/", token)
    with pytest.raises(ConfigError, match="must use https://"):
        EventsClient("http://events.1password.com", token)


def test_missing_ca_file_is_a_config_error(token: ApiToken, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="CA certificates"):
        EventsClient("https://events.1password.com", token, verify=str(tmp_path / "missing.pem"))
