"""Per-stream event logs: a virtual, index-addressed history plus appended live and late events.

A log holds `count` history events spread over [start, end) whose timestamps are a strictly increasing
function of the index (before rounding to the stream's precision), so "first event at or after T" is a
binary search over a formula and nothing is materialised. Events added while the simulator runs (the
live trickle, `add`, late events) are appended with their own timestamps in a compact int64 array.

Order: an event's sequence number (`seq`) is its insertion order; history events come first. For every
event whose timestamp is not earlier than those before it, seq order equals (timestamp, insertion)
order. A late event (timestamp in the past) is appended after what is already there, so an existing
cursor chain still delivers it, once, after the events it already returned.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from opsentinel.simulator.data import QUANTUM
from opsentinel.simulator.entropy import key_int, mix64


@dataclass(frozen=True)
class PageSlice:
    """What a page holds: `(seq, timestamp_ns)` pairs, where the chain continues, whether more is there."""

    events: list[tuple[int, int]]
    next_position: int
    has_more: bool


class StreamLog:
    """One stream's log. Thread-safe; see the module docstring for the ordering contract."""

    def __init__(
        self,
        stream: str,
        *,
        seed: int,
        count: int,
        start_ns: int,
        end_ns: int,
        trickle_per_minute: float,
        clock: Callable[[], int],
    ) -> None:
        if count < 0 or end_ns <= start_ns:
            raise ValueError("need count >= 0 and start < end")
        self.stream = stream
        self.count = count
        self._quantum = QUANTUM[stream]
        self._t0 = start_ns
        self._span = end_ns - start_ns
        self._step = self._span // count if count else 0
        self._salt = key_int(seed, stream, "jitter")
        self._clock = clock
        self._lock = threading.Lock()
        self._extra = array("q")
        self._tail = self.history_ts(count - 1) if count else start_ns
        self._interval = int(60e9 / trickle_per_minute) if trickle_per_minute > 0 else 0
        self._next_trickle = end_ns + self._interval

    # -- timestamps -----------------------------------------------------------------------------------

    def history_ts(self, i: int) -> int:
        """Timestamp of history event `i`: base slot plus jitter inside the slot, rounded down."""
        raw = self._t0 + (i * self._span) // self.count
        if self._step > 1:
            raw += mix64(self._salt ^ i) % self._step
        return raw - raw % self._quantum

    def first_at_or_after(self, ts: int) -> int:
        """Index of the first history event stamped at or after `ts` (`count` if none); O(log n)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.history_ts(mid) < ts:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def first_after(self, ts: int) -> int:
        """Index of the first history event stamped after `ts` (`count` if none); O(log n)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.history_ts(mid) <= ts:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def ts(self, seq: int) -> int:
        """Timestamp of event `seq` (IndexError if it does not exist yet)."""
        if seq < self.count:
            if seq < 0:
                raise IndexError(seq)
            return self.history_ts(seq)
        with self._lock:
            return self._extra[seq - self.count]

    # -- growth ---------------------------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Append the trickle events that are due by now (lazily: no thread, exact under a fake clock)."""
        if not self._interval:
            return
        now = self._clock()
        while self._next_trickle <= now:
            self._append(self._next_trickle)
            self._next_trickle += self._interval

    def _append(self, ts: int) -> int:
        ts -= ts % self._quantum
        if ts >= self._tail:
            self._tail = ts
        self._extra.append(ts)
        return self.count + len(self._extra) - 1

    def add(self, n: int, at_ns: int | None = None) -> list[int]:
        """Append `n` events stamped now (never earlier than the newest), or at `at_ns` (late if past)."""
        with self._lock:
            self._catch_up()
            seqs = []
            for _ in range(n):
                ts = max(self._clock(), self._tail) if at_ns is None else at_ns
                seqs.append(self._append(ts))
            return seqs

    def total(self) -> int:
        with self._lock:
            self._catch_up()
            return self.count + len(self._extra)

    def snapshot(self) -> Iterator[tuple[int, int]]:
        """Every event present now, as `(seq, ts)` in seq order."""
        with self._lock:
            self._catch_up()
            extra = array("q", self._extra)
        for i in range(self.count):
            yield i, self.history_ts(i)
        for k, ts in enumerate(extra):
            yield self.count + k, ts

    # -- paging ---------------------------------------------------------------------------------------

    def page(self, position: int, start_ns: int, end_ns: int | None, want: int) -> PageSlice:
        """Up to `want` events with seq >= `position` and start <= timestamp <= end, in seq order.

        `next_position` is where the chain continues; events skipped on the way lie outside the
        window, which never changes for a chain, so skipping them is final. `has_more` says whether a
        matching event exists beyond the page right now.
        """
        n = self.count
        lo = self.first_at_or_after(start_ns)
        hi = n if end_ns is None else self.first_after(end_ns)
        out: list[tuple[int, int]] = []
        p = position
        if p < n:
            p = max(p, lo)
            take = max(0, min(hi - p, want))
            out.extend((i, self.history_ts(i)) for i in range(p, p + take))
            p += take
            if p >= hi:
                p = n
        with self._lock:
            self._catch_up()
            extra = self._extra
            more = p < n
            if p >= n:
                k = p - n
                size = len(extra)
                while len(out) < want and k < size:
                    ts = extra[k]
                    if ts >= start_ns and (end_ns is None or ts <= end_ns):
                        out.append((n + k, ts))
                    k += 1
                p = n + k
                more = any(ts >= start_ns and (end_ns is None or ts <= end_ns) for ts in extra[k:])
        return PageSlice(out, p, more)
