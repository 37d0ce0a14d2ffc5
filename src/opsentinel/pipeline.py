"""The loop: fetch a page -> hand it to the sink -> on ack commit the checkpoint, in order.

One `Pipeline` serves one account. `drain_stream` follows one stream's cursor until the API says
`has_more: false`; `poll_cycle` drains every stream once, concurrently (a serverless timer can call
it on its own). Fetching runs ahead of delivery by a few pages; checkpoints are committed strictly in
page order and only after the sink accepted the page (with the rows, in one transaction, when the sink
is transactional).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opsentinel.errors import CursorRejected, OpSentinelError
from opsentinel.sinks.base import Batch, Sink
from opsentinel.source.client import EventsClient
from opsentinel.source.paging import CursorPager, Page
from opsentinel.state import Checkpoint, CheckpointStore
from opsentinel.streams import HEALTH_LOG_SOURCE, StreamSpec
from opsentinel.telemetry import EventsRejected, PageDelivered, StreamDrained, StreamFailed, Telemetry

log = logging.getLogger("opsentinel.pipeline")


@dataclass
class StreamResult:
    """What one drain of one stream did."""

    stream: str
    events: int = 0
    pages: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    error: str | None = None

    def add(self, page: Page, delivered: int) -> None:
        self.pages += 1
        self.events += delivered
        for event_time in (page.oldest_timestamp, page.newest_timestamp):
            if event_time is None:
                continue
            if self.oldest is None or event_time < self.oldest:
                self.oldest = event_time
            if self.newest is None or event_time > self.newest:
                self.newest = event_time


@dataclass
class _Pending:
    """A page on its way to the sink, with the checkpoint its delivery earns."""

    page: Page
    events: list[Mapping[str, Any]]
    checkpoint: Checkpoint


ProgressHook = Callable[[str, StreamResult], None]


@dataclass
class Pipeline:
    """Moves one account's events from the Events API into a sink, exactly once per event.

    `store` is the checkpoint store; for a transactional sink it is the sink itself. `first_start`
    is where a stream with no checkpoint begins. `read_ahead` bounds the pages fetched but not yet
    delivered per stream (and so memory); `max_in_flight` bounds concurrent deliveries per stream
    for non-transactional sinks.
    """

    client: EventsClient
    sink: Sink
    store: CheckpointStore
    account: str
    first_start: datetime
    telemetry: Telemetry = field(default_factory=Telemetry)
    read_ahead: int = 4
    max_in_flight: int = 4
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    on_progress: ProgressHook | None = None

    async def poll_cycle(
        self, streams: Sequence[StreamSpec], stop: asyncio.Event | None = None
    ) -> list[StreamResult]:
        """Drain every stream once, concurrently; then write health rows if any are due."""
        stop = stop or asyncio.Event()
        results = await asyncio.gather(*(self.drain_stream(s, stop) for s in streams))
        return list(results)

    async def drain_stream(self, spec: StreamSpec, stop: asyncio.Event) -> StreamResult:
        """Follow `spec`'s cursor until has_more is false (or `stop` is set). Never raises for API or
        sink trouble: the error is reported to telemetry and returned in the result."""
        result = StreamResult(spec.name)
        try:
            await self._drain(spec, stop, result)
        except OpSentinelError as exc:
            result.error = str(exc)
            self.telemetry.stream_failed(StreamFailed(spec.name, str(exc), None))
            return result
        self.telemetry.stream_drained(
            StreamDrained(spec.name, result.events, result.pages, result.oldest, result.newest)
        )
        return result

    async def _drain(self, spec: StreamSpec, stop: asyncio.Event, result: StreamResult) -> None:
        committed = await asyncio.to_thread(self.store.read, self.account, spec.name)
        if committed is None:
            committed = Checkpoint(self.account, spec.name)
        queue: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=self.read_ahead)
        fetcher = asyncio.create_task(self._fetch(spec, committed, queue, stop))
        try:
            await self._deliver(spec, committed, queue, result)
        finally:
            if not fetcher.done():
                fetcher.cancel()
            # Surface the fetcher's error (if any) after delivering what it fetched.
            try:
                await fetcher
            except asyncio.CancelledError:
                pass

    async def _fetch(
        self,
        spec: StreamSpec,
        committed: Checkpoint,
        queue: asyncio.Queue[_Pending | None],
        stop: asyncio.Event,
    ) -> None:
        try:
            await self._fetch_pages(spec, committed, queue, stop)
        finally:
            await queue.put(None)

    async def _fetch_pages(
        self,
        spec: StreamSpec,
        committed: Checkpoint,
        queue: asyncio.Queue[_Pending | None],
        stop: asyncio.Event,
    ) -> None:
        if committed.cursor:
            pager = CursorPager.resume(committed.cursor)
        else:
            pager = CursorPager.reset(self.first_start)
        ahead = committed
        skip_uuids: set[str] = set()
        while True:
            request = pager.next_request()
            try:
                page = await self.client.fetch_page(spec, request)
            except CursorRejected as exc:
                restart = ahead.newest_event_time or self.first_start
                log.warning(
                    "stream=%s the API rejected the stored cursor (%s); restarting from %s",
                    spec.name,
                    exc,
                    restart.isoformat(),
                )
                pager = CursorPager.reset(restart)
                skip_uuids = set()
                continue
            pager.update(page)
            events = (
                [e for e in page.events if e.get("uuid") not in skip_uuids] if skip_uuids else page.events
            )
            if page.rejected:
                self.telemetry.events_rejected(
                    EventsRejected(spec.name, len(page.rejected), page.rejected[0].reason)
                )
            newest = ahead.newest_event_time
            if page.newest_timestamp is not None and (newest is None or page.newest_timestamp > newest):
                newest = page.newest_timestamp
            ahead = ahead.advanced(
                cursor=page.cursor,
                newest_event_time=newest,
                events_delivered=ahead.events_delivered + len(events),
            )
            await queue.put(_Pending(page, list(events), ahead))
            if pager.drained or stop.is_set():
                return

    async def _deliver(
        self,
        spec: StreamSpec,
        committed: Checkpoint,
        queue: asyncio.Queue[_Pending | None],
        result: StreamResult,
    ) -> None:
        in_flight: deque[tuple[_Pending, asyncio.Task[Any]]] = deque()
        limit = 1 if self.sink.transactional else max(1, self.max_in_flight)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if self.sink.transactional:
                    committed = await self._write_transactional(item, committed)
                    self._delivered(item, result)
                    continue
                task = asyncio.ensure_future(asyncio.to_thread(self._write_only, item))
                in_flight.append((item, task))
                while len(in_flight) >= limit or (in_flight and in_flight[0][1].done()):
                    committed = await self._commit_head(in_flight, committed, result)
            while in_flight:
                committed = await self._commit_head(in_flight, committed, result)
        finally:
            for _, task in in_flight:
                task.cancel()

    async def _write_transactional(self, item: _Pending, committed: Checkpoint) -> Checkpoint:
        if not item.events and item.checkpoint.cursor == committed.cursor:
            return committed  # nothing new: no transaction needed
        target = item.checkpoint.advanced(version=committed.version)
        batch = Batch(item.page.stream, item.events, self.clock())
        stored = await asyncio.to_thread(self.sink.write, batch, target)
        assert stored is not None, "a transactional sink returns the stored checkpoint"
        return stored

    def _write_only(self, item: _Pending) -> None:
        if item.events:
            self.sink.write(Batch(item.page.stream, item.events, self.clock()), None)

    async def _commit_head(
        self,
        in_flight: deque[tuple[_Pending, asyncio.Task[Any]]],
        committed: Checkpoint,
        result: StreamResult,
    ) -> Checkpoint:
        item, task = in_flight[0]
        await task  # raises if the sink refused the page: nothing after it is committed
        in_flight.popleft()
        if item.events or item.checkpoint.cursor != committed.cursor:
            target = item.checkpoint.advanced(version=committed.version)
            committed = await asyncio.to_thread(self.store.commit, target)
        self._delivered(item, result)
        return committed

    def _delivered(self, item: _Pending, result: StreamResult) -> None:
        result.add(item.page, len(item.events))
        self.telemetry.page_delivered(
            PageDelivered(
                item.page.stream,
                len(item.events),
                len(item.page.rejected),
                item.page.newest_timestamp,
                item.page.has_more,
                item.checkpoint.events_delivered,
            )
        )
        if self.on_progress is not None:
            self.on_progress(item.page.stream, result)

    async def write_health(self) -> None:
        """Write one `healthevents` row per stream. A failure is logged, never raised: health rows are
        best effort, and their absence is exactly what the Log Ingestion Failure rule alerts on."""
        records = self.telemetry.health_records()
        if not records:
            return
        try:
            await asyncio.to_thread(self.sink.write, Batch(HEALTH_LOG_SOURCE, records, self.clock()), None)
        except OpSentinelError as exc:
            log.warning("could not write health rows: %s", exc)
