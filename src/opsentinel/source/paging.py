"""The cursor pager: a tiny state machine over request bodies, with no HTTP in it (dlt style).

A stream starts either from a stored cursor or from reset parameters. The first request of a fresh
stream is a ResetCursor `{"limit": 1000, "start_time": ...}` (+ `end_time`); every request after it
is only `{"cursor": ...}`, forever (the limit and time window travel inside the cursor; API
reference sections 3.2 and 12).

`has_more: true` with an empty page is legal ("the subsequent request could still be empty"), so the
pager just asks again. What is not legal is the server handing back the very cursor it was sent, with
`has_more: true`, again and again: the next request would be identical, so after
`max_stalled_pages` such pages in a row the pager raises FatalError("pagination loop detected").

When the server refuses a stored cursor (CursorRejected), `reset_from(newest_event_time)` restarts the
stream with a ResetCursor at the newest event already stored. That page repeats the events stored at
exactly that time (and any later ones already stored): the caller drops them with
`dedupe_after_reset(events, seen_uuids)` or relies on its store's uuid de-duplication.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from opsentinel.errors import FatalError
from opsentinel.source.page import Page
from opsentinel.timefmt import format_rfc3339

# Page is re-exported: a pager and its pages go together.
__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "CursorPager", "Page", "dedupe_after_reset"]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 1000  # more is a 400 (API reference section 3.2)


def _reset_body(start_time: datetime, end_time: datetime | None, limit: int) -> dict[str, Any]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    body: dict[str, Any] = {"limit": limit, "start_time": format_rfc3339(start_time)}
    if end_time is not None:
        if end_time <= start_time:
            raise ValueError("end_time must be after start_time")
        body["end_time"] = format_rfc3339(end_time)
    return body


class CursorPager:
    """Which body to POST next for one stream, given the pages seen so far.

    Build it with exactly one of `cursor` (a stored checkpoint) or `start_time` (aware datetime;
    optional `end_time`, `limit` 1-1000). Call `next_request()`, send it, then `update(page)` with
    the result; if the request failed, `next_request()` returns the same body again.
    """

    def __init__(
        self,
        *,
        cursor: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        limit: int = DEFAULT_LIMIT,
        max_stalled_pages: int = 3,
    ) -> None:
        if (cursor is None) == (start_time is None):
            raise ValueError("give either a stored cursor or a start_time, not both or neither")
        if cursor is not None and (end_time is not None or limit != DEFAULT_LIMIT):
            raise ValueError("end_time and limit travel inside a stored cursor; they cannot be changed")
        if cursor == "":
            raise ValueError("a stored cursor cannot be empty")
        self._limit = limit
        self._cursor = cursor
        self._reset = _reset_body(start_time, end_time, limit) if start_time is not None else None
        self._max_stalled = max_stalled_pages
        self._stalled = 0
        self._drained = False

    @classmethod
    def resume(cls, cursor: str, *, max_stalled_pages: int = 3) -> CursorPager:
        """A pager continuing from a stored cursor."""
        return cls(cursor=cursor, max_stalled_pages=max_stalled_pages)

    @classmethod
    def reset(
        cls,
        start_time: datetime,
        end_time: datetime | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        max_stalled_pages: int = 3,
    ) -> CursorPager:
        """A pager for a stream with no checkpoint: the first request is a ResetCursor."""
        return cls(start_time=start_time, end_time=end_time, limit=limit, max_stalled_pages=max_stalled_pages)

    @property
    def cursor(self) -> str | None:
        """The cursor the next cursor request would send (None before the first page of a reset)."""
        return self._cursor

    @property
    def drained(self) -> bool:
        """True once the last page said `has_more: false` (until the next page arrives)."""
        return self._drained

    @property
    def resetting(self) -> bool:
        """True while the next request is a ResetCursor."""
        return self._reset is not None

    def next_request(self) -> dict[str, Any]:
        """The body to POST next: the pending ResetCursor, else `{"cursor": ...}`."""
        if self._reset is not None:
            return dict(self._reset)
        assert self._cursor is not None  # guaranteed by the constructor and update()
        return {"cursor": self._cursor}

    def update(self, page: Page) -> None:
        """Take the page the last `next_request()` produced. Raises FatalError on a pagination loop."""
        sent = None if self._reset is not None else self._cursor
        if page.has_more and page.cursor == sent:
            self._stalled += 1
            if self._stalled > self._max_stalled:
                raise FatalError(
                    f"pagination loop detected on {page.stream}: the server returned the cursor it was "
                    f"sent, with has_more=true, {self._stalled} times in a row"
                )
        else:
            self._stalled = 0
        self._reset = None
        self._cursor = page.cursor
        self._drained = not page.has_more

    def reset_from(self, start_time: datetime, *, end_time: datetime | None = None) -> None:
        """Make the next request a ResetCursor at `start_time` (after a rejected cursor)."""
        self._reset = _reset_body(start_time, end_time, self._limit)
        self._stalled = 0
        self._drained = False


def dedupe_after_reset(events: Iterable[dict[str, Any]], seen_uuids: Iterable[str]) -> list[dict[str, Any]]:
    """The events whose `uuid` is not in `seen_uuids`, in order (for the first pages after a reset)."""
    seen = set(seen_uuids)
    return [event for event in events if event.get("uuid") not in seen]
