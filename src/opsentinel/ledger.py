"""The delivered-uuid ledger: what a stream delivered recently, for sinks that cannot de-duplicate.

DuckDB refuses a uuid it already holds, inside the transaction that moves the cursor. The Sentinel
and JSONL sinks cannot: the Logs Ingestion API has no idempotency key, and a file append is not a
transaction with the checkpoint. So for them the pipeline keeps a ledger per (account, stream): the
uuid and event time of every event whose delivery was acknowledged, recorded durably *as soon as the
acknowledgement arrives* (before the checkpoint commit, which goes in page order). Every page is
checked against it before it is sent, so

- a page that was acknowledged but not yet committed when the process died is read again after the
  restart, and not sent again;
- a deliberate re-read (after the API rejected the live cursor the stream restarts from its newest
  event time minus the late window) sends only what it had not delivered.

The ledger is bounded to the late window: `prune(horizon)` drops entries stamped before the horizon
(the restart point of a re-read, so nothing a re-read can return is ever dropped). The pipeline
prunes only when nothing is in flight on the live chain, so an entry that protects an uncommitted
page is never dropped before that page is read again. Entries stamped before `keep_before` (events
of history slices, recorded only when a page failed half-way) are kept while a backfill runs.

`LedgerStore` is the persistence a checkpoint store offers for it: an append-only log per stream
and an atomic rewrite for compaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Ledger", "LedgerStore", "from_micros", "to_micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch (exact for the API's timestamps, which we parse to microseconds)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


@runtime_checkable
class LedgerStore(Protocol):
    """Durable ledger entries `(uuid, event time in epoch microseconds)` per (account, stream).

    `append_ledger` is durable when it returns; a crash during it loses at most that append (it is
    then as if the acknowledgement had not been recorded). `rewrite_ledger` replaces the whole
    ledger atomically. `load_ledger` returns every entry appended and not rewritten away.
    """

    def load_ledger(self, account: str, stream: str) -> list[tuple[str, int]]: ...

    def append_ledger(self, account: str, stream: str, entries: Sequence[tuple[str, int]]) -> None: ...

    def rewrite_ledger(self, account: str, stream: str, entries: Sequence[tuple[str, int]]) -> None: ...


class Ledger:
    """One stream's ledger in memory, backed by a LedgerStore. Thread-safe: sinks record from their
    upload threads."""

    def __init__(self, store: LedgerStore, account: str, stream: str) -> None:
        self._store = store
        self.account = account
        self.stream = stream
        self._lock = threading.Lock()
        self._entries: dict[str, int] = {}
        self._stored = 0  # entries in the backing log, live or not (decides when to compact)

    @classmethod
    def load(cls, store: LedgerStore, account: str, stream: str) -> Ledger:
        ledger = cls(store, account, stream)
        entries = store.load_ledger(account, stream)
        ledger._entries.update(entries)
        ledger._stored = len(entries)
        return ledger

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._entries

    def record(self, entries: Iterable[tuple[str, datetime]]) -> None:
        """Durably remember these delivered events (those already known are skipped)."""
        with self._lock:
            new = [(u, to_micros(t)) for u, t in entries if u not in self._entries]
            if not new:
                return
            self._store.append_ledger(self.account, self.stream, new)
            self._entries.update(new)
            self._stored += len(new)

    def prune(self, horizon: datetime, keep_before: datetime | None = None) -> int:
        """Forget entries stamped before `horizon` (but keep those before `keep_before`); rewrite
        the backing log when it holds far more than the live entries. Returns how many were dropped."""
        limit = to_micros(horizon)
        keep = to_micros(keep_before) if keep_before is not None else None
        with self._lock:
            drop = [u for u, t in self._entries.items() if t < limit and (keep is None or t >= keep)]
            for u in drop:
                del self._entries[u]
            if self._stored > 2 * len(self._entries) + 1000:
                self._store.rewrite_ledger(self.account, self.stream, list(self._entries.items()))
                self._stored = len(self._entries)
            return len(drop)
