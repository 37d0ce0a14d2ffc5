"""The live chain: the stream's persistent cursor, followed page by page, pages delivered in order.

It starts (on a first run) at the stream's `live_start`, the late window before the first run began,
so an event that reaches the API up to the late window after its own time is still read by it, while
history older than that is read by the backfill slices. It owns the events stamped at or after
`live_start`; along its unbroken cursor any later arrival is read, however late.

When the API rejects the stored cursor, the chain restarts from its newest delivered event time
minus the late window: whatever arrives late and is not indexed yet is still in the new window, and
what the new window repeats is dropped again (DuckDB by uuid, other sinks through the ledger).

A fetcher reads ahead while a deliverer stages and commits pages in order; the fetcher asks the rate
limiter first (the live chain keeps its share while history is read).
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from opsentinel.backfill import PAD
from opsentinel.errors import CursorRejected
from opsentinel.pipeline.stream import Delivery, Stream, Update, later, owned
from opsentinel.source.paging import CursorPager
from opsentinel.state import Checkpoint

if TYPE_CHECKING:
    from opsentinel.pipeline import Pipeline

log = logging.getLogger("opsentinel.pipeline")


class LiveChain:
    """The live cursor of one stream for one session; `drain()` pages until `has_more` is false."""

    def __init__(self, pipeline: Pipeline, stream: Stream) -> None:
        self.p = pipeline
        self.stream = stream
        self.pager: CursorPager | None = None

    def restart_point(self) -> datetime:
        """Where a rejected cursor restarts: the late window before the chain last caught up (all
        indexed before that moment was read; what arrives later late by up to the window is stamped
        after this point), and never before `live_start` (older events are history's). A chain that
        never caught up is still reading its start: it starts over from there."""
        start = self.stream.live_start or self.p.first_start
        caught_up = self.stream.committed.caught_up_at
        if caught_up is None:
            return max(start, self.p.floor())
        return max(caught_up - self.p.late_window, start, self.p.floor())

    def _reset_pager(self, start: datetime) -> CursorPager:
        return CursorPager.reset(max(start - PAD, self.p.floor()))

    def _first_pager(self) -> CursorPager:
        if self.stream.committed.cursor:
            return CursorPager.resume(self.stream.committed.cursor)
        return self._reset_pager(self.stream.live_start or self.p.first_start)

    async def drain(self, stop: asyncio.Event) -> bool:
        """Fetch and deliver until the API says `has_more: false` (True) or `stop` is set (False)."""
        queue: asyncio.Queue[Delivery | None] = asyncio.Queue(maxsize=self.p.read_ahead)
        fetcher = asyncio.create_task(self._fetch(queue, stop))
        try:
            await self._deliver_in_order(queue)
        finally:
            if not fetcher.done():
                fetcher.cancel()
            try:
                drained = await fetcher
            except asyncio.CancelledError:
                drained = False
        if drained:
            await asyncio.to_thread(self._prune_ledger)  # may rewrite the ledger (a file, or a blob)
        return drained

    async def _fetch(self, queue: asyncio.Queue[Delivery | None], stop: asyncio.Event) -> bool:
        try:
            drained = await self._fetch_pages(queue, stop)
        except asyncio.CancelledError:
            raise  # the deliverer is gone (it cancelled us): nobody waits for the end marker
        except BaseException:
            await queue.put(None)  # let the deliverer finish what was fetched, then see the error
            raise
        await queue.put(None)
        return drained

    async def _fetch_pages(self, queue: asyncio.Queue[Delivery | None], stop: asyncio.Event) -> bool:
        stream = self.stream
        if self.pager is None:
            self.pager = self._first_pager()
        pager = self.pager
        sent_cursor = stream.committed.cursor
        owns = partial(operator.le, stream.live_start) if stream.live_start is not None else None
        while True:
            asked_at = self.p.client.api_now()
            try:
                page = await self.p.client.fetch_page(
                    stream.spec, pager.next_request(), priority=True, admit=self.p.gate(stream.name, "fetch")
                )
            except CursorRejected as exc:
                restart = self.restart_point()
                log.warning(
                    "stream=%s the API rejected the stored cursor (%s); reading again from %s (the late "
                    "window before it last caught up); what was delivered is not sent again",
                    stream.name,
                    exc,
                    restart.isoformat(),
                )
                pager = self.pager = self._reset_pager(restart)
                continue
            pager.update(page)
            stream.report_rejected(page)
            events: Sequence[Mapping[str, Any]] = page.events
            times: Sequence[datetime] = page.times
            if owns is not None:
                events, times = owned(page, owns)
            events, times, ignored = stream.without_known(events, times)
            page_newest = max(times) if times else None
            await queue.put(
                Delivery(
                    events,
                    times,
                    _live_update(page.cursor, page_newest, None if page.has_more else asked_at),
                    page.has_more,
                    changes_cursor=page.cursor != sent_cursor,
                    rejected=len(page.rejected),
                    ignored=ignored,
                    live=True,
                )
            )
            sent_cursor = page.cursor
            if pager.drained:
                return True
            if stop.is_set():
                return False

    async def _deliver_in_order(self, queue: asyncio.Queue[Delivery | None]) -> None:
        p, stream = self.p, self.stream
        in_flight: deque[tuple[Delivery, asyncio.Future[None]]] = deque()
        # Transactional: the next page is prepared while the head commits; commits stay one at a time.
        limit = 2 if p.sink.transactional else max(1, p.max_in_flight)
        next_item: asyncio.Future[Delivery | None] | None = None
        try:
            while True:
                next_item = asyncio.ensure_future(queue.get())
                # While the next page is on its way, commit the head as soon as its stage is done.
                while in_flight and not next_item.done():
                    waiting: list[asyncio.Future[Any]] = [next_item, in_flight[0][1]]
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if in_flight[0][1].done():
                        await self._commit_head(in_flight)
                item = await next_item
                if item is None:
                    break
                stream.live_in_flight += 1
                in_flight.append((item, asyncio.ensure_future(stream.stage(item))))
                while len(in_flight) >= limit:
                    await self._commit_head(in_flight)
            while in_flight:
                await self._commit_head(in_flight)
        finally:
            if next_item is not None:
                next_item.cancel()
            for _, task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*(task for _, task in in_flight), return_exceptions=True)
            stream.live_in_flight -= len(in_flight)

    async def _commit_head(self, in_flight: deque[tuple[Delivery, asyncio.Future[None]]]) -> None:
        item, task = in_flight[0]
        await task  # raises if the sink refused the page: nothing after it is committed
        await self.stream.commit(item)
        in_flight.popleft()
        self.stream.live_in_flight -= 1

    def _prune_ledger(self) -> None:
        """Forget what no re-read can return any more; only now, with nothing of this chain in
        flight, so no page that is still to be read again loses its protection."""
        ledger = self.stream.ledger
        if ledger is None or self.stream.live_in_flight:
            return
        horizon = self.restart_point() - 2 * PAD
        keep_before = self.stream.live_start if self.stream.backfilling else None
        ledger.prune(horizon, keep_before)


def _live_update(cursor: str, newest: datetime | None, caught_up: datetime | None) -> Update:
    def apply(cp: Checkpoint) -> Checkpoint:
        return replace(
            cp,
            cursor=cursor,
            newest_event_time=later(cp.newest_event_time, newest),
            caught_up_at=later(cp.caught_up_at, caught_up),
        )

    return apply
