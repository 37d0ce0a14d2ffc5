"""Validation of event-endpoint request bodies: a Cursor or a ResetCursor (reference section 3.2).

A body with a non-empty `cursor` is a Cursor request and every other key is ignored. Anything else
that is a JSON object is a ResetCursor: `limit` an integer 1-1000 (default 100), `start_time` and
`end_time` RFC 3339 strings (`start_time` defaults to one hour before `end_time`, or before now). The
start is clamped to the retention horizon. A `null` field counts as absent; unknown keys are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from opsentinel.simulator.rfc3339 import NS, parse_ns

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
HOUR_NS = 3600 * NS


class BadRequest(ValueError):
    """The body is not an acceptable Cursor or ResetCursor; the message says why (one line)."""


@dataclass(frozen=True)
class CursorRequest:
    cursor: str


@dataclass(frozen=True)
class ResetRequest:
    limit: int
    start_ns: int
    end_ns: int | None


def parse_body(
    body: bytes | None, *, now_ns: int, retention_ns: int, missing_is_reset: bool = True
) -> CursorRequest | ResetRequest:
    """The request a body asks for; BadRequest when it is malformed or out of range."""
    if body is None or not body.strip():
        if not missing_is_reset:
            raise BadRequest("a JSON body is required")
        data: Any = {}
    else:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    cursor = data.get("cursor")
    if cursor is not None and cursor != "":
        if not isinstance(cursor, str):
            raise BadRequest("cursor must be a string")
        return CursorRequest(cursor)
    return _reset(data, now_ns=now_ns, retention_ns=retention_ns)


def _reset(data: dict[str, Any], *, now_ns: int, retention_ns: int) -> ResetRequest:
    limit = data.get("limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif isinstance(limit, bool) or not isinstance(limit, int):
        raise BadRequest("limit must be an integer")
    elif not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    end = _time(data, "end_time")
    start = _time(data, "start_time")
    if start is not None and end is not None and start > end:
        raise BadRequest("start_time is after end_time")
    if start is None:
        start = (now_ns if end is None else end) - HOUR_NS
    start = max(start, now_ns - retention_ns)
    return ResetRequest(limit=limit, start_ns=start, end_ns=end)


def _time(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be an RFC 3339 string")
    try:
        return parse_ns(value)
    except ValueError as exc:
        raise BadRequest(f"{key} is not an RFC 3339 timestamp") from exc
