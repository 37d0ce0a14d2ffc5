"""The backfill plan: a first run's history cut into time slices that are paged concurrently.

A stream with no checkpoint must read everything from its start time (up to 120 days back). One
cursor chain pages that strictly one request after another; with a real round trip that runs far
below the API's 600 requests/minute. So the first run splits `[start, live_start)` into slices, each
paged with its own ResetCursor `{start_time, end_time}`, while the live chain starts at `live_start`
(the late window before now) and becomes the stream's persistent cursor.

Every event belongs to exactly one chain, decided on our side by its parsed timestamp: a slice keeps
`start <= t < end`, the live chain `t >= live_start`. Requests ask for a second more on each side, so
a boundary event is in every window that could claim it and is kept by exactly one.

Complete whatever the index order. The API returns a window's events in the order it indexed them,
and an event that reached it late (an item usage synced by a device that was offline) comes after
newer ones. So a slice is done only when its own chain says `has_more: false`: never at the first
event past its end. A slice that has started is never cut in two either: its cursor's window cannot
shrink, so whichever part kept the cursor would have to page through the other part's events anyway.
Instead a plan has several slices per worker (sized from a first probe of the history's density), so
workers that finish early take the slices still queued; and a slice whose first page shows it dense
while workers would sit idle is divided before it delivers anything (`divided`).

A slice whose cursor the API rejects starts its window again and passes over what it already
delivered: the window's events come back in the same index order, so the first `read` of them are
the ones delivered (`last_uuid`, the last of them, confirms where that prefix ends even if the oldest
events have left the API's retention meanwhile). `read` is a high-water mark kept apart from the new
chain's `position`, so a restart in the middle of passing over still knows how far to go.

The plan is plain data stored in the checkpoint (`Checkpoint.backfill`), committed with every page,
so a crash resumes the unfinished slices only. This module is pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from opsentinel.timefmt import format_rfc3339, parse_rfc3339

PLAN_VERSION = 2
PAD = timedelta(seconds=1)
MIN_SLICE = timedelta(minutes=30)
SLICES_PER_WORKER = 4
PAGES_PER_SLICE = 2  # from the density probe: fewer, larger slices would leave workers idle sooner


@dataclass(frozen=True)
class Slice:
    """One time slice `[start, end)`. `cursor` continues its chain, which stands at `position` (events
    returned by it); `read` counts the events of the window ever returned to the slice (they stay
    passed over when a rejected cursor makes it start again) and `last_uuid` names the last of them;
    `progress` is the newest event time it delivered; `done` once its chain said `has_more: false`."""

    id: int
    start: datetime
    end: datetime
    cursor: str | None = None
    progress: datetime | None = None
    done: bool = False
    read: int = 0
    last_uuid: str | None = None
    position: int = 0

    def owns(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def window(self, floor: datetime | None = None) -> tuple[datetime, datetime]:
        """The ResetCursor window that starts this slice's chain: padded by a second on each side,
        never starting before `floor` (the oldest moment the API still keeps)."""
        start = self.start - PAD
        if floor is not None and start < floor:
            start = floor
        return start, self.end + PAD

    def expired(self, floor: datetime) -> bool:
        """True when the whole slice lies before `floor`: the API keeps none of it any more."""
        return self.end + PAD <= floor

    def request(self, limit: int = 1000, floor: datetime | None = None) -> dict[str, Any]:
        start, end = self.window(floor)
        return {"limit": limit, "start_time": format_rfc3339(start), "end_time": format_rfc3339(end)}


@dataclass(frozen=True)
class BackfillPlan:
    """Slices of history plus where the live chain starts. Stored as `Checkpoint.backfill`."""

    live_start: datetime
    slices: tuple[Slice, ...] = field(default=())

    @property
    def finished(self) -> bool:
        return all(s.done for s in self.slices)

    def pending(self) -> list[Slice]:
        return [s for s in self.slices if not s.done]

    def get(self, slice_id: int) -> Slice:
        for s in self.slices:
            if s.id == slice_id:
                return s
        raise KeyError(slice_id)

    def with_slice(self, updated: Slice) -> BackfillPlan:
        return replace(self, slices=tuple(updated if s.id == updated.id else s for s in self.slices))

    def divided(self, slice_id: int, count: int) -> tuple[BackfillPlan, list[Slice]]:
        """Replace a slice that has not started (no cursor) by `count` equal parts, newest first."""
        old = self.get(slice_id)
        if old.cursor is not None:
            raise ValueError("a slice that has started cannot be divided")
        first = max(s.id for s in self.slices) + 1
        step = (old.end - old.start) / count
        bounds = [old.start + step * i for i in range(count)] + [old.end]
        parts = [Slice(first + i, bounds[i], bounds[i + 1]) for i in reversed(range(count))]
        rest = tuple(s for s in self.slices if s.id != slice_id)
        return replace(self, slices=(*rest, *parts)), parts

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "live_start": format_rfc3339(self.live_start),
            "slices": [
                {
                    "id": s.id,
                    "start": format_rfc3339(s.start),
                    "end": format_rfc3339(s.end),
                    "cursor": s.cursor,
                    "progress": format_rfc3339(s.progress) if s.progress else None,
                    "done": s.done,
                    "read": s.read,
                    "position": s.position,
                    "last_uuid": s.last_uuid,
                }
                for s in self.slices
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackfillPlan:
        """Parse a stored plan; ValueError if it is not one this version understands.

        Version 1 plans (before 0.2) are read too: their slices may have been cut at a split, with a
        cursor whose window is wider than the slice; paging such a chain to its end is slower, not
        wrong, since each slice keeps only what it owns."""
        version = data.get("version")
        if version not in (1, PLAN_VERSION):
            raise ValueError(f"unknown backfill plan version {version!r}")
        slices = tuple(
            Slice(
                id=int(s["id"]),
                start=parse_rfc3339(s["start"]),
                end=parse_rfc3339(s["end"]),
                cursor=s.get("cursor"),
                progress=parse_rfc3339(s["progress"]) if s.get("progress") else None,
                done=bool(s.get("done")),
                read=int(s.get("read") or 0),
                last_uuid=s.get("last_uuid"),
                position=int(s.get("position", s.get("read")) or 0),
            )
            for s in data["slices"]
        )
        return cls(parse_rfc3339(data["live_start"]), slices)


def needs_plan(start: datetime, live_start: datetime, workers: int) -> bool:
    """Whether history `[start, live_start)` is worth slicing at all (else the live chain reads it)."""
    return workers >= 1 and live_start - start >= MIN_SLICE


def slice_count(start: datetime, live_start: datetime, workers: int, estimated_pages: float) -> int:
    """How many slices to cut `[start, live_start)` (more than a page of events) into: about
    PAGES_PER_SLICE pages each, at least one per worker, at most SLICES_PER_WORKER per worker, none
    shorter than MIN_SLICE."""
    by_span = max(1, int((live_start - start) / MIN_SLICE))
    by_density = max(workers, 2, math.ceil(estimated_pages / PAGES_PER_SLICE))
    return max(1, min(by_span, SLICES_PER_WORKER * max(1, workers), by_density))


def estimate_pages(start: datetime, live_start: datetime, page_times: list[datetime]) -> float:
    """Pages of history, judged from a first full page: its events cover `[start, newest]`."""
    if not page_times:
        return 1.0
    covered = max(page_times) - start
    if covered <= timedelta(0):
        return float(SLICES_PER_WORKER * 32)  # one instant fills a page: assume it is dense
    return max(1.0, (live_start - start) / covered)


def make_plan(start: datetime, live_start: datetime, count: int) -> BackfillPlan:
    """`count` equal slices over `[start, live_start)`, the newest first: recent history is what a
    security team looks at first."""
    span = live_start - start
    step = span / count
    bounds = [start + step * i for i in range(count)] + [live_start]
    parts = tuple(Slice(i, bounds[i], bounds[i + 1]) for i in reversed(range(count)))
    return BackfillPlan(live_start, parts)
