"""One bounded cycle over a Blob state: what an Azure Functions timer or queue trigger runs.

`run_cycle(settings, deadline=...)` starts every account of the settings, leases each unit it can
(or only the units named), drains each until the API says `has_more: false` or the deadline comes
(then it stops at a page boundary and commits), releases the leases, records status and writes health
rows, and returns a report. A unit another replica or invocation holds is skipped: two overlapping
invocations, a duplicate queue message or a CLI `run` elsewhere never poll one unit twice.

Health rows are written by a cycle only when a stream's state changed or its last health row is older
than the health interval (15 minutes by default), whatever the schedule: the Log Ingestion Failure rule
needs one an hour, and a one-minute timer must not write sixty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from opsentinel.config import Settings
from opsentinel.errors import ConfigError
from opsentinel.pipeline import StreamResult

__all__ = ["CycleReport", "UnitOutcome", "run_cycle"]

log = logging.getLogger("opsentinel")

DEADLINE_MARGIN = 20.0  # seconds kept between the last page's start and the deadline


@dataclass(frozen=True)
class UnitOutcome:
    account: str
    stream: str
    events: int = 0
    error: str | None = None
    skipped_for: str | None = None  # the replica that held the unit
    stopped: bool = False  # the deadline came before the stream caught up


@dataclass
class CycleReport:
    units: list[UnitOutcome] = field(default_factory=list)
    failed_accounts: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed_accounts and not any(u.error for u in self.units)


async def run_cycle(
    settings: Settings,
    *,
    deadline: float,
    units: Sequence[tuple[str, str]] | None = None,
) -> CycleReport:
    """One cycle (see the module docstring). `deadline`: seconds from now the host allows; `units`:
    (account, stream) pairs to work (an account by its [[account]] name or uuid), None for all."""
    from opsentinel.checkpoints.blob import BlobCheckpointStore
    from opsentinel.checkpoints.leases import LeaseManager
    from opsentinel.fleet import Fleet
    from opsentinel.replicas import Replica

    if settings.state_url is None:
        raise ConfigError(
            "a cycle needs a Blob state (OP_SENTINEL_STATE=https://ACCOUNT.blob.core.windows.net/C)"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    timer = loop.call_later(max(1.0, deadline - DEADLINE_MARGIN), stop.set)
    fleet = await Fleet.start(
        settings,
        sink_options={"timeout": 10.0, "connect_timeout": 5.0} if settings.sink == "sentinel" else {},
        timeout=httpx.Timeout(10.0, connect=5.0),
    )
    report = CycleReport()
    try:
        store = fleet.shared.store
        assert isinstance(store, BlobCheckpointStore)
        replica = Replica(fleet, LeaseManager(store.state, settings.replica_id), health="due")
        wanted = set(units) if units is not None else None
        outcomes = await replica.run_once(stop, only=wanted)
        for unit, result, owner in outcomes:
            report.units.append(_outcome(unit.key, unit.run.name, result, owner))
        for run in fleet.accounts:
            if run.connector is None:
                report.failed_accounts[run.name] = run.error or "could not start"
    finally:
        timer.cancel()
        await fleet.close()
    log.info(
        "cycle at %s: %d unit(s) worked, %d skipped, %d failed",
        datetime.now(UTC).isoformat(timespec="seconds"),
        sum(1 for u in report.units if u.skipped_for is None),
        sum(1 for u in report.units if u.skipped_for is not None),
        sum(1 for u in report.units if u.error),
    )
    return report


def _outcome(key: tuple[str, str], name: str, result: StreamResult | None, owner: str | None) -> UnitOutcome:
    account, stream = key
    if result is None:
        return UnitOutcome(account, stream, skipped_for=owner)
    return UnitOutcome(account, stream, result.events, result.error, stopped=result.stopped)
