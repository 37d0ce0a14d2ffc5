"""The loop: fetch a page -> hand it to the sink -> on ack commit the checkpoint, in order.

One `Pipeline` serves one account. `drain_stream` brings one stream up to date: it follows the
stream's live cursor until the API says `has_more: false` and, on a first run, pages the history
in concurrent time slices (see `backfill`). `poll_cycle` drains every stream once, concurrently (a
serverless timer can call it on its own).

Commit after ack: a page's checkpoint is committed only after the sink accepted the page (with the
rows, in one transaction, when the sink is transactional), and a chain's checkpoints are committed
in page order. All chains of a stream share one checkpoint record; its commits are serialised by a
per-stream lock and each one applies only its own chain's change to the latest committed value.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from opsentinel.backfill import PAD, BackfillPlan, Slice, make_plan, split_point
from opsentinel.errors import CursorRejected, OpSentinelError, StoreError
from opsentinel.sinks.base import Batch, Sink
from opsentinel.source.client import EventsClient
from opsentinel.source.paging import CursorPager, Page
from opsentinel.state import Checkpoint, CheckpointStore
from opsentinel.streams import HEALTH_LOG_SOURCE, StreamSpec
from opsentinel.telemetry import EventsRejected, PageDelivered, StreamDrained, StreamFailed, Telemetry

log = logging.getLogger("opsentinel.pipeline")

Update = Callable[[Checkpoint], Checkpoint]
"""A chain's change to the stream checkpoint, applied to the latest committed value."""


@dataclass
class StreamResult:
    """What one drain of one stream did."""

    stream: str
    events: int = 0
    pages: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    error: str | None = None

    def add(self, oldest: datetime | None, newest: datetime | None, delivered: int) -> None:
        self.pages += 1
        self.events += delivered
        for moment in (oldest, newest):
            if moment is None:
                continue
            if self.oldest is None or moment < self.oldest:
                self.oldest = moment
            if self.newest is None or moment > self.newest:
                self.newest = moment


ProgressHook = Callable[[str, StreamResult], None]


@dataclass
class _Delivery:
    """Events of one page on their way to the sink, with the checkpoint change their ack earns."""

    stream: str
    events: Sequence[Mapping[str, Any]]
    update: Update
    oldest: datetime | None
    newest: datetime | None
    rejected: int
    has_more: bool
    changes_cursor: bool
    plan_update: Callable[[BackfillPlan], BackfillPlan] | None = None
    times: Sequence[datetime] | None = None  # each event's parsed timestamp, aligned with `events`
    batch: Batch | None = None  # a transactional sink's prepared rows (see _StreamRun.stage)


def _span(times: Sequence[datetime]) -> tuple[datetime | None, datetime | None]:
    return (min(times), max(times)) if times else (None, None)


