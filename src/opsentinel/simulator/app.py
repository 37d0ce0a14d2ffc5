"""The simulator's HTTP-free core: `SimulatorApp.handle(request) -> Response`.

Order of checks for every request: route (404, 405 with Allow), injected before-faults (error status,
connection reset), bearer token (401), feature (401), rate limit (429), body (400), cursor (400), then
the page. Injected after-faults (truncated or stalled body, empty page with `has_more`) apply to
successful answers only. The transport (`server.py`) carries out delays and byte-level faults that
the response asks for, so everything here is testable without sockets.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from http import HTTPStatus
from typing import Any

import orjson

from opsentinel.events import FEATURES
from opsentinel.simulator.bodies import BadRequest, CursorRequest, parse_body
from opsentinel.simulator.config import SimulatorConfig
from opsentinel.simulator.cursors import CursorCodec, CursorState, InvalidCursor, account_tag
from opsentinel.simulator.data import EventFactory
from opsentinel.simulator.faults import AFTER_KINDS, BEFORE_KINDS, DELIVERY_KINDS, FaultKind, FaultPlan
from opsentinel.simulator.pool import build_pool
from opsentinel.simulator.ratelimit import RateLimiter
from opsentinel.simulator.rfc3339 import NS, format_seconds, to_ns
from opsentinel.simulator.store import StreamLog
from opsentinel.simulator.tokens import InvalidToken, TokenAuthority, TokenClaims
from opsentinel.streams import INTROSPECT_V1_PATH, INTROSPECT_V2_PATH, STREAM_NAMES, STREAMS

log = logging.getLogger("opsentinel.simulator")

JSON_TYPE = "application/json; charset=utf-8"
DAY_NS = 86_400 * NS


class Delivery(StrEnum):
    """How the transport sends a response."""

    NORMAL = "normal"
    TRUNCATE = "truncate"  # Content-Length and body cut to half the JSON
    STALL = "stall"  # full Content-Length, half the body, silence, then close
    RESET = "reset"  # no response: TCP reset


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes | None = None  # None: the request had no body


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delivery: Delivery = Delivery.NORMAL
    delay: float = 0.0  # seconds to wait before answering
    stall_seconds: float = 0.0
    fault: str | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One handled request, for assertions: never holds the token or the body."""

    method: str
    path: str
    status: int | None  # None: the connection was reset instead
    fault: str | None
    cursor: bool  # a Cursor (continuation) request rather than a ResetCursor
    at_ns: int
    user_agent: str = ""


@dataclass(frozen=True)
class _Route:
    method: str
    stream: str | None  # None: introspect
    v1: bool


ROUTES: dict[str, _Route] = {
    INTROSPECT_V2_PATH: _Route("GET", None, False),
    INTROSPECT_V1_PATH: _Route("GET", None, True),
    **{s.path: _Route("POST", s.name, False) for s in STREAMS},
    **{s.v1_path: _Route("POST", s.name, True) for s in STREAMS},
}


