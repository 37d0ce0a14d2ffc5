"""A pre-rendered Events API in a child process: every event's JSON built before any request.

    python -m bench.prerendered_server --events N --days D --token-file PATH [--seed S] [--port 0]

What a real API looks like from the client: the work is on another machine, and an answer costs the
client only the bytes. `N` events are spread over the three streams (N // 3 each, the remainder to the
first), stamped over the `D` days before start-up exactly as the simulator stamps its history, with
the simulator's own event content (`EventFactory`), so pages are as large and as varied as its pages.
Each stream's events are serialised once, at start-up, into one buffer (`e0,e1,e2,...`) with an
offsets array; a page is the envelope around one slice of that buffer, written to the socket
without copying the events. It prints `base URL: ...` and, once every event is built, `ready`.

It answers what op-sentinel and the download-only client ask (V2 paths only):

- `GET /api/v2/auth/introspect`: the three features and an account uuid;
- `POST /api/v2/<stream>` with a ResetCursor (`limit`, `start_time`, `end_time`, all optional; no
  `end_time` means up to the newest event) or a `{"cursor": ...}` from an earlier page. Events come
  in index order (= time order), each exactly once along a chain; `has_more` says whether the window
  holds more. A cursor at the end comes back unchanged with no items. Cursors are opaque to the
  client: base64url of (stream, position, window end, limit) plus a check byte pattern;
- `GET /_bench/stats`: requests, pages and items served so far (the benchmark reads it).

The bearer token must equal the one written to `--token-file`. Anything else is a JSON error
(400, 401, 404, 405) in the V2 shape. HTTP/1.1 with keep-alive on one asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import secrets
import struct
import sys
import time
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from opsentinel.simulator.data import EventFactory
from opsentinel.simulator.pool import build_pool
from opsentinel.simulator.rfc3339 import NS, parse_ns
from opsentinel.simulator.store import StreamLog
from opsentinel.streams import INTROSPECT_V2_PATH, STREAMS

DAY_NS = 86_400 * NS
HOUR_NS = 3600 * NS
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
STATS_PATH = "/_bench/stats"
_CURSOR = struct.Struct(">4sBQQH")  # magic, stream index, position, window end (exclusive), limit
_MAGIC = b"pre1"
_HEAD_END = b"\r\n\r\n"


@dataclass
class StreamData:
    """One stream's events: JSON bytes back to back with a comma after each, offsets, timestamps."""

    name: str
    index: int
    buffer: bytearray
    offsets: array[int]  # offsets[i] = where event i starts; offsets[n] = len(buffer)
    times: array[int]  # ns, non-decreasing (history order is time order)

    @property
    def count(self) -> int:
        return len(self.times)

    def items(self, lo: int, hi: int) -> memoryview:
        """Events lo..hi-1 as `e,e,e` (no trailing comma); empty for lo == hi."""
        if lo >= hi:
            return memoryview(b"")
        return memoryview(self.buffer)[self.offsets[lo] : self.offsets[hi] - 1]


