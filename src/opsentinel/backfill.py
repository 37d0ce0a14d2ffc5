"""The backfill plan: a first run's history cut into time slices that are paged concurrently.

A stream with no checkpoint must read everything from its start time (up to 120 days back). One
cursor chain pages that strictly one request after another; with a real round trip that runs far
below the API's 600 requests/minute. So the first run splits `[start, live_start)` into slices, each
paged with its own ResetCursor `{start_time, end_time}`, while one live chain starts at `live_start`
(an hour before now, so late-indexed events of the last hour still reach it) and becomes the stream's
persistent cursor.

Every event belongs to exactly one chain, decided on our side by its parsed timestamp: a slice keeps
`start <= t < end`, the live chain `t >= live_start`. Requests ask for a second more on each side, so
a boundary event is in every window that could claim it and is kept by exactly one.

The plan is plain data stored in the checkpoint (`Checkpoint.backfill`), committed with every page,
so a crash resumes the unfinished slices only. A slice that turns out dense is split when a worker
would otherwise sit idle: its owner stops at the midpoint of what is left and the rest becomes a new
slice. This module is pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from opsentinel.timefmt import format_rfc3339, parse_rfc3339

PLAN_VERSION = 1
PAD = timedelta(seconds=1)
LATE_WINDOW = timedelta(hours=1)
MIN_SLICE = timedelta(minutes=30)


@dataclass(frozen=True)
class Slice:
    """One time slice `[start, end)`. `cursor` continues its chain; `progress` is the newest event
    time it delivered; `done` once it has everything in its range."""

    id: int
    start: datetime
    end: datetime
    cursor: str | None = None
    progress: datetime | None = None
    done: bool = False

    def owns(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def remaining(self) -> timedelta:
        return self.end - (self.progress or self.start)

    def request(self, limit: int = 1000) -> dict[str, Any]:
        """The ResetCursor that starts this slice's chain (padded; the owner filters)."""
        return {
            "limit": limit,
            "start_time": format_rfc3339(self.start - PAD),
            "end_time": format_rfc3339(self.end + PAD),
        }


@dataclass(frozen=True)
class BackfillPlan:
    """Slices of history plus where the live chain starts. Stored as `Checkpoint.backfill`."""

    live_start: datetime
    slices: tuple[Slice, ...] = field(default=())
    next_id: int = 0

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

    def split(self, slice_id: int, at: datetime) -> tuple[BackfillPlan, Slice]:
        """Cut slice `slice_id` at `at`: it keeps `[start, at)`, a new slice takes `[at, end)`."""
        old = self.get(slice_id)
        if not (old.progress or old.start) < at < old.end:
            raise ValueError("split point outside the slice's remaining range")
        new = Slice(self.next_id, at, old.end)
        slices = (*(replace(s, end=at) if s.id == slice_id else s for s in self.slices), new)
        return replace(self, slices=slices, next_id=self.next_id + 1), new

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "live_start": format_rfc3339(self.live_start),
            "next_id": self.next_id,
            "slices": [
                {
                    "id": s.id,
                    "start": format_rfc3339(s.start),
                    "end": format_rfc3339(s.end),
                    "cursor": s.cursor,
                    "progress": format_rfc3339(s.progress) if s.progress else None,
                    "done": s.done,
                }
                for s in self.slices
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackfillPlan:
        """Parse a stored plan; ValueError if it is not one this version understands."""
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"unknown backfill plan version {data.get('version')!r}")
        slices = tuple(
            Slice(
                id=int(s["id"]),
                start=parse_rfc3339(s["start"]),
                end=parse_rfc3339(s["end"]),
                cursor=s.get("cursor"),
                progress=parse_rfc3339(s["progress"]) if s.get("progress") else None,
                done=bool(s.get("done")),
            )
            for s in data["slices"]
        )
        return cls(parse_rfc3339(data["live_start"]), slices, int(data["next_id"]))


def make_plan(start: datetime, now: datetime, *, slices: int) -> BackfillPlan | None:
    """A plan for history `[start, now - LATE_WINDOW)` in up to `slices` equal slices, or None when
    that range is too short to be worth splitting (the live chain alone then reads from `start`)."""
    live_start = now - LATE_WINDOW
    span = live_start - start
    if span < MIN_SLICE or slices < 1:
        return None
    count = max(1, min(slices, math.ceil(span / MIN_SLICE)))
    step = span / count
    bounds = [start + step * i for i in range(count)] + [live_start]
    parts = tuple(Slice(i, bounds[i], bounds[i + 1]) for i in range(count))
    return BackfillPlan(live_start, parts, count)


def split_point(s: Slice, min_remaining: timedelta = MIN_SLICE) -> datetime | None:
    """Where to split a busy slice so an idle worker can take the second half, or None."""
    remaining = s.remaining()
    if remaining < 2 * min_remaining:
        return None
    return (s.progress or s.start) + remaining / 2
