"""One stream while the pipeline works on it: its committed checkpoint, and how a page is delivered.

Every chain of a stream (the live cursor, the history slices) hands its pages to the same `Stream`.
A page becomes a `Delivery` and goes through two steps:

- `stage`, outside the stream's lock: a sink that is not transactional writes the rows now, and the
  events it acknowledged are recorded in the stream's ledger at once (before the commit, which waits
  for the pages before it); a transactional sink only prepares its rows.
- `commit`, under the lock, in each chain's page order: a transactional sink stores rows and
  checkpoint in one transaction; any other sink's checkpoint goes to the checkpoint store.

Each commit applies only its own chain's change (`Delivery.update`, `plan_update`) to the latest
committed value, so chains never overwrite each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opsentinel.backfill import BackfillPlan
from opsentinel.errors import StoreError
from opsentinel.ledger import Ledger
from opsentinel.sinks.base import Batch, Receipt
from opsentinel.source.paging import Page
from opsentinel.state import Checkpoint
from opsentinel.streams import StreamSpec
from opsentinel.telemetry import EventsRejected, PageDelivered

if TYPE_CHECKING:
    from opsentinel.pipeline import Pipeline

Update = Callable[[Checkpoint], Checkpoint]
"""A chain's change to the stream checkpoint, applied to the latest committed value."""


@dataclass
class StreamResult:
    """What one drain of one stream did.

    `events`: events newly delivered; `duplicates`: events dropped as already delivered;
    `dead_lettered`: records the sink refused and set aside. `stopped` is True when a stop request
    ended the drain before the stream was up to date (its history or its live cursor unfinished).
    """

    stream: str
    events: int = 0
    pages: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    error: str | None = None
    duplicates: int = 0
    dead_lettered: int = 0
    stopped: bool = False

    def since(self, before: StreamResult) -> StreamResult:
        """What happened after `before` (an earlier copy of this result): counts only, span kept."""
        return replace(
            self,
            events=self.events - before.events,
            pages=self.pages - before.pages,
            duplicates=self.duplicates - before.duplicates,
            dead_lettered=self.dead_lettered - before.dead_lettered,
        )

    def add(self, oldest: datetime | None, newest: datetime | None, receipt: Receipt, ignored: int) -> None:
        self.pages += 1
        self.events += receipt.delivered
        self.duplicates += receipt.duplicates + ignored
        self.dead_lettered += receipt.dead_lettered
        for moment in (oldest, newest):
            if moment is None:
                continue
            if self.oldest is None or moment < self.oldest:
                self.oldest = moment
            if self.newest is None or moment > self.newest:
                self.newest = moment


@dataclass
class Delivery:
    """Events of one page on their way to the sink, with the checkpoint change their ack earns.

    `ignored` counts the page's events dropped before the sink because the ledger holds them.
    `live` marks the live chain's pages: their acknowledgements are recorded in the ledger as they
    arrive (a history slice's only when its write fails half-way; its commit follows its write at
    once, and recording all of history would make the ledger as large as history).
    """

    events: Sequence[Mapping[str, Any]]
    times: Sequence[datetime]
    update: Update
    has_more: bool
    changes_cursor: bool
    rejected: int = 0
    ignored: int = 0
    plan_update: Callable[[BackfillPlan], BackfillPlan] | None = None
    live: bool = False
    batch: Batch | None = None  # a transactional sink's prepared rows (see Stream.stage)
    receipt: Receipt | None = None  # a non-transactional sink's answer (see Stream.stage)

    @property
    def span(self) -> tuple[datetime | None, datetime | None]:
        return (min(self.times), max(self.times)) if self.times else (None, None)


def owned(page: Page, owns: Callable[[datetime], bool]) -> tuple[list[Mapping[str, Any]], list[datetime]]:
    """The page's events (and their parsed times) whose time `owns` accepts."""
    kept = [(e, t) for e, t in zip(page.events, page.times, strict=True) if owns(t)]
    return [e for e, _ in kept], [t for _, t in kept]


def later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


