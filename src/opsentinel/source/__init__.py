"""The Events API source: token, base URL rules, rate limiter, retry policy, pager and client.

Nothing here imports the simulator: the client and the simulator share no logic, only the data in
`opsentinel.events` and `opsentinel.streams`.
"""

from opsentinel.source.baseurl import (
    LOOPBACK_HOSTS,
    OFFICIAL_HOSTS,
    base_url_from_token,
    is_loopback_host,
    region_of,
    validate_base_url,
)
from opsentinel.source.client import DEFAULT_TIMEOUT, DEFAULT_USER_AGENT, EventsClient
from opsentinel.source.page import Page, Rejection, parse_page
from opsentinel.source.paging import CursorPager, dedupe_after_reset
from opsentinel.source.ratelimit import DEFAULT_LIMITS, RateLimit, RateLimiter
from opsentinel.source.redact import scrub
from opsentinel.source.retry import (
    STARTUP_RETRY,
    RetryAction,
    RetryKind,
    RetryPolicy,
    classify,
    parse_retry_after,
)
from opsentinel.source.token import ApiToken, TokenClaims

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_USER_AGENT",
    "LOOPBACK_HOSTS",
    "OFFICIAL_HOSTS",
    "STARTUP_RETRY",
    "ApiToken",
    "CursorPager",
    "EventsClient",
    "Page",
    "RateLimit",
    "RateLimiter",
    "Rejection",
    "RetryAction",
    "RetryKind",
    "RetryPolicy",
    "TokenClaims",
    "base_url_from_token",
    "classify",
    "dedupe_after_reset",
    "is_loopback_host",
    "parse_page",
    "parse_retry_after",
    "region_of",
    "scrub",
    "validate_base_url",
]
