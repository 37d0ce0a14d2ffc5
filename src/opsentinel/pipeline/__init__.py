"""The loop: fetch a page -> hand it to the sink -> on ack commit the checkpoint, in order.

One `Pipeline` serves one account. `drain_stream` brings one stream up to date: it follows the
stream's live cursor until the API says `has_more: false` and, on a first run, pages the history in
concurrent time slices (`history`) until each slice's own chain is exhausted. `poll_cycle` drains
every stream once, concurrently (a serverless timer calls it on its own). `follow_stream` is what
`run` does: the live cursor polled every interval while a first run's history is read alongside.

What is guaranteed (docs/usage.md, "What is guaranteed"):

- history the API holds when a first run starts is read completely, whatever order the API indexed
  it in (slices are done only when their chain is);
- an event that reaches the API up to `late_window` after its own time is read on every path: the
  live chain starts that long before the first run, and a rejected cursor restarts that long before
  the newest delivered event;
- commit after ack: a page's checkpoint is committed only after the sink accepted the page (with the
  rows, in one transaction, when the sink is transactional), each chain's pages in order;
- nothing twice: DuckDB refuses a uuid it holds; other sinks check every page against the stream's
  ledger, into which acknowledgements are recorded as they arrive. The one re-send left is a page
  whose acknowledgement had not been recorded when the process died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from opsentinel.backfill import BackfillPlan
from opsentinel.config import DEFAULT_LATE_WINDOW, retention_floor
from opsentinel.errors import OpSentinelError, StoreError
from opsentinel.ledger import Ledger, LedgerStore
from opsentinel.pipeline.history import plan_first_run, read_history
from opsentinel.pipeline.live import LiveChain
from opsentinel.pipeline.stream import Stream, StreamResult
from opsentinel.sinks.base import Batch, Sink
from opsentinel.source.client import EventsClient
from opsentinel.source.paging import Page
from opsentinel.state import Checkpoint, CheckpointStore
from opsentinel.streams import HEALTH_LOG_SOURCE, StreamSpec
from opsentinel.telemetry import StreamDrained, StreamFailed, StreamStopped, Telemetry

__all__ = ["Pipeline", "StreamResult", "gather_or_cancel"]

log = logging.getLogger("opsentinel.pipeline")

ProgressHook = Callable[[str, StreamResult], None]
DrainHook = Callable[[StreamResult], Awaitable[None]]


@dataclass
class Pipeline:
    """Moves one account's events from the Events API into a sink, exactly once per event.

    `store` is the checkpoint store; for a transactional sink it is the sink itself. `ledgers` keeps
    the delivered-uuid ledgers of a non-transactional sink (None: no ledger; a transactional sink
    needs none). `first_start` is where a stream with no checkpoint begins; `late_window` how late
    an event may reach the API and still be read on every path. `read_ahead` bounds the pages
    fetched but not yet delivered on the live chain (and so memory); `max_in_flight` bounds
    concurrent deliveries of the live chain for non-transactional sinks; `backfill_workers` is how
    many history slices are paged at once on a first run (0 reads history with the live cursor).
    `send_history` False starts a stream's first run at that moment, reading no history (for a
    sink that must not get it: Sentinel without a history stream). `admit(stream, "fetch" | "upload")`,
    when given, is called before every request the pipeline starts for a stream (each try of an
    Events API request, each upload of the sink) and raises to stop it: a replica that may lose the
    stream before the request ends.
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
    late_window: timedelta = DEFAULT_LATE_WINDOW
    ledgers: LedgerStore | None = None
    send_history: bool = True
    admit: Callable[[str, str], None] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    on_progress: ProgressHook | None = None
    prepare_turn: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(1), init=False, repr=False
    )

    def gate(self, stream: str, what: str) -> Callable[[], None] | None:
        """The admission check for one kind of request of `stream` (None when nothing gates them)."""
        admit = self.admit
        if admit is None:
            return None
        return lambda: admit(stream, what)

    def floor(self) -> datetime:
        """The oldest moment a request may ask for: the API keeps 120 days (less a margin)."""
        return retention_floor(self.client.api_now())

    async def poll_cycle(
        self, streams: Sequence[StreamSpec], stop: asyncio.Event | None = None
    ) -> list[StreamResult]:
        """Drain every stream once, concurrently."""
        stop = stop or asyncio.Event()
        results = await asyncio.gather(*(self.drain_stream(s, stop) for s in streams))
        return list(results)

    async def drain_stream(self, spec: StreamSpec, stop: asyncio.Event) -> StreamResult:
        """Bring `spec` up to date (live chain drained, history read) or stop when `stop` is set.
        Never raises for API or sink trouble: the error is reported to telemetry and returned in
        the result; what was committed before it stays committed."""
        return await self._session(spec, stop, follow=None, on_drained=None)

    async def follow_stream(
        self, spec: StreamSpec, stop: asyncio.Event, interval: float, on_drained: DrainHook | None = None
    ) -> StreamResult:
        """Poll `spec`'s live cursor every `interval` seconds, reading a first run's history alongside,
        until `stop` is set or something fails (then the result carries the error). `on_drained` is
        awaited after each drain of the live cursor."""
        return await self._session(spec, stop, follow=interval, on_drained=on_drained)

    async def _session(
        self, spec: StreamSpec, stop: asyncio.Event, *, follow: float | None, on_drained: DrainHook | None
    ) -> StreamResult:
        result = StreamResult(spec.name)
        live_drained = False
        stream: Stream | None = None
        try:
            stream = await self._open(spec)
            result = stream.result
            live = LiveChain(self, stream)

            async def live_loop() -> None:
                nonlocal live_drained
                before = StreamResult(spec.name)
                while True:
                    live_drained = await live.drain(stop)
                    if follow is None or not live_drained or stop.is_set():
                        return
                    cycle = result.since(before)
                    before = replace(result)
                    self.telemetry.stream_drained(_drained(cycle, backfilling=stream.backfilling))
                    if on_drained is not None:
                        await on_drained(cycle)
                    await _wait(stop, follow)
                    if stop.is_set():
                        return

            chains = [live_loop()]
            if stream.plan is not None:
                chains.append(read_history(self, stream, stop))
            await gather_or_cancel(chains)
        except OpSentinelError as exc:
            result.error = str(exc)
            self.telemetry.stream_failed(StreamFailed(spec.name, str(exc), None))
            return result
        unfinished = stream is not None and stream.backfilling
        # Following, the live cursor is never "finished": only unread history makes a stop early.
        if unfinished or (follow is None and not live_drained):
            result.stopped = True
            self.telemetry.stream_stopped(StreamStopped(spec.name, result.events, unfinished))
        elif follow is None:
            self.telemetry.stream_drained(_drained(result, backfilling=False))
        return result

    async def _open(self, spec: StreamSpec) -> Stream:
        """The stream's state from the store, or a planned first run when it has no checkpoint."""
        committed = await asyncio.to_thread(self.store.read, self.account, spec.name)
        first_pages: dict[int, Page] = {}
        live_start: datetime | None
        if committed is None:
            began = self.client.api_now()
            live_start, plan, first_pages = await plan_first_run(self, spec, began)
            committed = await self._first_commit(
                Checkpoint(
                    self.account,
                    spec.name,
                    live_start=live_start,
                    first_run_at=began,
                    backfill=plan.to_dict() if plan is not None else None,
                )
            )
        else:
            plan = None
            if committed.backfill:
                try:
                    plan = BackfillPlan.from_dict(committed.backfill)
                except (ValueError, KeyError, TypeError) as exc:
                    message = f"the stored backfill plan of {spec.name} is unreadable: {exc}"
                    raise StoreError(message) from None
            live_start = committed.live_start or (plan.live_start if plan is not None else None)
        ledger = None
        if self.ledgers is not None and not self.sink.transactional:
            ledger = await asyncio.to_thread(Ledger.load, self.ledgers, self.account, spec.name)
        return Stream(self, spec, committed, live_start, plan, committed.first_run_at, ledger, first_pages)

    async def _first_commit(self, checkpoint: Checkpoint) -> Checkpoint:
        """Store a first run's plan before anything is delivered: where the live cursor starts and
        the first-run boundary are then the same whatever happens next (a kill before the first page
        is stored must not move them, or the boundary would let an event already sent to the rules'
        table be history, or the reverse)."""
        if self.sink.transactional:
            receipt = await asyncio.to_thread(
                self.sink.write, Batch(checkpoint.stream, [], self.clock()), checkpoint
            )
            if receipt.checkpoint is None:
                raise StoreError(f"the {self.sink.name} sink stored no checkpoint for {checkpoint.stream}")
            return receipt.checkpoint
        return await asyncio.to_thread(self.store.commit, checkpoint)

    async def write_health(self, streams: Collection[str] | None = None) -> None:
        """Write one `healthevents` row per stream (of `streams`, when given). A failure is logged,
        never raised: health rows are best effort, and their absence is exactly what the Log
        Ingestion Failure rule alerts on."""
        records = self.telemetry.health_records(streams)
        if not records:
            return
        try:
            await asyncio.to_thread(self.sink.write, Batch(HEALTH_LOG_SOURCE, records, self.clock()), None)
        except OpSentinelError as exc:
            log.warning("could not write health rows: %s", exc)
            return
        self.telemetry.health_written(records)


def _drained(result: StreamResult, *, backfilling: bool) -> StreamDrained:
    return StreamDrained(
        result.stream, result.events, result.pages, result.oldest, result.newest, backfilling=backfilling
    )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def gather_or_cancel(coros: Sequence[Any]) -> None:
    """Run concurrently; the first failure cancels the rest (after they stop) and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
