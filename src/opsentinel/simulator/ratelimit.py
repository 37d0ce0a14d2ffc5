"""The Events API's documented limits: 600 requests a minute and 30,000 an hour, per account.

Fixed windows aligned to the clock's minutes and hours. A refused request does not count. The wait
reported is the time until every exceeded window resets, rounded up to whole seconds (>= 1).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from opsentinel.simulator.rfc3339 import NS


class RateLimiter:
    """Counts requests per key; a limit of 0 disables that window. Thread-safe."""

    def __init__(self, *, per_minute: int, per_hour: int, clock: Callable[[], int]) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        self._clock = clock
        self._lock = threading.Lock()
        # key -> window length in seconds -> (window number, count)
        self._counts: dict[str, dict[int, tuple[int, int]]] = {}

    def hit(self, key: str) -> int | None:
        """Count one request for `key`; None if allowed, else the seconds to wait before retrying."""
        windows = [(60, self.per_minute), (3600, self.per_hour)]
        now = self._clock() / NS
        with self._lock:
            per_key = self._counts.setdefault(key, {})
            wait = 0.0
            for length, limit in windows:
                if limit <= 0:
                    continue
                number = int(now // length)
                seen_number, count = per_key.get(length, (number, 0))
                if seen_number != number:
                    count = 0
                if count >= limit:
                    wait = max(wait, (number + 1) * length - now)
            if wait > 0:
                return max(1, math.ceil(wait))
            for length, limit in windows:
                if limit <= 0:
                    continue
                number = int(now // length)
                seen_number, count = per_key.get(length, (number, 0))
                per_key[length] = (number, (count if seen_number == number else 0) + 1)
            return None

    def reset(self) -> None:
        """Forget all counts (tests use it between phases)."""
        with self._lock:
            self._counts.clear()
