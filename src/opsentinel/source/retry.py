"""What to do with a response or an error (classification, code) and how long to wait (policy, config).

Classification follows the API reference section 4: 429 and 5xx are worth retrying, and so are
timeouts and connection errors; 400, 401, 403 and 404 never are. Backoff follows dlt's REST client
defaults: exponential with full jitter, capped, and `Retry-After` (seconds or an HTTP date) wins
whenever the server sends it.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum

import httpx

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "STARTUP_RETRY",
    "RetryAction",
    "RetryKind",
    "RetryPolicy",
    "classify",
    "parse_retry_after",
]

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})


class RetryKind(Enum):
    SUCCESS = "success"
    RETRY = "retry"
    DONT_RETRY = "dont_retry"


@dataclass(frozen=True)
class RetryAction:
    """The verdict on one attempt, with a short reason for logs (never a body or a header value)."""

    kind: RetryKind
    reason: str

    @property
    def should_retry(self) -> bool:
        return self.kind is RetryKind.RETRY


def _tls_verification_failed(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def classify(
    outcome: httpx.Response | BaseException,
    *,
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES,
) -> RetryAction:
    """Classify a response by status or an exception by type.

    2xx is SUCCESS (the body is judged by the caller); `retry_statuses` (429, 5xx by default) are
    RETRY; every other status, including redirects, is DONT_RETRY. Timeouts, connection and protocol
    errors are RETRY, except a failed TLS certificate check, which waiting cannot fix.
    """
    if isinstance(outcome, httpx.Response):
        status = outcome.status_code
        if 200 <= status < 300:
            return RetryAction(RetryKind.SUCCESS, f"HTTP {status}")
        if status in retry_statuses:
            return RetryAction(RetryKind.RETRY, f"HTTP {status}")
        return RetryAction(RetryKind.DONT_RETRY, f"HTTP {status}")
    if isinstance(outcome, httpx.TimeoutException):
        return RetryAction(RetryKind.RETRY, "timed out")
    if isinstance(outcome, httpx.ConnectError) and _tls_verification_failed(outcome):
        return RetryAction(RetryKind.DONT_RETRY, "TLS certificate verification failed")
    if isinstance(outcome, httpx.NetworkError | httpx.RemoteProtocolError):
        return RetryAction(RetryKind.RETRY, "connection error")
    return RetryAction(RetryKind.DONT_RETRY, type(outcome).__name__)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP date); None if absent/invalid.

    A date in the past gives 0. `now` (aware) defaults to the current UTC time.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT
    reference = now if now is not None else datetime.now(UTC)
    return max((when - reference).total_seconds(), 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them.

    `max_attempts` counts every try, the first included. Without `Retry-After`, the wait before try
    n+1 is `uniform(0, min(max_delay, base_delay * multiplier ** (n - 1)))` with jitter ("full
    jitter"), or that cap itself without. A `Retry-After` is honoured as sent, up to
    `max_retry_after` (an hour: the longest API window), so a bogus value cannot stall us for days.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True
    max_retry_after: float = 3600.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        exponent = max(attempt - 1, 0)
        try:
            cap = min(self.max_delay, self.base_delay * self.multiplier**exponent)
        except OverflowError:
            cap = self.max_delay
        return cap * self.random() if self.jitter else cap

    def classify(self, outcome: httpx.Response | BaseException) -> RetryAction:
        """`classify(outcome)` with this policy's retry statuses."""
        return classify(outcome, retry_statuses=self.retry_statuses)


# Start-up (introspect): a couple of quick tries, so a wrong host fails fast with one clear line;
# a long Retry-After is not waited out here either (the caller may try again later).
STARTUP_RETRY = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=2.0, max_retry_after=10.0)