@dataclass
class Stream:
    """One stream's state for one session of the pipeline on it (see the module docstring)."""

    pipeline: Pipeline
    spec: StreamSpec
    committed: Checkpoint
    live_start: datetime | None
    plan: BackfillPlan | None = None
    first_run_at: datetime | None = None
    ledger: Ledger | None = None
    first_pages: dict[int, Page] = field(default_factory=dict)  # a slice's page fetched while planning
    result: StreamResult = field(init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    live_in_flight: int = 0  # live pages staged and not yet committed (the ledger is pruned at 0)

    def __post_init__(self) -> None:
        self.result = StreamResult(self.spec.name)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def backfilling(self) -> bool:
        return self.plan is not None and not self.plan.finished

    def without_known(
        self, events: Sequence[Mapping[str, Any]], times: Sequence[datetime]
    ) -> tuple[list[Mapping[str, Any]], list[datetime], int]:
        """The events the ledger does not hold (all of them for a transactional sink), and how many
        it held."""
        if self.ledger is None or not len(self.ledger):
            return list(events), list(times), 0
        ledger = self.ledger
        kept = [(e, t) for e, t in zip(events, times, strict=True) if e.get("uuid") not in ledger]
        return [e for e, _ in kept], [t for _, t in kept], len(events) - len(kept)

    async def stage(self, delivery: Delivery) -> None:
        """Before the commit: a non-transactional sink gets the rows now and the ledger records what
        it acknowledged; a transactional one prepares them, outside the stream lock, so that
        building one page's rows overlaps storing another's. One prepare at a time: it is pure
        Python, and more threads would only take the interpreter lock from the thread that stores
        (it needs it back after every DuckDB call)."""
        if not delivery.events:
            delivery.receipt = Receipt(0)
            return
        p = self.pipeline
        if p.sink.transactional:
            async with p.prepare_turn:
                delivery.batch = await asyncio.to_thread(p.sink.prepare, self.batch(delivery))
            return
        ledger = self.ledger
        events, times = delivery.events, delivery.times
        held: list[int] = []  # a slice's acknowledged positions, recorded only if the write fails

        def record(indexes: Sequence[int]) -> None:
            if ledger is not None:
                ledger.record((str(events[i].get("uuid")), times[i]) for i in indexes)

        def resolved(indexes: Sequence[int], _accepted: bool = True) -> None:
            if delivery.live:
                record(indexes)
            else:
                held.extend(indexes)

        batch = replace(self.batch(delivery), on_resolved=resolved, before_send=p.gate(self.name, "upload"))
        try:
            receipt = await asyncio.to_thread(p.sink.write, batch, None)
        except BaseException:
            if held:
                await asyncio.to_thread(record, held)
            raise
        if delivery.live:  # what the sink did not report part by part (idempotent)
            await asyncio.to_thread(record, range(len(events)))
        delivery.receipt = receipt

    async def commit(self, delivery: Delivery) -> None:
        """Commit `delivery`'s change (and, for a transactional sink, its rows) after the sink's ack."""
        p = self.pipeline
        async with self.lock:
            target = delivery.update(self.committed)
            if target.live_start is None and self.live_start is not None:
                target = replace(target, live_start=self.live_start)
            if target.first_run_at is None and self.first_run_at is not None:
                target = replace(target, first_run_at=self.first_run_at)
            # A slice's progress enters the plan only with its own successful commit: the plan this
            # commit stores is computed here, and becomes the working plan once it is stored.
            planned = self.plan
            if delivery.plan_update is not None and planned is not None:
                planned = delivery.plan_update(planned)
            if planned is not None:
                target = replace(target, backfill=None if planned.finished else planned.to_dict())
            target = replace(target, version=self.committed.version)
            nothing_new = not delivery.events and not delivery.changes_cursor and not delivery.ignored
            if nothing_new and target.backfill == self.committed.backfill and target == self.committed:
                receipt = Receipt(0)  # an empty poll: no transaction needed
            elif p.sink.transactional:
                batch = delivery.batch or self.batch(delivery)
                receipt = await asyncio.to_thread(p.sink.write, batch, target.tallied(0, delivery.ignored))
                if receipt.checkpoint is None:
                    raise StoreError(f"the {p.sink.name} sink stored no checkpoint for {self.name}")
                self.committed = receipt.checkpoint
            else:
                receipt = delivery.receipt or Receipt(0)
                tallied = target.tallied(
                    receipt.delivered, receipt.duplicates + delivery.ignored, receipt.dead_lettered
                )
                self.committed = await asyncio.to_thread(p.store.commit, tallied)
            # The working plan may have been divided while this commit waited for the store: apply
            # this delivery's change to it again rather than overwrite it with `planned`.
            if delivery.plan_update is not None and self.plan is not None:
                self.plan = delivery.plan_update(self.plan)
            if self.plan is not None and self.plan.finished:
                self.plan = None
        oldest, newest = delivery.span
        self.result.add(oldest, newest, receipt, delivery.ignored)
        p.telemetry.page_delivered(
            PageDelivered(
                self.name,
                receipt.delivered,
                delivery.rejected,
                newest,
                delivery.has_more,
                self.committed.events_delivered,
                duplicates=receipt.duplicates + delivery.ignored,
                dead_lettered=receipt.dead_lettered,
            )
        )
        if p.on_progress is not None:
            p.on_progress(self.name, self.result)

    def batch(self, delivery: Delivery) -> Batch:
        return Batch(
            self.name,
            delivery.events,
            self.pipeline.clock(),
            times=delivery.times,
            boundary=self.first_run_at,
        )

    def report_rejected(self, page: Page) -> None:
        if page.rejected:
            self.pipeline.telemetry.events_rejected(
                EventsRejected(self.name, len(page.rejected), page.rejected[0].reason)
            )