class _ApiError(Exception):
    def __init__(self, status: int, detail: str = "", headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or []


class SimulatorApp:
    """The simulated account, its streams and the rules it serves them by. Thread-safe."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock = config.resolved_clock()
        self.started_ns = to_ns(config.now) if config.now is not None else self.clock()
        self.pool = build_pool(config.seed)
        self.account_uuid = self.pool.account_uuid
        self.factory = EventFactory(config.seed, self.pool)
        history_start = self.started_ns - int(config.days * DAY_NS)
        self.logs = {
            name: StreamLog(
                name,
                seed=config.seed,
                count=config.events,
                start_ns=history_start,
                end_ns=self.started_ns,
                trickle_per_minute=config.trickle,
                clock=self.clock,
            )
            for name in STREAM_NAMES
        }
        self.tokens = TokenAuthority(
            seed=config.seed,
            audience=config.audience,
            account_uuid=self.account_uuid,
            subject=self.pool.integration_uuid,
            clock=self.clock,
        )
        self.faults = FaultPlan(
            config.faults, latency=config.latency, page_cap=config.page_cap, seed=config.seed
        )
        secret = hashlib.sha256(f"{config.seed}:cursor-key".encode()).digest()
        self.cursors = CursorCodec(secret, epoch=lambda: self.faults.cursor_epoch)
        self.limiter = RateLimiter(
            per_minute=config.rate_limit_per_minute, per_hour=config.rate_limit_per_hour, clock=self.clock
        )
        self._log_lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=config.request_log_size)

    # -- public helpers for tests and the server ------------------------------------------------------

    @property
    def request_log(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._records)

    def clear_request_log(self) -> None:
        with self._log_lock:
            self._records.clear()

    def issue_token(self, **kwargs: Any) -> str:
        """See `TokenAuthority.issue`."""
        return self.tokens.issue(**kwargs)

    def add_events(self, stream: str, n: int = 1, *, at: datetime | None = None) -> list[dict[str, Any]]:
        """Append `n` events to `stream` stamped now, or at `at` (a late event when in the past)."""
        seqs = self.logs[stream].add(n, None if at is None else to_ns(at))
        return [self.event(stream, seq) for seq in seqs]

    def event(self, stream: str, seq: int, *, version: int = 2) -> dict[str, Any]:
        """Event number `seq` of `stream` exactly as the V1 or V2 endpoint serves it (a fresh copy)."""
        ev = self.factory.build(stream, seq, self.logs[stream].ts(seq), v1=version == 1)
        copy: dict[str, Any] = orjson.loads(orjson.dumps(ev))
        return copy

    def events(self, stream: str, *, version: int = 2) -> Iterator[dict[str, Any]]:
        """Every event of `stream` present now, in chain order (fresh copies)."""
        for seq, ts in self.logs[stream].snapshot():
            yield orjson.loads(orjson.dumps(self.factory.build(stream, seq, ts, v1=version == 1)))

    # -- request handling -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises (an internal error becomes a 500)."""
        path = request.path.split("?", 1)[0]
        cursor_request = False
        try:
            response, cursor_request = self._dispatch(request, path)
        except _ApiError as exc:
            response = self._error(path, exc.status, exc.detail, exc.headers)
        except Exception:
            log.exception("simulator: internal error on %s %s", request.method, path)
            response = self._error(path, 500, "internal error")
        delay = self.faults.latency
        rule = self.faults.take(path, frozenset({FaultKind.LATENCY}))
        if rule is not None:
            delay += rule.seconds
        response.delay = delay
        with self._log_lock:
            self._records.append(
                RequestRecord(
                    request.method,
                    path,
                    None if response.delivery is Delivery.RESET else response.status,
                    response.fault,
                    cursor_request,
                    self.clock(),
                    request.headers.get("user-agent", "")[:200],
                )
            )
        return response

    def _dispatch(self, request: Request, path: str) -> tuple[Response, bool]:
        route = ROUTES.get(path)
        if route is None:
            raise _ApiError(404, f"no such endpoint: {path[:100]}")
        if request.method != route.method:
            raise _ApiError(405, f"use {route.method}", [("Allow", route.method)])
        rule = self.faults.take(path, BEFORE_KINDS)
        if rule is not None:
            if rule.kind is FaultKind.RESET:
                return Response(0, delivery=Delivery.RESET, fault=rule.kind.value), False
            headers = [("Retry-After", str(rule.retry_after))] if rule.retry_after is not None else []
            response = self._error(path, rule.status, "injected fault", headers)
            response.fault = rule.kind.value
            return response, False
        claims = self._authenticate(request)
        if route.stream is not None and route.stream not in claims.features:
            raise _ApiError(401, f"token is not scoped for {route.stream}")
        wait = self.limiter.hit(claims.account_uuid or claims.subject)
        if wait is not None:
            headers = [("Retry-After", str(wait))] if self.config.retry_after else []
            raise _ApiError(429, "rate limit exceeded", headers)
        if route.stream is None:
            response, cursor_request = self._introspect(claims, route.v1), False
        else:
            response, cursor_request = self._page(request, path, route.stream, route.v1, claims)
        if response.delivery is Delivery.NORMAL and response.fault is None:
            rule = self.faults.take(path, DELIVERY_KINDS)
            if rule is not None:
                response.delivery = Delivery(rule.kind.value)
                response.stall_seconds = rule.seconds
                response.fault = rule.kind.value
        return response, cursor_request

    def _authenticate(self, request: Request) -> TokenClaims:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _ApiError(401, "missing bearer token")
        try:
            return self.tokens.verify(token.strip())
        except InvalidToken as exc:
            raise _ApiError(401, str(exc)) from exc

    def _introspect(self, claims: TokenClaims, v1: bool) -> Response:
        issued = format_seconds(claims.issued_at * NS)
        features = [f for f in FEATURES if f in claims.features]
        if v1:
            body: dict[str, Any] = {"UUID": claims.subject, "IssuedAt": issued, "Features": features}
        else:
            body = {
                "uuid": claims.subject,
                "issued_at": issued,
                "features": features,
                "account_uuid": claims.account_uuid or self.account_uuid,
            }
        return _json(200, body)

    def _page(
        self, request: Request, path: str, stream: str, v1: bool, claims: TokenClaims
    ) -> tuple[Response, bool]:
        now = self.clock()
        try:
            parsed = parse_body(
                request.body,
                now_ns=now,
                retention_ns=int(self.config.retention_days * DAY_NS),
                missing_is_reset=self.config.missing_body == "reset",
            )
        except BadRequest as exc:
            raise _ApiError(400, str(exc)) from exc
        tag = account_tag(claims.account_uuid or self.account_uuid)
        if isinstance(parsed, CursorRequest):
            try:
                state = self.cursors.decode(parsed.cursor)
            except InvalidCursor as exc:
                raise _ApiError(400, str(exc)) from exc
            if state.stream != stream:
                raise _ApiError(400, f"cursor belongs to {state.stream}, not {stream}")
            if state.account_tag != tag:
                raise _ApiError(400, "cursor belongs to another account")
        else:
            state = CursorState(stream, 0, parsed.limit, parsed.start_ns, parsed.end_ns, tag)
        log_ = self.logs[stream]
        rule = self.faults.take(path, AFTER_KINDS - DELIVERY_KINDS)
        if rule is not None:  # EMPTY_HAS_MORE: keep the chain's place, deliver nothing
            cursor = parsed.cursor if isinstance(parsed, CursorRequest) else self.cursors.encode(state)
            response = _json(200, {"cursor": cursor, "has_more": True, "items": []})
            response.fault = rule.kind.value
            return response, isinstance(parsed, CursorRequest)
        cap = self.faults.page_cap
        want = state.limit if cap is None else min(state.limit, cap)
        page = log_.page(state.position, state.start_ns, state.end_ns, want)
        if not page.events and isinstance(parsed, CursorRequest):
            cursor = parsed.cursor  # nothing new: the same cursor comes back
        else:
            cursor = self.cursors.encode(
                CursorState(stream, page.next_position, state.limit, state.start_ns, state.end_ns, tag)
            )
        build = self.factory.build
        items = [build(stream, seq, ts, v1=v1) for seq, ts in page.events]
        body = {"cursor": cursor, "has_more": page.has_more, "items": items}
        return _json(200, body), isinstance(parsed, CursorRequest)

    def _error(
        self, path: str, status: int, detail: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        message = f"{reason}: {detail}" if detail else reason
        style = self.config.error_style
        if style == "auto":
            style = "v1" if path.startswith("/api/v1/") or path == INTROSPECT_V1_PATH else "v2"
        body: dict[str, Any]
        body = {"Error": {"Message": message}} if style == "v1" else {"status": status, "message": message}
        response = _json(status, body)
        response.headers.extend(headers or [])
        return response


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, orjson.dumps(body), [("Content-Type", JSON_TYPE)])