def build_stream(name: str, index: int, count: int, *, seed: int, start_ns: int, end_ns: int) -> StreamData:
    pool = build_pool(seed)
    factory = EventFactory(seed, pool)
    log = StreamLog(
        name,
        seed=seed,
        count=max(count, 1),
        start_ns=start_ns,
        end_ns=end_ns,
        trickle_per_minute=0,
        clock=lambda: end_ns,
    )
    buffer = bytearray()
    offsets = array("q", [0])
    times = array("q")
    dumps, build, ts = orjson.dumps, factory.build, log.history_ts
    for seq in range(count):
        moment = ts(seq)
        buffer += dumps(build(name, seq, moment))
        buffer += b","
        offsets.append(len(buffer))
        times.append(moment)
    return StreamData(name, index, buffer, offsets, times)


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Api:
    """Routing and paging over the pre-built streams. Pure apart from the counters."""

    def __init__(self, streams: list[StreamData], token: str, account_uuid: str, now_ns: int) -> None:
        self.streams = {f"/api/v2/{s.name}": s for s in streams}
        self.by_index = {s.index: s for s in streams}
        self.token = token.encode()
        self.account_uuid = account_uuid
        self.now_ns = now_ns
        self.requests = self.pages = self.items = 0

    def handle(self, method: str, path: str, auth: bytes, body: bytes) -> tuple[int, list[Any]]:
        """(status, body parts) for one request."""
        if path == STATS_PATH:  # not counted: the benchmark's own question
            return 200, [orjson.dumps({"requests": self.requests, "pages": self.pages, "items": self.items})]
        self.requests += 1
        try:
            stream = self.streams.get(path)
            if stream is None and path != INTROSPECT_V2_PATH:
                raise BadRequest(404, f"no such endpoint: {path[:100]}")
            if method != ("GET" if stream is None else "POST"):
                raise BadRequest(405, "method not allowed")
            scheme, _, presented = auth.partition(b" ")
            if scheme.lower() != b"bearer" or presented.strip() != self.token:
                raise BadRequest(401, "invalid bearer token")
            if stream is None:
                return 200, [self._introspect()]
            return 200, self._page(stream, body)
        except BadRequest as exc:
            return exc.status, [orjson.dumps({"status": exc.status, "message": exc.message})]

    def _introspect(self) -> bytes:
        return orjson.dumps(
            {
                "uuid": "BENCHINTEGRATION0000000000",
                "issued_at": "2026-01-01T00:00:00Z",
                "features": [s.name for s in STREAMS],
                "account_uuid": self.account_uuid,
            }
        )

    def _page(self, stream: StreamData, body: bytes) -> list[Any]:
        try:
            data = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            raise BadRequest(400, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest(400, "body must be a JSON object")
        cursor = data.get("cursor")
        if cursor:
            position, end, limit = self._decode(stream, cursor)
        else:
            position, end, limit = self._window(stream, data)
        stop = min(position + limit, end)
        has_more = stop < end
        if stop == position and cursor:
            next_cursor = str(cursor)  # nothing new: the same cursor comes back
        else:
            next_cursor = self._encode(stream, stop, end, limit)
        self.pages += 1
        self.items += stop - position
        return [
            b'{"cursor":"',
            next_cursor.encode(),
            b'","has_more":true,"items":[' if has_more else b'","has_more":false,"items":[',
            stream.items(position, stop),
            b"]}",
        ]

    def _window(self, stream: StreamData, data: dict[str, Any]) -> tuple[int, int, int]:
        limit = data.get("limit", DEFAULT_LIMIT)
        if limit is None:
            limit = DEFAULT_LIMIT
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(400, f"limit must be an integer between 1 and {MAX_LIMIT}")
        end_ns = _time(data, "end_time")
        start_ns = _time(data, "start_time")
        if start_ns is None:
            start_ns = (self.now_ns if end_ns is None else end_ns) - HOUR_NS
        if end_ns is not None and start_ns > end_ns:
            raise BadRequest(400, "start_time is after end_time")
        lo = bisect_left(stream.times, start_ns)
        hi = stream.count if end_ns is None else bisect_right(stream.times, end_ns)
        return lo, max(lo, hi), limit

    def _encode(self, stream: StreamData, position: int, end: int, limit: int) -> str:
        raw = _CURSOR.pack(_MAGIC, stream.index, position, end, limit)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def _decode(self, stream: StreamData, cursor: Any) -> tuple[int, int, int]:
        if not isinstance(cursor, str) or len(cursor) > 100:
            raise BadRequest(400, "invalid cursor")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            magic, index, position, end, limit = _CURSOR.unpack(raw)
        except (binascii.Error, ValueError, struct.error):
            raise BadRequest(400, "invalid cursor") from None
        if magic != _MAGIC or index != stream.index or not position <= end <= stream.count:
            raise BadRequest(400, "invalid cursor")
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(400, "invalid cursor")
        return position, end, limit


def _time(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(400, f"{key} must be an RFC 3339 string")
    try:
        return parse_ns(value)
    except ValueError:
        raise BadRequest(400, f"{key} is not an RFC 3339 timestamp") from None


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
}


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1: request line, headers, Content-Length body; keep-alive unless asked not to."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                return
            head = bytes(self.buffer[:end]).split(b"\r\n")
            length = 0
            auth = b""
            close = False
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"authorization":
                    auth = value.strip()
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            parts = head[0].split(b" ")
            method = parts[0].decode("latin-1")
            path = parts[1].decode("latin-1").split("?", 1)[0] if len(parts) > 1 else "/"
            status, chunks = self.api.handle(method, path, auth, body)
            size = sum(len(c) for c in chunks)
            header = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
                status,
                _REASONS[status],
                size,
                b"Connection: close\r\n" if close else b"",
            )
            self.transport.writelines([header, *chunks])
            if close:
                self.transport.close()
                self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(api: Api, host: str, port: int, ready: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(api), host, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"base URL: http://{host}:{bound}", flush=True)
    print(ready, flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prerendered_server")
    parser.add_argument("--events", type=int, required=True, help="events over the three streams")
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(32)
    args.token_file.write_text(token + "\n")
    args.token_file.chmod(0o600)
    now_ns = time.time_ns()
    start_ns = now_ns - int(args.days * DAY_NS)
    per, extra = divmod(args.events, len(STREAMS))
    started = time.perf_counter()
    streams = [
        build_stream(
            s.name, i, per + (1 if i < extra else 0), seed=args.seed, start_ns=start_ns, end_ns=now_ns
        )
        for i, s in enumerate(STREAMS)
    ]
    size = sum(len(s.buffer) for s in streams)
    print(
        f"built {args.events} events ({size / 1e6:.0f} MB of JSON) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    api = Api(streams, token, build_pool(args.seed).account_uuid, now_ns)
    try:
        asyncio.run(serve(api, args.host, args.port, "ready"))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
