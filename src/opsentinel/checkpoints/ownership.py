"""Ownership of one unit by this process: the lease's local deadline, its loss, its write context.

A `UnitLease` is what a claim returns (see leases) and what the Blob store writes with: the lease id,
the deadline the holder counts for itself (from *before* the acquire or renew was sent, on a clock
that keeps running while the host is suspended, so the holder always believes it expires earlier
than the service does), and the ETag, metadata and version last seen on the unit's blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Final

from azure.core.exceptions import HttpResponseError

from opsentinel.checkpoints.blobaccess import META_LEDGER, error_code
from opsentinel.errors import LeaseLost
from opsentinel.state import StreamStatus

__all__ = ["LOSS_CODES", "UnitLease", "clock", "is_loss"]

log = logging.getLogger(__name__)

# Refusals that mean "not yours any more" (lease operations answer 409, writes 412).
LOSS_CODES: Final = frozenset(
    {
        "LeaseIdMismatchWithLeaseOperation",
        "LeaseIsBrokenAndCannotBeRenewed",
        "LeaseNotPresentWithLeaseOperation",
        "LeaseIsBreakingAndCannotBeChanged",
        "LeaseAlreadyBroken",
        "LeaseIdMissing",
        "LeaseIdMismatchWithBlobOperation",
        "LeaseNotPresentWithBlobOperation",
        "LeaseLost",
        "BlobNotFound",
    }
)

_CLOCK_ID: Final[int] = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def clock() -> float:
    """Seconds on a clock that keeps counting while the host is suspended (CLOCK_BOOTTIME on
    Linux): a frozen VM must wake up knowing its leases ran out."""
    return time.clock_gettime(_CLOCK_ID)


def is_loss(exc: BaseException) -> bool:
    return isinstance(exc, HttpResponseError) and error_code(exc) in LOSS_CODES


class UnitLease:
    """This process's ownership of one unit, and the write context the store uses for it: the lease
    id, the ETag and metadata last seen on the unit blob, the ledger generation's ETag.

    `cp_lock` serialises writes to the unit blob, `ledger_lock` appends to the ledger (each write
    moves an ETag the next one is conditioned on).
    """

    def __init__(
        self,
        account: str,
        stream: str,
        owner: str,
        lease_id: str,
        duration: float,
        clock: Callable[[], float] = clock,
    ) -> None:
        self.account = account
        self.stream = stream
        self.owner = owner
        self.lease_id = lease_id
        self.duration = duration
        self._clock = clock
        self._deadline = -math.inf
        self._lost_reason: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callbacks: list[Callable[[UnitLease], None]] = []
        self._flag = threading.Lock()
        self.lost = asyncio.Event()
        self.cp_lock = threading.RLock()
        self.ledger_lock = threading.RLock()
        self.etag: str | None = None
        self.metadata: dict[str, str] = {}
        self.version: int | None = None  # the stored checkpoint's version (0: none yet)
        self.ledger_etag: str | None = None
        self.ledger_size: int | None = None
        self.status: StreamStatus | None = None  # the newest status given to the store
        self.status_stored: StreamStatus | None = None
        self.status_written_at = -math.inf

    def __repr__(self) -> str:
        state = f"lost: {self._lost_reason}" if self._lost_reason else f"{self.seconds_left():.1f}s left"
        return f"UnitLease({self.account!r}, {self.stream!r}, owner={self.owner!r}, {state})"

    @property
    def key(self) -> tuple[str, str]:
        return (self.account, self.stream)

    @property
    def ledger_generation(self) -> str | None:
        return self.metadata.get(META_LEDGER) or None

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    @property
    def is_lost(self) -> bool:
        return self._lost_reason is not None

    def seconds_left(self) -> float:
        """How long this process may still act as the owner (0 once lost). Start nothing (an upload,
        a page) that may take longer: the service lets the lease go a little after this."""
        if self._lost_reason is not None:
            return 0.0
        return max(0.0, self._deadline - self._clock())

    def extend(self, sent_at: float) -> None:
        """Record a granted acquire or renew that was sent at `sent_at` (this lease's clock)."""
        self._deadline = max(self._deadline, sent_at + self.duration)

    def check(self, doing: str) -> None:
        """LeaseLost unless this process may still write the unit."""
        if self._lost_reason is not None:
            raise LeaseLost(f"cannot {doing}: {self._describe()} {self._lost_reason}; nothing stored")
        if self.seconds_left() <= 0:
            raise LeaseLost(f"cannot {doing}: the lease of {self._describe()} ran out; nothing stored")

    def _describe(self) -> str:
        return f"{self.stream} (account {self.account})"

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_lost(self, callback: Callable[[UnitLease], None]) -> None:
        """Call `callback(lease)` once when the lease is lost (at once if it already is). Callbacks
        run on the event loop the lease was claimed from (so `task.cancel()` is safe in them),
        before `lost` is set."""
        with self._flag:
            if self._lost_reason is None:
                self._callbacks.append(callback)
                return
        callback(self)

    def mark_lost(self, reason: str) -> None:
        """Record the loss (the first reason wins) and signal it; safe from any thread."""
        with self._flag:
            if self._lost_reason is not None:
                return
            self._lost_reason = reason
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._signal()
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._signal)

    def _signal(self) -> None:
        with self._flag:
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("a lease-lost callback failed")
        self.lost.set()
