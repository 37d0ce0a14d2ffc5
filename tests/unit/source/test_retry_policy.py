"""Classification (what is worth retrying) and the backoff policy (how long to wait)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from opsentinel.source.retry import RetryKind, RetryPolicy, classify, parse_retry_after

REQUEST = httpx.Request("POST", "https://events.1password.com/api/v2/auditevents")


def response(status: int) -> httpx.Response:
    return httpx.Response(status, request=REQUEST)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_rate_limit_and_server_errors_are_retried(status: int) -> None:
    assert classify(response(status)).kind is RetryKind.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 307, 301])
def test_client_errors_and_redirects_are_never_retried(status: int) -> None:
    assert classify(response(status)).kind is RetryKind.DONT_RETRY


def test_success() -> None:
    assert classify(response(200)).kind is RetryKind.SUCCESS


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("slow", request=REQUEST),
        httpx.ConnectTimeout("slow", request=REQUEST),
        httpx.PoolTimeout("busy", request=REQUEST),
        httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST),
        httpx.ReadError("reset by peer", request=REQUEST),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
    ],
)
def test_timeouts_and_connection_errors_are_retried(exc: Exception) -> None:
    assert classify(exc).should_retry


def test_tls_verification_failure_is_not_retried() -> None:
    exc = httpx.ConnectError("certificate verify failed", request=REQUEST)
    exc.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert classify(exc).kind is RetryKind.DONT_RETRY


def test_unknown_exceptions_are_not_retried() -> None:
    assert classify(ValueError("bug")).kind is RetryKind.DONT_RETRY


def test_retry_statuses_are_configurable() -> None:
    policy = RetryPolicy(retry_statuses=frozenset({503}))
    assert policy.classify(response(503)).should_retry
    assert not policy.classify(response(500)).should_retry


def test_exponential_backoff_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, multiplier=2.0, max_delay=30.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.delay(10_000) == 30.0  # no overflow on absurd attempt numbers


def test_full_jitter_draws_below_the_cap() -> None:
    draws = iter([0.0, 0.25, 0.999])
    policy = RetryPolicy(base_delay=2.0, max_delay=60.0, random=lambda: next(draws))
    assert [policy.delay(3) for _ in range(3)] == [0.0, 2.0, pytest.approx(7.992)]


def test_retry_after_wins_over_backoff_and_is_capped() -> None:
    policy = RetryPolicy(max_delay=5.0, random=lambda: 0.5)
    assert policy.delay(1, retry_after=17.0) == 17.0  # honoured even above max_delay
    assert policy.delay(1, retry_after=10**9) == 3600.0
    assert policy.delay(1, retry_after=-3.0) == 0.0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


NOW = datetime(2026, 11, 18, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=45), usegmt=True), 45.0),
        (format_datetime(NOW - timedelta(seconds=45), usegmt=True), 0.0),
        ("Wed, 18 Nov 2026 12:01:30 GMT", 90.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected
