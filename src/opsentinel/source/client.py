"""`EventsClient`: the connector's only way to talk to the 1Password Events API.

One `httpx.AsyncClient` (HTTP/1.1 keep-alive, TLS verified, redirects never followed). The bearer
token is attached by `_BearerAuth` only to requests whose scheme, host and port are the configured
base URL's. Every library exception and error status is translated here, once, into the project's
error tree (errors.py); messages name the host and the stream, quote at most ~200 scrubbed
characters of what the server said, and never carry the token.

Who calls what: `check` and start-up call `introspect()`; the pipeline calls `fetch_page()` from one
task per stream, concurrently, all sharing this client and its rate limiter.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Generator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
import orjson
from pydantic import ValidationError

from opsentinel import __version__
from opsentinel.errors import (
    AuthError,
    ConfigError,
    CursorRejected,
    FatalError,
    OpSentinelError,
    RateLimited,
    RetriableError,
    UserError,
)
from opsentinel.events import Introspection
from opsentinel.source.baseurl import is_loopback_host, validate_base_url
from opsentinel.source.page import MalformedResponse, Page, parse_page
from opsentinel.source.ratelimit import RateLimiter
from opsentinel.source.redact import scrub
from opsentinel.source.retry import STARTUP_RETRY, RetryKind, RetryPolicy, parse_retry_after
from opsentinel.source.token import ApiToken
from opsentinel.streams import INTROSPECT_V2_PATH, StreamSpec

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_USER_AGENT", "EventsClient"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)
DEFAULT_USER_AGENT: Final = f"op-sentinel/{__version__}"

VerifyTypes = bool | ssl.SSLContext | str | os.PathLike[str]
T = TypeVar("T")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(url.scheme)
    return (url.scheme, url.host.lower(), url.port or default)


_DATE_RESOLUTION = timedelta(seconds=2)  # `Date` has whole seconds; smaller offsets are noise


class _BearerAuth(httpx.Auth):
    """Adds `Authorization: Bearer` to requests for the base URL's origin, and to nothing else."""

    def __init__(self, base_url: httpx.URL, token: ApiToken) -> None:
        self._origin = _origin(base_url)
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin(request.url) == self._origin:
            request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        else:
            request.headers.pop("Authorization", None)
        yield request


def _ssl_context(verify: VerifyTypes, host: str) -> bool | ssl.SSLContext:
    if verify is False:
        if not is_loopback_host(host):
            raise ConfigError(f"TLS certificate verification cannot be turned off for {host}")
        return False
    if verify is True:
        # httpx reads these two itself, and a bad value would escape as a bare ssl.SSLError.
        cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
        if not cafile and not capath:
            return True
        try:
            return ssl.create_default_context(cafile=cafile or None, capath=None if cafile else capath)
        except (OSError, ssl.SSLError) as exc:
            setting = f"SSL_CERT_FILE={cafile}" if cafile else f"SSL_CERT_DIR={capath}"
            raise ConfigError(f"cannot load CA certificates from {setting}") from exc
    if isinstance(verify, ssl.SSLContext):
        return verify
    try:
        return ssl.create_default_context(cafile=os.fspath(verify))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA certificates from {os.fspath(verify)}") from exc


def _attempts(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"


def _describe_transport_error(exc: BaseException) -> str:
    """A short human reason for a connection failure, from the root causes httpx chains."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            detail = current.verify_message or "certificate rejected"
            return f"TLS certificate verification failed ({detail})"
        if isinstance(current, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(current, socket.gaierror):
            return "host name not found (DNS lookup failed)"
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, httpx.ConnectTimeout):
            return "connection timed out"
        if isinstance(current, httpx.TimeoutException):
            return "timed out waiting for the server"
        current = current.__cause__ or current.__context__
    text = str(exc)
    lowered = text.lower()
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "host name not found (DNS lookup failed)"
    if "connection refused" in lowered:
        return "connection refused"
    return text or type(exc).__name__


class EventsClient:
    """An async client for one Events API base URL and token; use it as an async context manager.

    `base_url` must satisfy the base URL rules (validated again here, custom hosts allowed: the
    caller decides that). `verify` may be an SSLContext or a CA file path; it can be False only for
    a loopback host. `limiter` is shared by everything using the same token (a private one is made
    when None). `retry` governs `fetch_page`, `startup_retry` governs `introspect`. `transport`,
    `sleep` and `now` are plug points for tests.
    """

    def __init__(
        self,
        base_url: str,
        token: ApiToken,
        *,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        startup_retry: RetryPolicy = STARTUP_RETRY,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: VerifyTypes = True,
        user_agent: str = DEFAULT_USER_AGENT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._base_url = validate_base_url(base_url, allow_custom_host=True)
        url = httpx.URL(self._base_url)
        self._host = self._base_url.split("://", 1)[1]
        self._token = token
        self._limiter = limiter if limiter is not None else RateLimiter()
        self._retry = retry if retry is not None else RetryPolicy()
        self._startup_retry = startup_retry
        self._sleep = sleep
        self._now = now
        self._clock_offset: timedelta | None = None
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            auth=_BearerAuth(url, token),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            timeout=timeout,
            verify=_ssl_context(verify, url.host),
            follow_redirects=False,
            http1=True,
            http2=False,
            transport=transport,
            event_hooks={"response": [self._note_server_date]},
        )

    async def _note_server_date(self, response: httpx.Response) -> None:
        """Remember how far the API's clock (its `Date` header) is from ours."""
        date = response.headers.get("Date")
        if not date:
            return
        try:
            server = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            return
        if server.tzinfo is None:
            return
        self._clock_offset = server - self._now()

    @property
    def clock_offset(self) -> timedelta | None:
        """The API's clock minus ours, from the last answer's `Date` header (1 s resolution), or
        None before any answer carried one."""
        return self._clock_offset

    def api_now(self) -> datetime:
        """Now, by the API's clock when it is known to be behind ours.

        Where a run starts and where the live cursor begins are times in the API's clock: taking a
        time from a fast local clock would ask for events "from the future" and skip the ones the
        API stamps meanwhile. A local clock that is behind only makes the overlap larger, so it is
        kept."""
        local = self._now()
        if self._clock_offset is not None and self._clock_offset < -_DATE_RESOLUTION:
            return local + self._clock_offset
        return local

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    async def __aenter__(self) -> EventsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        await self._http.aclose()

    # -- public calls -----------------------------------------------------------------------------

    async def introspect(self) -> Introspection:
        """`GET /api/v2/auth/introspect`: the token's integration, features and account.

        Raises AuthError on 401 (at once), UserError naming the host when it cannot be reached
        (refused, DNS, TLS; a couple of quick tries), RetriableError when the server stays in
        trouble (5xx/429), FatalError for any other answer or a malformed body.
        """

        def parse(response: httpx.Response) -> Introspection:
            try:
                return Introspection.model_validate(orjson.loads(response.content))
            except orjson.JSONDecodeError as exc:
                raise MalformedResponse("body is not valid JSON (truncated?)") from exc
            except ValidationError as exc:
                fields = sorted({str(err["loc"][0]) for err in exc.errors() if err["loc"]})
                # `from None`: pydantic's text quotes the input, which may echo anything.
                raise MalformedResponse(f"unexpected introspect body (fields: {', '.join(fields)})") from None

        def refused(response: httpx.Response) -> OpSentinelError:
            if response.status_code == 401:
                return AuthError(
                    f"the Events API rejected the token (401): check it is current and was issued "
                    f"for {self._host}"
                )
            return self._unexpected(response, "GET", INTROSPECT_V2_PATH)

        return await self._call(
            "GET",
            INTROSPECT_V2_PATH,
            None,
            self._startup_retry,
            parse=parse,
            refused=refused,
            subject="introspect",
            startup=True,
        )

    async def fetch_page(
        self,
        stream: StreamSpec,
        body: dict[str, Any],
        *,
        priority: bool = False,
        admit: Callable[[], None] | None = None,
    ) -> Page:
        """POST `body` (a cursor or ResetCursor, see CursorPager) to the stream; return the Page.

        `priority` requests (a live cursor's) go before others waiting for the rate limiter. `admit`
        is called right before every try is sent (after the rate limiter's wait) and may raise to
        stop it.

        Retries per the policy (a 429 also pauses the shared limiter for every stream). Raises
        AuthError on 401, CursorRejected on 400 to a cursor body, FatalError on any other 400, on
        other unexpected statuses and on a body still malformed after the retries, RetriableError
        (RateLimited for 429) when retries are exhausted.
        """
        request = dict(body)

        def parse(response: httpx.Response) -> Page:
            return parse_page(stream.name, response.content, request)

        def refused(response: httpx.Response) -> OpSentinelError:
            status = response.status_code
            if status == 401:
                return AuthError(
                    f"the Events API rejected the token for {stream.name} (401): the token may lack "
                    f"the '{stream.feature}' feature, or it was revoked or has expired"
                )
            if status == 400:
                message = self._server_message(response)
                if request.get("cursor"):
                    return CursorRejected(
                        f"the Events API refused the stored cursor for {stream.name} (400): {message}",
                        status=400,
                    )
                return FatalError(
                    f"the Events API refused the request for {stream.name} (400): {message}", status=400
                )
            return self._unexpected(response, "POST", stream.path)

        return await self._call(
            "POST",
            stream.path,
            request,
            self._retry,
            parse=parse,
            refused=refused,
            subject=stream.name,
            startup=False,
            priority=priority,
            admit=admit,
        )

    async def _send(
        self, method: str, path: str, content: bytes | None, headers: dict[str, str] | None
    ) -> httpx.Response:
        """Send and read the whole response. httpx.Response sits in a reference cycle (with its
        stream) that only the cycle collector frees, and `.content` would keep each page's body
        alive with it; so the body is read here and the Response is handed on with a fresh,
        acyclic copy of it."""
        request = self._http.build_request(method, path, content=content, headers=headers)
        streamed = await self._http.send(request, stream=True)
        if streamed.is_stream_consumed:  # read by the transport already (an in-memory test double)
            return streamed
        try:
            raw = b"".join([chunk async for chunk in streamed.aiter_raw()])
        finally:
            await streamed.aclose()
        return httpx.Response(streamed.status_code, headers=streamed.headers, content=raw, request=request)

    # -- the one retry loop -----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        policy: RetryPolicy,
        *,
        parse: Callable[[httpx.Response], T],
        refused: Callable[[httpx.Response], OpSentinelError],
        subject: str,
        startup: bool,
        priority: bool = False,
        admit: Callable[[], None] | None = None,
    ) -> T:
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        attempt = 0
        while True:
            attempt += 1
            await self._limiter.acquire(priority=priority)
            if admit is not None:
                admit()
            try:
                response = await self._send(method, path, content, headers)
            except httpx.TransportError as exc:
                action = policy.classify(exc)
                if action.should_retry and attempt < policy.max_attempts:
                    await self._backoff(method, path, action.reason, attempt, policy)
                    continue
                raise self._unreachable(
                    exc, subject, attempt, startup, retriable=action.should_retry
                ) from exc

            action = policy.classify(response)
            status = response.status_code
            logger.debug("%s %s -> %d (attempt %d)", method, path, status, attempt)
            if action.kind is RetryKind.SUCCESS:
                try:
                    return parse(response)
                except MalformedResponse as exc:
                    if attempt < policy.max_attempts:
                        await self._backoff(method, path, f"malformed body: {exc}", attempt, policy)
                        continue
                    raise FatalError(
                        f"malformed response from {self._host}{path} after {_attempts(attempt)}: {exc}"
                    ) from exc
            if not action.should_retry:
                if 300 <= status < 400:
                    raise self._redirected(response, path)
                raise refused(response)

            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self._now())
            delay = policy.delay(attempt, retry_after)
            if status == 429:
                # Every stream shares the budget, so every stream waits: acquire() does the waiting,
                # for this caller's retry too. Paused even when retries are spent.
                self._limiter.pause_for(delay)
            if attempt < policy.max_attempts:
                self._log_retry(method, path, action.reason, attempt, policy, delay)
                if status != 429:
                    await self._sleep(delay)
                continue
            if status == 429:
                raise RateLimited(
                    f"the Events API at {self._host} kept answering 429 (rate limited) for {subject} "
                    f"after {_attempts(attempt)}",
                    retry_after=retry_after,
                )
            raise RetriableError(
                f"the Events API at {self._host} answered {status} for {subject} after {_attempts(attempt)}: "
                f"{self._server_message(response)}",
                status=status,
            )

    async def _backoff(self, method: str, path: str, reason: str, attempt: int, policy: RetryPolicy) -> None:
        delay = policy.delay(attempt)
        self._log_retry(method, path, reason, attempt, policy, delay)
        await self._sleep(delay)

    def _log_retry(
        self, method: str, path: str, reason: str, attempt: int, policy: RetryPolicy, delay: float
    ) -> None:
        logger.warning(
            "%s %s: %s; retry %d/%d in %.1f s",
            method,
            path,
            scrub(reason, secrets=(self._token.reveal(),)),
            attempt + 1,
            policy.max_attempts,
            delay,
        )

    # -- translating failures ---------------------------------------------------------------------

    def _server_message(self, response: httpx.Response) -> str:
        """What the server said, from either error shape or plain text; scrubbed, one short line."""
        body = response.content
        message: str | None = None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            error = data.get("Error")
            if isinstance(error, dict) and isinstance(error.get("Message"), str):
                message = error["Message"]  # spec <= 1.2.0: {"Error": {"Message": ...}}
            elif isinstance(data.get("message"), str):
                message = data["message"]  # spec 1.4.1: {"status": ..., "message": ...}
            elif isinstance(error, str):
                message = error
        if message is None:
            text = body.decode("utf-8", errors="replace").strip()
            if text.startswith("<"):
                return "(an HTML page instead of a JSON error)"
            message = text
        cleaned = scrub(message, secrets=(self._token.reveal(),), limit=200)
        return cleaned or "(no message)"

    def _unexpected(self, response: httpx.Response, method: str, path: str) -> FatalError:
        return FatalError(
            f"the Events API at {self._host} answered {response.status_code} to {method} {path}: "
            f"{self._server_message(response)}",
            status=response.status_code,
        )

    def _redirected(self, response: httpx.Response, path: str) -> FatalError:
        location = response.headers.get("Location")
        target = "an unnamed location"
        if location:
            try:
                target = response.request.url.join(location).host or target
            except (httpx.InvalidURL, ValueError):
                target = "an invalid location"
        return FatalError(
            f"the Events API at {self._host} redirected {path} to {target} ({response.status_code}); "
            f"redirects are not followed so the token never leaves {self._host}: check the base URL",
            status=response.status_code,
        )

    def _unreachable(
        self, exc: httpx.TransportError, subject: str, attempt: int, startup: bool, *, retriable: bool
    ) -> OpSentinelError:
        reason = scrub(_describe_transport_error(exc), secrets=(self._token.reveal(),))
        tries = f" after {attempt} attempts" if attempt > 1 else ""
        if startup:
            return UserError(f"cannot reach the Events API at {self._host}: {reason}{tries}")
        message = f"cannot reach the Events API at {self._host} for {subject}{tries}: {reason}"
        return RetriableError(message) if retriable else FatalError(message)
