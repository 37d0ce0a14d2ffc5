"""A first run's history: planning it (see `backfill`) and paging its slices with a pool of workers.

Planning asks the API for the first page of the whole history window. When that page holds all of
it, it is the history (delivered as slice 0's first page); otherwise its time span tells how dense
the history is, and so how many slices to cut. Workers take slices newest first; each slice pages its
own chain until the API says `has_more: false` and keeps only the events it owns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opsentinel.backfill import (
    PAGES_PER_SLICE,
    BackfillPlan,
    Slice,
    estimate_pages,
    make_plan,
    needs_plan,
    slice_count,
)
from opsentinel.errors import CursorRejected
from opsentinel.pipeline.stream import Delivery, Stream, later
from opsentinel.source.paging import CursorPager, Page
from opsentinel.state import Checkpoint
from opsentinel.streams import StreamSpec

if TYPE_CHECKING:
    from opsentinel.pipeline import Pipeline

log = logging.getLogger("opsentinel.pipeline")


async def plan_first_run(
    pipeline: Pipeline, spec: StreamSpec, now: datetime
) -> tuple[datetime, BackfillPlan | None, dict[int, Page]]:
    """(live_start, plan or None, first pages already fetched) for a stream with no checkpoint whose
    first run begins `now` (the API's clock). Without `pipeline.send_history`, history is not read:
    the stream starts at `now`."""
    start = max(pipeline.first_start, pipeline.floor())
    if not pipeline.send_history:
        return max(start, now), None, {}
    live_start = max(start, now - pipeline.late_window)
    if not needs_plan(start, live_start, pipeline.backfill_workers):
        return start, None, {}  # the live chain reads everything
    whole = Slice(0, start, live_start)
    start_time, end_time = whole.window(pipeline.floor())
    probe = await pipeline.client.fetch_page(
        spec, CursorPager.reset(start_time, end_time).next_request(), admit=pipeline.gate(spec.name, "fetch")
    )
    if not probe.has_more:
        log.info("stream=%s first run: history up to %s fits one page", spec.name, live_start.isoformat())
        return live_start, BackfillPlan(live_start, (whole,)), {0: probe}
    pages = estimate_pages(start, live_start, probe.times)
    count = slice_count(start, live_start, pipeline.backfill_workers, pages)
    log.info(
        "stream=%s first run: reading history in %d slices, %d at a time; the live cursor starts at %s",
        spec.name,
        count,
        min(count, pipeline.backfill_workers),
        live_start.isoformat(),
    )
    return live_start, make_plan(start, live_start, count), {}


async def read_history(pipeline: Pipeline, stream: Stream, stop: asyncio.Event) -> None:
    """Page every pending slice of `stream.plan` until each is done or `stop` is set."""
    assert stream.plan is not None
    queue: asyncio.Queue[int] = asyncio.Queue()
    for s in stream.plan.pending():
        queue.put_nowait(s.id)
    workers = max(1, pipeline.backfill_workers)
    busy = 0  # workers paging a slice (which may yet be divided into queued parts)

    async def work() -> None:
        nonlocal busy
        while not stop.is_set():
            try:
                slice_id = queue.get_nowait()
            except asyncio.QueueEmpty:
                if not busy:
                    return  # nothing queued, nothing that could still queue more
                await asyncio.sleep(0.05)
                continue
            busy += 1
            try:
                await _page_slice(pipeline, stream, slice_id, stop, _Divider(queue, workers))
            finally:
                busy -= 1

    from opsentinel.pipeline import gather_or_cancel

    await gather_or_cancel([work() for _ in range(workers)])


class _Divider:
    """Divides a slice whose first page shows it dense while fewer slices are queued than workers."""

    def __init__(self, queue: asyncio.Queue[int], workers: int) -> None:
        self.queue = queue
        self.workers = workers

    def divide(self, stream: Stream, current: Slice, page: Page) -> bool:
        if stream.plan is None or not page.has_more or self.queue.qsize() >= self.workers:
            return False
        pages = estimate_pages(current.start, current.end, page.times)
        count = min(self.workers, slice_count(current.start, current.end, self.workers, pages))
        if pages < 2 * PAGES_PER_SLICE or count < 2:
            return False
        stream.plan, parts = stream.plan.divided(current.id, count)
        for part in parts:
            self.queue.put_nowait(part.id)
        log.debug("stream=%s slice %d is dense: divided in %d", stream.name, current.id, count)
        return True


class _Reach:
    """How far a slice got: `read` events of its window, in index order, were returned to it (the
    high-water mark: it never goes back), the last being `last_uuid`; `position` is where its current
    chain stands. A chain started again after a rejected cursor repeats the window from the start, so
    events at positions up to `read` are passed over (all delivered before); if the event at
    `last_uuid` comes earlier than `read` (older events left the API's retention meanwhile), the
    repeat ends there."""

    def __init__(self, s: Slice) -> None:
        self.read = s.read
        self.position = s.position
        self.last_uuid = s.last_uuid

    def restart(self) -> None:
        self.position = 0

    def new(self, uuid: Any) -> bool:
        """Count one event of the chain; True if it was not returned to the slice before."""
        self.position += 1
        if self.position <= self.read:
            if uuid == self.last_uuid:
                self.read = self.position
            return False
        self.read = self.position
        self.last_uuid = uuid if isinstance(uuid, str) else self.last_uuid
        return True


async def _page_slice(
    pipeline: Pipeline, stream: Stream, slice_id: int, stop: asyncio.Event, divider: _Divider
) -> None:
    assert stream.plan is not None
    current = stream.plan.get(slice_id)
    fresh = current.cursor is None
    floor = pipeline.floor()
    reach = _Reach(current)
    if current.expired(floor):
        log.warning("stream=%s slice %d left the API's retention before it was read", stream.name, slice_id)
        await stream.commit(_slice_delivery(slice_id, None, [], [], reach, done=True))
        return
    pager = CursorPager.resume(current.cursor) if current.cursor else _slice_pager(current, floor)
    while not stop.is_set():
        page = stream.first_pages.pop(slice_id, None)
        if page is None:
            try:
                page = await pipeline.client.fetch_page(
                    stream.spec, pager.next_request(), admit=pipeline.gate(stream.name, "fetch")
                )
            except CursorRejected:
                log.warning(
                    "stream=%s slice %d: the API rejected its cursor; reading the slice again and "
                    "passing over the %d events it already returned",
                    stream.name,
                    slice_id,
                    reach.read,
                )
                pager = _slice_pager(current, pipeline.floor())
                reach.restart()
                continue
        if fresh and divider.divide(stream, current, page):
            return  # nothing of it was delivered: its parts start afresh
        fresh = False
        pager.update(page)
        stream.report_rejected(page)
        events: list[Mapping[str, Any]] = []
        times: list[datetime] = []
        for event, moment in zip(page.events, page.times, strict=True):
            if reach.new(event.get("uuid")) and current.owns(moment):
                events.append(event)
                times.append(moment)
        kept, kept_times, ignored = stream.without_known(events, times)
        delivery = _slice_delivery(
            slice_id, page, kept, kept_times, reach, done=pager.drained, ignored=ignored
        )
        await stream.stage(delivery)
        await stream.commit(delivery)
        if pager.drained:
            return


def _slice_pager(s: Slice, floor: datetime) -> CursorPager:
    start, end = s.window(floor)
    return CursorPager.reset(start, end)


def _slice_delivery(
    slice_id: int,
    page: Page | None,
    events: list[Mapping[str, Any]],
    times: list[datetime],
    reach: _Reach,
    *,
    done: bool,
    ignored: int = 0,
) -> Delivery:
    newest = max(times) if times else None
    cursor = page.cursor if page is not None else None
    read, position, last_uuid = reach.read, reach.position, reach.last_uuid

    def update(cp: Checkpoint) -> Checkpoint:
        return replace(cp, newest_event_time=later(cp.newest_event_time, newest))

    def progress(plan: BackfillPlan) -> BackfillPlan:
        s = plan.get(slice_id)
        return plan.with_slice(
            replace(
                s,
                cursor=cursor or s.cursor,
                progress=later(s.progress, newest),
                done=done,
                read=read,
                position=position,
                last_uuid=last_uuid,
            )
        )

    return Delivery(
        events,
        times,
        update,
        page.has_more if page is not None else False,
        changes_cursor=True,
        rejected=len(page.rejected) if page is not None else 0,
        ignored=ignored,
        plan_update=progress,
    )
