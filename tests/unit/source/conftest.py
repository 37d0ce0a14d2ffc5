"""Fixtures for the Events API client tests: real ES256 tokens, a fake clock, MockTransport clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from opsentinel.source.client import EventsClient
from opsentinel.source.ratelimit import RateLimiter
from opsentinel.source.retry import RetryPolicy
from opsentinel.source.token import ApiToken

BASE_URL = "https://events.1password.com"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def make_token(signing_key: ec.EllipticCurvePrivateKey) -> Callable[..., str]:
    """Build a signed ES256 JWT shaped like a real Events API token; returns the raw secret."""

    def build(
        aud: Any = ("events.1password.com",),
        features: Any = ("auditevents", "itemusages", "signinattempts"),
        account: str | None = "56YE2TYN2VFYRLNSHKPW5NVT5E",
        **extra: Any,
    ) -> str:
        payload: dict[str, Any] = {"iss": "com.1password.b5", "sub": "INTEGRATION", "iat": 1_700_000_000}
        if aud is not None:
            payload["aud"] = list(aud) if isinstance(aud, tuple | list) else aud
        if features is not None:
            payload["1password.com/fts"] = list(features)
        if account is not None:
            payload["1password.com/auuid"] = account
        payload.update(extra)
        return jwt.encode(payload, signing_key, algorithm="ES256", headers={"kid": "testkey"})

    return build


@pytest.fixture
def secret(make_token: Callable[..., str]) -> str:
    return make_token()


@pytest.fixture
def token(secret: str) -> ApiToken:
    return ApiToken(secret)


@dataclass
class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it; records every sleep."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class Recorder:
    """Requests a MockTransport handler saw, with the fake time at which each was sent."""

    clock: FakeClock
    requests: list[httpx.Request] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def record(self, request: httpx.Request) -> None:
        self.requests.append(request)
        self.times.append(self.clock.now)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]


@pytest.fixture
def recorder(clock: FakeClock) -> Recorder:
    return Recorder(clock)


def page_body(items: list[Any] | None = None, cursor: str = "c1", has_more: bool = False) -> dict[str, Any]:
    return {"cursor": cursor, "has_more": has_more, "items": items if items is not None else []}


def event(uuid: str = "EV1", timestamp: str = "2026-11-18T12:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"uuid": uuid, "timestamp": timestamp, **extra}


@pytest.fixture
def page_json() -> Callable[..., dict[str, Any]]:
    return page_body


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    return event


@pytest.fixture
def fixed_policy() -> RetryPolicy:
    """No jitter: delays are exactly 1, 2, 4, ... seconds, so tests can assert them."""
    return RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=30.0, jitter=False)


@pytest.fixture
def make_client(
    token: ApiToken, clock: FakeClock, recorder: Recorder, fixed_policy: RetryPolicy
) -> Callable[..., EventsClient]:
    """An EventsClient over a MockTransport handler, with the fake clock for limiter and backoff.

    Every request is recorded (with its fake send time) in `recorder`. Use it with `async with`.
    """

    def build(
        handler: Callable[[httpx.Request], httpx.Response],
        *,
        base_url: str = BASE_URL,
        api_token: ApiToken | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        startup_retry: RetryPolicy | None = None,
    ) -> EventsClient:
        def recording(request: httpx.Request) -> httpx.Response:
            recorder.record(request)
            return handler(request)

        client = EventsClient(
            base_url,
            api_token or token,
            limiter=limiter or RateLimiter(clock=clock, sleep=clock.sleep),
            retry=retry or fixed_policy,
            startup_retry=startup_retry or RetryPolicy(max_attempts=3, base_delay=0.5, jitter=False),
            transport=httpx.MockTransport(recording),
            sleep=clock.sleep,
        )
        return client

    return build