def _keep(page: Page, owns: Callable[[datetime], bool]) -> tuple[list[Mapping[str, Any]], list[datetime]]:
    """The page's events (and their parsed times) whose time `owns` accepts."""
    kept = [(e, t) for e, t in zip(page.events, page.times, strict=True) if owns(t)]
    return [e for e, _ in kept], [t for _, t in kept]


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class _StreamRun:
    """One drain of one stream: the committed checkpoint, its lock, and the result so far."""

    def __init__(self, pipeline: Pipeline, spec: StreamSpec, committed: Checkpoint) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.committed = committed
        self.lock = asyncio.Lock()
        self.result = StreamResult(spec.name)
        self.plan: BackfillPlan | None = None
        if committed.backfill:
            try:
                self.plan = BackfillPlan.from_dict(committed.backfill)
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"the stored backfill plan of {spec.name} is unreadable: {exc}") from None

    async def commit(self, delivery: _Delivery, *, written: bool) -> None:
        """Commit `delivery`'s change (and, for a transactional sink, its rows) after the sink's ack."""
        p = self.pipeline
        async with self.lock:
            target = delivery.update(self.committed)
            # A slice's progress enters the plan only with its own successful commit: the plan this
            # commit stores is computed here, and becomes the working plan only once it is stored.
            # (Splits change the working plan meanwhile; re-applying the update keeps them.)
            planned = self.plan
            if delivery.plan_update is not None and planned is not None:
                planned = delivery.plan_update(planned)
            if planned is not None:
                target = replace(target, backfill=None if planned.finished else planned.to_dict())
            target = replace(target, version=self.committed.version)
            nothing_new = not delivery.events and not delivery.changes_cursor
            if nothing_new and target.backfill == self.committed.backfill:
                pass  # an empty poll: no transaction needed
            elif p.sink.transactional:
                batch = delivery.batch or self.batch(delivery)
                stored = await asyncio.to_thread(p.sink.write, batch, target)
                assert stored is not None, "a transactional sink returns the stored checkpoint"
                self.committed = stored
            else:
                assert written or not delivery.events
                self.committed = await asyncio.to_thread(p.store.commit, target)
            if planned is not None and planned.finished:
                self.plan = None  # the commit that stored "no plan" has happened
            elif delivery.plan_update is not None and self.plan is not None:
                self.plan = delivery.plan_update(self.plan)
        self.result.add(delivery.oldest, delivery.newest, len(delivery.events))
        p.telemetry.page_delivered(
            PageDelivered(
                self.spec.name,
                len(delivery.events),
                delivery.rejected,
                delivery.newest,
                delivery.has_more,
                self.committed.events_delivered,
            )
        )
        if p.on_progress is not None:
            p.on_progress(self.spec.name, self.result)

    async def stage(self, delivery: _Delivery) -> None:
        """Before the commit: a non-transactional sink gets the rows now; a transactional one
        prepares them, outside the stream lock, so that building one page's rows overlaps storing
        another's. One prepare at a time: it is pure Python, and more threads would only take the
        interpreter lock from the thread that stores (it needs it back after every DuckDB call)."""
        if not delivery.events:
            return
        p = self.pipeline
        batch = self.batch(delivery)
        if p.sink.transactional:
            async with p.prepare_turn:
                delivery.batch = await asyncio.to_thread(p.sink.prepare, batch)
        else:
            await asyncio.to_thread(p.sink.write, batch, None)

    def batch(self, delivery: _Delivery) -> Batch:
        return Batch(delivery.stream, delivery.events, self.pipeline.clock(), times=delivery.times)

    def report_rejected(self, page: Page) -> None:
        if page.rejected:
            self.pipeline.telemetry.events_rejected(
                EventsRejected(self.spec.name, len(page.rejected), page.rejected[0].reason)
            )


