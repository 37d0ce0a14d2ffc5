"""Telemetry as typed events: log lines and health rows are views of them, never ad-hoc strings.

The pipeline reports what happens (`PageDelivered`, `StreamDrained`, `StreamFailed`, ...) to a
`Telemetry` object. It logs each event (pages at debug, cycle summaries at info, problems at warning)
and keeps per-stream health, from which `health_records()` builds the `log_source = "healthevents"`
rows that Microsoft's "1Password - Log Ingestion Failure" rule watches.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opsentinel import __version__
from opsentinel.timefmt import format_rfc3339

log = logging.getLogger("opsentinel")

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def new_event_uuid() -> str:
    """A 26-character base32 id, the shape 1Password uses for event uuids."""
    return "".join(secrets.choice(_BASE32) for _ in range(26))


@dataclass(frozen=True)
class PageDelivered:
    """A page committed: `events` newly delivered, `duplicates` dropped as delivered before,
    `dead_lettered` set aside, `rejected` malformed items; `total` delivered since the first run."""

    stream: str
    events: int
    rejected: int
    newest: datetime | None
    has_more: bool
    total: int = 0
    duplicates: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class StreamDrained:
    """The stream's live cursor is up to date (`backfilling`: its first-run history is still read)."""

    stream: str
    events: int
    pages: int
    oldest: datetime | None
    newest: datetime | None
    backfilling: bool = False


@dataclass(frozen=True)
class StreamStopped:
    """A stop request ended work on the stream before it was up to date."""

    stream: str
    events: int
    backfilling: bool


@dataclass(frozen=True)
class StreamFailed:
    stream: str
    error: str
    retry_in: timedelta | None


@dataclass(frozen=True)
class EventsRejected:
    stream: str
    count: int
    reason: str


@dataclass
class StreamHealth:
    """What the connector knows about one stream's delivery. Lag = time since the stream was last drained."""

    stream: str
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    newest_event: datetime | None = None
    events_delivered: int = 0
    events_total: int = 0
    rejected: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    backfilling: bool = False
    failing: bool = False
    health_at: datetime | None = None  # the last health row written for the stream, and its category
    health_category: str | None = None

    def health_due(self, now: datetime, interval: timedelta) -> bool:
        """Whether a health row is due: none written yet, the category changed, or the interval passed."""
        return (
            self.health_at is None
            or self.health_category != self.category
            or now - self.health_at >= interval
        )

    def lag(self, now: datetime) -> timedelta | None:
        return None if self.last_success is None else now - self.last_success

    @property
    def category(self) -> str:
        if self.failing:
            return "failing"
        return "healthy" if self.last_success is not None else "starting"


@dataclass
class Telemetry:
    """Receives pipeline events; logs them and tracks health. Thread-safe enough for asyncio use."""

    account: str = ""
    replica: str = ""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    health: dict[str, StreamHealth] = field(default_factory=dict)
    _changed: bool = True

    def _stream(self, name: str) -> StreamHealth:
        if name not in self.health:
            self.health[name] = StreamHealth(name)
        return self.health[name]

    def page_delivered(self, ev: PageDelivered) -> None:
        h = self._stream(ev.stream)
        h.events_delivered += ev.events
        h.events_total = max(h.events_total, ev.total)
        h.rejected += ev.rejected
        h.duplicates += ev.duplicates
        h.dead_lettered += ev.dead_lettered
        if ev.newest is not None and (h.newest_event is None or ev.newest > h.newest_event):
            h.newest_event = ev.newest
        log.debug(
            "page stream=%s events=%d duplicates=%d dead_lettered=%d rejected=%d newest=%s has_more=%s",
            ev.stream,
            ev.events,
            ev.duplicates,
            ev.dead_lettered,
            ev.rejected,
            format_rfc3339(ev.newest) if ev.newest else "-",
            str(ev.has_more).lower(),
        )

    def stream_drained(self, ev: StreamDrained) -> None:
        h = self._stream(ev.stream)
        if h.failing:
            log.info("stream=%s recovered", ev.stream)
        if h.failing or h.last_success is None:
            # starting -> healthy and failing -> healthy both call for a health row now (health.md).
            self._changed = True
        h.failing = False
        h.backfilling = ev.backfilling
        h.last_success = self.clock()
        log.info(
            "cycle stream=%s events=%d pages=%d span=%s..%s%s",
            ev.stream,
            ev.events,
            ev.pages,
            format_rfc3339(ev.oldest) if ev.oldest else "-",
            format_rfc3339(ev.newest) if ev.newest else "-",
            " (first-run history still being read)" if ev.backfilling else "",
        )

    def stream_stopped(self, ev: StreamStopped) -> None:
        h = self._stream(ev.stream)
        h.backfilling = ev.backfilling
        what = "its first-run history is not read completely" if ev.backfilling else "it is not up to date"
        log.info(
            "stream=%s stopped after %d events: %s; the next run continues from the checkpoint",
            ev.stream,
            ev.events,
            what,
        )

    def stream_failed(self, ev: StreamFailed) -> None:
        h = self._stream(ev.stream)
        if not h.failing:
            self._changed = True
        h.failing = True
        h.last_error = ev.error
        h.last_error_at = self.clock()
        retry = f" (retrying in {int(ev.retry_in.total_seconds())}s)" if ev.retry_in else ""
        log.warning("stream=%s failed: %s%s", ev.stream, ev.error, retry)

    def events_rejected(self, ev: EventsRejected) -> None:
        log.warning("stream=%s rejected %d malformed event(s): %s", ev.stream, ev.count, ev.reason)

    def take_changed(self) -> bool:
        """True once after any stream's category changed (its first poll finished, or it turned
        failing or healthy again): a health row is due now."""
        changed, self._changed = self._changed, False
        return changed

    def health_records(self, streams: Collection[str] | None = None) -> list[dict[str, Any]]:
        """One `healthevents` record per stream (of `streams`, when given), in the raw-event shape
        every sink maps."""
        now = self.clock()
        records = []
        for h in self.health.values():
            if streams is not None and h.stream not in streams:
                continue
            lag = h.lag(now)
            records.append(
                {
                    "uuid": new_event_uuid(),
                    "timestamp": format_rfc3339(now),
                    "category": h.category,
                    "type": h.stream,
                    "account_uuid": self.account or None,
                    "details": {
                        "stream": h.stream,
                        "last_success": format_rfc3339(h.last_success) if h.last_success else None,
                        "last_error": h.last_error,
                        "last_error_at": format_rfc3339(h.last_error_at) if h.last_error_at else None,
                        "lag_seconds": int(lag.total_seconds()) if lag is not None else None,
                        "newest_event": format_rfc3339(h.newest_event) if h.newest_event else None,
                        "events_delivered": h.events_delivered,
                        "events_duplicate": h.duplicates,
                        "events_dead_lettered": h.dead_lettered,
                        "events_rejected": h.rejected,
                        "backfilling": h.backfilling,
                        "connector": f"op-sentinel/{__version__}",
                        "replica": self.replica or None,
                    },
                }
            )
        return records

    def health_written(self, records: list[dict[str, Any]]) -> None:
        """Remember that these health records were stored (see StreamHealth.health_due)."""
        for record in records:
            h = self.health.get(str(record["type"]))
            if h is not None:
                h.health_at = self.clock()
                h.health_category = str(record["category"])
