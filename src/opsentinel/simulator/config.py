"""Simulator settings (one frozen value) and the clock it runs on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from opsentinel.simulator.faults import Fault
from opsentinel.simulator.rfc3339 import NS, to_ns
from opsentinel.streams import FEATURES

Clock = Callable[[], int]
"""Returns the current time in nanoseconds since the epoch."""

ErrorStyle = Literal["auto", "v1", "v2"]
MissingBody = Literal["reset", "error"]

DEFAULT_AUDIENCE = "events.1password.com"


class ManualClock:
    """A clock that moves only when told to: for tests of time windows, trickle and rate limits."""

    def __init__(self, start: datetime | int) -> None:
        self._now = start if isinstance(start, int) else to_ns(start)
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += int(seconds * NS)


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes one simulator. Defaults suit tests; `simulate` overrides a few.

    `events` is per stream; they are spread over `days` ending at `now` (start-up time unless given).
    `trickle` is new events per minute per stream while running (0: none; library default, so fixtures
    stay still); `latency` seconds is added to every request. Rate limits of 0 disable that window.
    `error_style` "auto" answers V1 paths and V1 introspect with `{"Error":{"Message":...}}` and everything
    else with `{"status":N,"message":...}`. `missing_body` "reset" treats an absent body as `{}`.
    """

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 1
    events: int = 5000
    days: float = 7.0
    trickle: float = 0.0
    latency: float = 0.0
    rate_limit_per_minute: int = 600
    rate_limit_per_hour: int = 30_000
    retry_after: bool = True
    audience: str = DEFAULT_AUDIENCE
    features: tuple[str, ...] = FEATURES
    error_style: ErrorStyle = "auto"
    missing_body: MissingBody = "reset"
    retention_days: float = 120.0
    page_cap: int | None = None
    faults: tuple[Fault, ...] = ()
    now: datetime | None = None
    clock: Clock | None = field(default=None, compare=False)
    request_log_size: int = 1000

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError("events must be >= 0")
        if self.days <= 0:
            raise ValueError("days must be > 0")
        if self.trickle < 0 or self.latency < 0:
            raise ValueError("trickle and latency must be >= 0")
        if self.rate_limit_per_minute < 0 or self.rate_limit_per_hour < 0:
            raise ValueError("rate limits must be >= 0 (0 disables)")
        if self.page_cap is not None and self.page_cap < 1:
            raise ValueError("page_cap must be >= 1")
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features: {', '.join(sorted(unknown))}")

    def resolved_clock(self) -> Clock:
        return self.clock if self.clock is not None else time.time_ns