@dataclass
class Pipeline:
    """Moves one account's events from the Events API into a sink, exactly once per event.

    `store` is the checkpoint store; for a transactional sink it is the sink itself. `first_start`
    is where a stream with no checkpoint begins. `read_ahead` bounds the pages fetched but not yet
    delivered on the live chain (and so memory); `max_in_flight` bounds concurrent deliveries of the
    live chain for non-transactional sinks; `backfill_workers` is how many history slices are paged
    at once on a first run (0 disables slicing).
    """

    client: EventsClient
    sink: Sink
    store: CheckpointStore
    account: str
    first_start: datetime
    telemetry: Telemetry = field(default_factory=Telemetry)
    read_ahead: int = 4
    max_in_flight: int = 4
    backfill_workers: int = 8
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    on_progress: ProgressHook | None = None
    prepare_turn: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(1), init=False, repr=False
    )

    async def poll_cycle(
        self, streams: Sequence[StreamSpec], stop: asyncio.Event | None = None
    ) -> list[StreamResult]:
        """Drain every stream once, concurrently."""
        stop = stop or asyncio.Event()
        results = await asyncio.gather(*(self.drain_stream(s, stop) for s in streams))
        return list(results)

    async def drain_stream(self, spec: StreamSpec, stop: asyncio.Event) -> StreamResult:
        """Bring `spec` up to date (live chain drained, backfill slices done) or stop when `stop`
        is set. Never raises for API or sink trouble: the error is reported to telemetry and
        returned in the result; what was committed before it stays committed."""
        result = StreamResult(spec.name)
        try:
            committed = await asyncio.to_thread(self.store.read, self.account, spec.name)
            run = _StreamRun(self, spec, committed or self._first_checkpoint(spec))
            result = run.result
            chains = [self._live_chain(run, stop)]
            if run.plan is not None:
                chains.append(self._backfill(run, stop))
            await _gather_or_cancel(chains)
        except OpSentinelError as exc:
            result.error = str(exc)
            self.telemetry.stream_failed(StreamFailed(spec.name, str(exc), None))
            return result
        self.telemetry.stream_drained(
            StreamDrained(spec.name, result.events, result.pages, result.oldest, result.newest)
        )
        return result

    def _first_checkpoint(self, spec: StreamSpec) -> Checkpoint:
        # The live cursor's start is a time in the API's clock (see EventsClient.api_now).
        plan = make_plan(self.first_start, self.client.api_now(), slices=self.backfill_workers)
        if plan is None or self.backfill_workers < 1:
            return Checkpoint(self.account, spec.name)
        log.info(
            "stream=%s first run: reading history in %d slices, %d at a time",
            spec.name,
            len(plan.slices),
            self.backfill_workers,
        )
        return Checkpoint(self.account, spec.name, backfill=plan.to_dict())

    # The live chain: the stream's persistent cursor -------------------------------------------

    async def _live_chain(self, run: _StreamRun, stop: asyncio.Event) -> None:
        queue: asyncio.Queue[_Delivery | None] = asyncio.Queue(maxsize=self.read_ahead)
        fetcher = asyncio.create_task(self._fetch_live(run, queue, stop))
        try:
            await self._deliver_in_order(run, queue)
        finally:
            if not fetcher.done():
                fetcher.cancel()
            try:
                await fetcher
            except asyncio.CancelledError:
                pass

    async def _fetch_live(
        self, run: _StreamRun, queue: asyncio.Queue[_Delivery | None], stop: asyncio.Event
    ) -> None:
        try:
            await self._fetch_live_pages(run, queue, stop)
        except asyncio.CancelledError:
            raise  # the deliverer is gone (it cancelled us): nobody waits for the end marker
        except BaseException:
            await queue.put(None)  # let the deliverer finish what was fetched, then see the error
            raise
        await queue.put(None)

    async def _fetch_live_pages(
        self, run: _StreamRun, queue: asyncio.Queue[_Delivery | None], stop: asyncio.Event
    ) -> None:
        committed = run.committed
        live_start = run.plan.live_start if run.plan is not None else None
        if committed.cursor:
            pager = CursorPager.resume(committed.cursor)
        elif live_start is not None:
            pager = CursorPager.reset(live_start - PAD)
        else:
            pager = CursorPager.reset(self.first_start)
        newest = committed.newest_event_time
        while True:
            try:
                page = await self.client.fetch_page(run.spec, pager.next_request())
            except CursorRejected as exc:
                restart = newest or live_start or self.first_start
                log.warning(
                    "stream=%s the API rejected the stored cursor (%s); restarting from %s",
                    run.spec.name,
                    exc,
                    restart.isoformat(),
                )
                pager = CursorPager.reset(restart)
                continue
            pager.update(page)
            run.report_rejected(page)
            events: Sequence[Mapping[str, Any]] = page.events
            times: Sequence[datetime] = page.times
            if live_start is not None and run.plan is not None:
                # While history is being sliced, events before live_start belong to a slice.
                events, times = _keep(page, partial(operator.le, live_start))
            oldest, page_newest = _span(times)
            newest = _later(newest, page_newest)
            await queue.put(
                _Delivery(
                    run.spec.name,
                    events,
                    _live_update(page.cursor, page_newest, len(events)),
                    oldest,
                    page_newest,
                    len(page.rejected),
                    page.has_more,
                    changes_cursor=page.cursor != committed.cursor,
                    times=times,
                )
            )
            committed = replace(committed, cursor=page.cursor)
            if pager.drained or stop.is_set():
                return

    async def _deliver_in_order(self, run: _StreamRun, queue: asyncio.Queue[_Delivery | None]) -> None:
        in_flight: deque[tuple[_Delivery, asyncio.Future[None]]] = deque()
        # Transactional: the next page is prepared while the head commits; commits stay one at a time.
        limit = 2 if self.sink.transactional else max(1, self.max_in_flight)
        next_item: asyncio.Future[_Delivery | None] | None = None
        try:
            while True:
                next_item = asyncio.ensure_future(queue.get())
                # While the next page is on its way, commit the head as soon as its stage is done.
                while in_flight and not next_item.done():
                    waiting: list[asyncio.Future[Any]] = [next_item, in_flight[0][1]]
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if in_flight[0][1].done():
                        await self._commit_head(run, in_flight)
                item = await next_item
                if item is None:
                    break
                in_flight.append((item, asyncio.ensure_future(run.stage(item))))
                while len(in_flight) >= limit:
                    await self._commit_head(run, in_flight)
            while in_flight:
                await self._commit_head(run, in_flight)
        finally:
            if next_item is not None:
                next_item.cancel()
            for _, task in in_flight:
                task.cancel()

    @staticmethod
    async def _commit_head(run: _StreamRun, in_flight: deque[tuple[_Delivery, asyncio.Future[None]]]) -> None:
        item, task = in_flight[0]
        await task  # raises if the sink refused the page: nothing after it is committed
        in_flight.popleft()
        await run.commit(item, written=True)

    # Backfill: history in concurrent slices ---------------------------------------------------

    async def _backfill(self, run: _StreamRun, stop: asyncio.Event) -> None:
        assert run.plan is not None
        queue: asyncio.Queue[int] = asyncio.Queue()
        for s in run.plan.pending():
            queue.put_nowait(s.id)
        busy: dict[int, bool] = {}  # slice id -> last page was full (has_more)
        idle = asyncio.Event()
        workers = [
            asyncio.create_task(self._slice_worker(run, queue, busy, idle, stop))
            for _ in range(max(1, self.backfill_workers))
        ]
        await _gather_or_cancel(workers)

    async def _slice_worker(
        self,
        run: _StreamRun,
        queue: asyncio.Queue[int],
        busy: dict[int, bool],
        idle: asyncio.Event,
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            try:
                slice_id = queue.get_nowait()
            except asyncio.QueueEmpty:
                if not busy:
                    return  # nothing queued, nothing running: the backfill is done
                idle.set()  # ask a busy slice to hand over half of what it has left
                await asyncio.sleep(0.05)
                continue
            busy[slice_id] = False
            try:
                await self._page_slice(run, slice_id, queue, busy, idle, stop)
            finally:
                busy.pop(slice_id, None)

    async def _page_slice(
        self,
        run: _StreamRun,
        slice_id: int,
        queue: asyncio.Queue[int],
        busy: dict[int, bool],
        idle: asyncio.Event,
        stop: asyncio.Event,
    ) -> None:
        assert run.plan is not None
        current = run.plan.get(slice_id)
        pager = CursorPager.resume(current.cursor) if current.cursor else CursorPager(**_reset_args(current))
        while not stop.is_set():
            try:
                page = await self.client.fetch_page(run.spec, pager.next_request())
            except CursorRejected:
                current = run.plan.get(slice_id)
                restart = replace(current, start=current.progress or current.start)
                log.warning(
                    "stream=%s slice %d: cursor rejected; restarting the slice", run.spec.name, slice_id
                )
                pager = CursorPager(**_reset_args(restart))
                continue
            pager.update(page)
            run.report_rejected(page)
            new_slice: Slice | None = None
            if idle.is_set() and page.has_more:
                at = split_point(run.plan.get(slice_id))
                if at is not None:
                    idle.clear()
                    run.plan, new_slice = run.plan.split(slice_id, at)
                    log.debug("stream=%s slice %d split at %s", run.spec.name, slice_id, at.isoformat())
            current = run.plan.get(slice_id)
            events, times = _keep(page, current.owns)
            past_end = any(t >= current.end for t in page.times)
            done = pager.drained or past_end
            oldest, newest = _span(times)
            delivery = _Delivery(
                run.spec.name,
                events,
                _slice_update(newest, len(events)),
                oldest,
                newest,
                len(page.rejected),
                page.has_more,
                changes_cursor=True,
                plan_update=_slice_progress(slice_id, page.cursor, newest, done),
                times=times,
            )
            await run.stage(delivery)
            await run.commit(delivery, written=True)
            busy[slice_id] = page.has_more
            if new_slice is not None:
                queue.put_nowait(new_slice.id)
            if done:
                return

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


def _reset_args(s: Slice) -> dict[str, Any]:
    return {"start_time": s.start - PAD, "end_time": s.end + PAD}


def _live_update(cursor: str, newest: datetime | None, count: int) -> Update:
    def apply(cp: Checkpoint) -> Checkpoint:
        return replace(
            cp,
            cursor=cursor,
            newest_event_time=_later(cp.newest_event_time, newest),
            events_delivered=cp.events_delivered + count,
        )

    return apply


def _slice_update(newest: datetime | None, count: int) -> Update:
    def apply(cp: Checkpoint) -> Checkpoint:
        return replace(
            cp,
            newest_event_time=_later(cp.newest_event_time, newest),
            events_delivered=cp.events_delivered + count,
        )

    return apply


def _slice_progress(
    slice_id: int, cursor: str, newest: datetime | None, done: bool
) -> Callable[[BackfillPlan], BackfillPlan]:
    def apply(plan: BackfillPlan) -> BackfillPlan:
        s = plan.get(slice_id)
        return plan.with_slice(replace(s, cursor=cursor, progress=_later(s.progress, newest), done=done))

    return apply


async def _gather_or_cancel(coros: Sequence[Any]) -> None:
    """Run concurrently; the first failure cancels the rest (after they stop) and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
