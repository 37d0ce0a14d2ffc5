"""Fault injection: rules that make chosen requests fail the way real networks and servers do.

A `Fault` names what goes wrong (`kind`), which requests it hits (`path` exact, or `stream` for both of
its V1 and V2 paths, or every request), how many times (`times`, None = until removed) and how often
(`probability`). Rules are checked in the order added; the first live rule that matches a request
fires and is used up by one. Besides rules, a `FaultPlan` has three global knobs: `latency` (seconds
added to every request), `page_cap` (no page holds more than this many events, whatever the limit)
and `invalidate_cursors()` (every cursor issued so far is rejected with 400, like a key rotation).

Kinds:
    STATUS          an error status (500/502/503/429/...) with the version's error body; for 429,
                    `retry_after` seconds in a Retry-After header, or no header when None
    RESET           the connection is closed with a TCP reset before any response byte
    TRUNCATE        200 whose JSON body is cut in half (Content-Length matches the cut body)
    STALL           200 headers and half the body, then `seconds` of silence, then the connection closes
    EMPTY_HAS_MORE  200 with no items, `has_more: true` and a cursor that still holds the chain's place
    LATENCY         `seconds` of delay before the request is handled (others are served meanwhile)
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, replace
from enum import StrEnum

from opsentinel.streams import get_stream


class FaultKind(StrEnum):
    STATUS = "status"
    RESET = "reset"
    TRUNCATE = "truncate"
    STALL = "stall"
    EMPTY_HAS_MORE = "empty_has_more"
    LATENCY = "latency"


# Decided before authentication, as a proxy or a broken server would; then on a successful answer.
BEFORE_KINDS = frozenset({FaultKind.STATUS, FaultKind.RESET})
AFTER_KINDS = frozenset({FaultKind.TRUNCATE, FaultKind.STALL, FaultKind.EMPTY_HAS_MORE})
DELIVERY_KINDS = frozenset({FaultKind.TRUNCATE, FaultKind.STALL})


@dataclass(frozen=True)
class Fault:
    """One rule; build it with the class methods below."""

    kind: FaultKind
    path: str | None = None
    stream: str | None = None
    times: int | None = 1
    probability: float = 1.0
    status: int = 503
    retry_after: int | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or None for no limit)")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError("probability must be in (0, 1]")
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")
        if self.stream is not None:
            get_stream(self.stream)  # KeyError for a name that is not a stream

    def matches(self, path: str) -> bool:
        if self.path is not None and path != self.path:
            return False
        if self.stream is not None:
            spec = get_stream(self.stream)
            return path in (spec.path, spec.v1_path)
        return True

    @classmethod
    def error(
        cls,
        status: int = 503,
        *,
        path: str | None = None,
        stream: str | None = None,
        times: int | None = 1,
        retry_after: int | None = None,
        probability: float = 1.0,
    ) -> Fault:
        """Answer with `status` (e.g. 500, 502, 503) and an error body."""
        return cls(FaultKind.STATUS, path, stream, times, probability, status, retry_after)

    @classmethod
    def rate_limited(
        cls,
        *,
        retry_after: int | None = 1,
        path: str | None = None,
        stream: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """429, with `Retry-After: retry_after` or without the header when None."""
        return cls(FaultKind.STATUS, path, stream, times, 1.0, 429, retry_after)

    @classmethod
    def reset(cls, *, path: str | None = None, stream: str | None = None, times: int | None = 1) -> Fault:
        """Close the connection with a TCP RST instead of answering."""
        return cls(FaultKind.RESET, path, stream, times)

    @classmethod
    def truncate(cls, *, path: str | None = None, stream: str | None = None, times: int | None = 1) -> Fault:
        """Send a complete HTTP response whose JSON body is cut short."""
        return cls(FaultKind.TRUNCATE, path, stream, times)

    @classmethod
    def stall(
        cls,
        seconds: float = 30.0,
        *,
        path: str | None = None,
        stream: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Send half the body, go silent for `seconds`, then close the connection."""
        return cls(FaultKind.STALL, path, stream, times, seconds=seconds)

    @classmethod
    def empty_has_more(
        cls, *, path: str | None = None, stream: str | None = None, times: int | None = 1
    ) -> Fault:
        """Answer a page request with no items but `has_more: true` (allowed by the API docs)."""
        return cls(FaultKind.EMPTY_HAS_MORE, path, stream, times)

    @classmethod
    def delay(
        cls, seconds: float, *, path: str | None = None, stream: str | None = None, times: int | None = 1
    ) -> Fault:
        """Delay matching requests by `seconds`."""
        return cls(FaultKind.LATENCY, path, stream, times, seconds=seconds)


class FaultPlan:
    """The live set of fault rules and knobs. Thread-safe; tests change it while the server runs."""

    def __init__(
        self,
        faults: tuple[Fault, ...] = (),
        *,
        latency: float = 0.0,
        page_cap: int | None = None,
        seed: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = list(faults)
        self._random = random.Random(seed)
        self.latency = latency
        self.page_cap = page_cap
        self.cursor_epoch = 0
        self.fired: deque[tuple[FaultKind, str]] = deque(maxlen=1000)  # (kind, path), newest last

    def add(self, fault: Fault) -> Fault:
        """Add a rule (after the existing ones) and return it."""
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every rule and reset the knobs (latency 0, no page cap). Cursors stay as they are."""
        with self._lock:
            self._rules.clear()
            self.latency = 0.0
            self.page_cap = None

    @property
    def rules(self) -> list[Fault]:
        """The live rules, with their remaining `times`."""
        with self._lock:
            return list(self._rules)

    def invalidate_cursors(self) -> None:
        """Every cursor issued so far becomes invalid (400), as after a server-side key rotation."""
        with self._lock:
            self.cursor_epoch += 1

    def take(self, path: str, kinds: frozenset[FaultKind]) -> Fault | None:
        """The first live rule of `kinds` matching `path`, used up by one; None if none fires."""
        with self._lock:
            for i, rule in enumerate(self._rules):
                if rule.kind not in kinds or not rule.matches(path):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                if rule.times is not None:
                    if rule.times <= 1:
                        del self._rules[i]
                    else:
                        self._rules[i] = replace(rule, times=rule.times - 1)
                self.fired.append((rule.kind, path))
                return rule
            return None
