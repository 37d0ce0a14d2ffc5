"""Replicas sharing a Blob state: each (account, stream) unit is worked by the one replica that
holds its lease (design notes: ../shared/design/scale-out.md; docs/scale-out.md for operators).

A replica starts every account of its config (`fleet`), then, every balance interval (~10 s, with
jitter), it beats its heartbeat, lists the units with their owners and the live replicas, and:

- claims free or expired units up to its fair share, ceil(units / live replicas), preferring the
  streams of accounts it already works (an account's streams share one rate budget);
- gives up what it holds beyond its share at a page boundary (the worker commits, then the lease is
  released), so a replica that joins gets work within two balance intervals.

Each held unit runs `Pipeline.follow_stream` (or one drain, `run --once`). Its lease is renewed by a
task of its own; when it is lost (a renewal refused, the local deadline passed, a write refused by the
storage service), the unit's worker is cancelled at once. Every request of the unit is admitted only
while the lease has time left for it to finish (`MIN_FETCH_WINDOW`, `MIN_UPLOAD_WINDOW`), so no request
of a unit overlaps another replica's ownership. The account's rate budget is shared out: a replica
holding k of an account's n streams uses k/n of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from opsentinel.checkpoints.leases import RELEASED, LeaseManager, UnitLease
from opsentinel.errors import LeaseHeld, LeaseLost, OpSentinelError, StoreError
from opsentinel.fleet import AccountRun, Fleet
from opsentinel.pipeline import StreamResult
from opsentinel.streams import StreamSpec

__all__ = ["BALANCE_EVERY", "MIN_FETCH_WINDOW", "MIN_UPLOAD_WINDOW", "Replica", "Unit"]

log = logging.getLogger("opsentinel")

BALANCE_EVERY = 10.0
# A request is started only with this much of the lease left (connect + read timeouts + margin).
MIN_FETCH_WINDOW = 17.0
MIN_UPLOAD_WINDOW = 17.0
RETRY_PAUSE_MAX = 300.0


@dataclass(frozen=True)
class Unit:
    """One (account, stream): the unit of ownership."""

    run: AccountRun
    spec: StreamSpec

    @property
    def key(self) -> tuple[str, str]:
        assert self.run.connector is not None
        return (self.run.connector.account, self.spec.name)


@dataclass
class _Held:
    unit: Unit
    lease: UnitLease
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[StreamResult | None] | None = None


class Replica:
    """One replica's work on a Blob state (see the module docstring)."""

    def __init__(
        self,
        fleet: Fleet,
        manager: LeaseManager,
        *,
        balance_every: float = BALANCE_EVERY,
        min_fetch_window: float = MIN_FETCH_WINDOW,
        min_upload_window: float = MIN_UPLOAD_WINDOW,
        health: str = "always",
    ) -> None:
        """`health`: "always" writes a health row per stream at the end of `run_once`; "due" only
        when its state changed or the last one (kept in the unit's status) is older than the health
        interval (a short-lived host polling every minute)."""
        self.health = health
        self.fleet = fleet
        self.manager = manager
        self.replica_id = manager.replica_id
        self.balance_every = balance_every
        self.min_fetch_window = min_fetch_window
        self.min_upload_window = min_upload_window
        self.held: dict[tuple[str, str], _Held] = {}
        for run in fleet.running:
            self._wire(run)

    # -- what a unit may do ---------------------------------------------------------------------

    def holds(self, account: str, stream: str) -> bool:
        held = self.held.get((account, stream))
        return held is not None and not held.lease.is_lost

    def admit(self, account: str, stream: str, what: str) -> None:
        """Raise LeaseLost unless this replica holds the unit with time left for the request."""
        held = self.held.get((account, stream))
        need = self.min_upload_window if what == "upload" else self.min_fetch_window
        if held is None or held.lease.is_lost:
            raise LeaseLost(f"{stream} of account {account} is not held by replica {self.replica_id}")
        left = held.lease.seconds_left()
        if left < need:
            raise LeaseLost(
                f"{stream} of account {account}: {left:.0f}s of the lease left, too little to start a "
                f"{what} ({need:.0f}s needed); the lease could not be renewed in time"
            )

    def _wire(self, run: AccountRun) -> None:
        connector = run.connector
        assert connector is not None
        account = connector.account
        connector.pipeline.admit = lambda stream, what: self.admit(account, stream, what)
        connector.destination.holds = self.holds

    def units(self) -> list[Unit]:
        return [Unit(run, spec) for run in self.fleet.running for spec in run.connector.streams]  # type: ignore[union-attr]

    # -- run --once ------------------------------------------------------------------------------

    async def run_once(
        self, stop: asyncio.Event, only: set[tuple[str, str]] | None = None
    ) -> list[tuple[Unit, StreamResult | None, str | None]]:
        """Drain every unit this replica can lease, once (of `only`: (account name or uuid, stream)
        pairs, when given). A unit another replica holds is skipped with a warning naming that
        replica: (unit, None, owner)."""
        out: list[tuple[Unit, StreamResult | None, str | None]] = []

        def wanted(unit: Unit) -> bool:
            if only is None:
                return True
            return (unit.key[0], unit.spec.name) in only or (unit.run.name, unit.spec.name) in only

        async def one(unit: Unit) -> None:
            try:
                held = await self._claim(unit)
            except LeaseHeld as exc:
                log.warning(
                    "skipping %s of account %s: replica %s holds it", unit.spec.name, unit.key[0], exc.owner
                )
                out.append((unit, None, exc.owner or "another replica"))
                return
            held.task = asyncio.create_task(self._drain(held))
            relay = asyncio.create_task(_relay(stop, held.stop))
            try:
                result = await held.task
                await self._write_health(unit)  # while it is held: its status records the row
            except asyncio.CancelledError:
                if not held.lease.is_lost:
                    raise
                result = StreamResult(unit.spec.name, error=f"the lease was lost: {held.lease.lost_reason}")
            finally:
                relay.cancel()
                await self._release(held)
            out.append((unit, result, None))

        worked = [unit for unit in self.units() if wanted(unit)]
        if self.health == "due":
            await self._recall_health(worked)
        try:
            await asyncio.gather(*(one(unit) for unit in worked))
        finally:
            await self.manager.close()
        return out

    async def _recall_health(self, units: Sequence[Unit]) -> None:
        """What the units' stored statuses say of their last health rows (for "due" health)."""
        membership = await self.manager.membership()
        stored = {(u.account, u.stream): u.status for u in membership.units if u.status is not None}
        for unit in units:
            status = stored.get(unit.key)
            if status is None or unit.run.connector is None:
                continue
            health = unit.run.connector.pipeline.telemetry._stream(unit.spec.name)
            health.health_at, health.health_category = status.health_at, status.health_category

    async def _write_health(self, unit: Unit) -> None:
        """The unit's health row (in "due" mode only when due), then its status, which records it."""
        connector = unit.run.connector
        assert connector is not None
        telemetry = connector.pipeline.telemetry
        health = telemetry.health.get(unit.spec.name)
        if health is None:
            return
        if self.health == "due" and not health.health_due(
            telemetry.clock(), unit.run.settings.health_interval
        ):
            return
        await connector.pipeline.write_health({unit.spec.name})
        await connector.record_status()

    async def _drain(self, held: _Held) -> StreamResult:
        connector = held.unit.run.connector
        assert connector is not None
        result = await connector.pipeline.drain_stream(held.unit.spec, held.stop)
        await connector.record_status()
        return result

    # -- run -----------------------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Balance and work units until `stop`; then every unit stops at a page boundary, commits
        and is released (a graceful hand-over), and the heartbeat is removed."""
        health = [
            asyncio.create_task(run.connector.health_forever(stop))  # type: ignore[union-attr]
            for run in self.fleet.running
        ]

        def started(run: AccountRun) -> None:
            self._wire(run)
            assert run.connector is not None
            health.append(asyncio.create_task(run.connector.health_forever(stop)))

        late = [
            asyncio.create_task(self.fleet.until_started(run, stop, started))
            for run in self.fleet.accounts
            if run.connector is None
        ]
        health += late
        try:
            while not stop.is_set():
                try:
                    await self._balance()
                except OpSentinelError as exc:
                    log.warning("replica %s could not balance units: %s", self.replica_id, exc)
                pause = self.balance_every * random.uniform(0.8, 1.2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
        finally:
            await self._release_all()
            for task in health:
                task.cancel()
            await asyncio.gather(*health, return_exceptions=True)
            for run in self.fleet.running:
                assert run.connector is not None
                await run.connector.record_status()
                await run.connector.pipeline.write_health()
            with contextlib.suppress(OpSentinelError):
                await self.manager.close()

    async def _balance(self) -> None:
        await self.manager.heartbeat()
        await self._reap()
        membership = await self.manager.membership()
        live = set(membership.live_replicas(timedelta(seconds=3 * self.balance_every))) | {self.replica_id}
        units = self.units()
        fair = math.ceil(len(units) / len(live)) if units else 0
        self._share_budget(units)
        if len(self.held) > fair:
            self._give_up(len(self.held) - fair)
            return
        info = {(u.account, u.stream): u for u in membership.units}
        free = [
            u
            for u in units
            if u.key not in self.held
            and not (u.key in info and info[u.key].leased and info[u.key].owner != self.replica_id)
        ]
        mine = {account for account, _ in self.held}
        free.sort(key=lambda u: (u.key[0] not in mine, u.key))
        for unit in free[: max(0, fair - len(self.held))]:
            try:
                held = await self._claim(unit)
            except LeaseHeld:
                continue  # another replica was quicker
            except StoreError as exc:
                log.warning("replica %s could not claim %s: %s", self.replica_id, unit.spec.name, exc)
                continue
            held.task = asyncio.create_task(self._follow(held))
            log.info("replica %s works %s of account %s", self.replica_id, unit.spec.name, unit.key[0])
        self._share_budget(units)

    def _share_budget(self, units: Sequence[Unit]) -> None:
        """Each account's rate limiter gets the share of streams this replica holds."""
        for run in self.fleet.running:
            assert run.connector is not None
            total = len(run.connector.streams)
            mine = sum(1 for (account, _) in self.held if account == run.connector.account)
            run.connector.client.limiter.set_share(max(mine, 1) / total if total else 1.0)

    def _give_up(self, count: int) -> None:
        """Hand `count` units over at a page boundary, breaking up the accounts held least first."""
        per_account: dict[str, int] = {}
        for account, _ in self.held:
            per_account[account] = per_account.get(account, 0) + 1
        order = sorted(self.held.values(), key=lambda h: (per_account[h.unit.key[0]], h.unit.key))
        for held in order[:count]:
            if not held.stop.is_set():
                log.info("replica %s hands %s over", self.replica_id, held.unit.spec.name)
                held.stop.set()

    async def _claim(self, unit: Unit) -> _Held:
        lease = await self.manager.claim(*unit.key)
        held = _Held(unit, lease)
        self.held[unit.key] = held

        def lost(_: UnitLease) -> None:
            if lease.lost_reason == RELEASED:
                return  # given up on purpose, after its worker stopped
            log.warning(
                "replica %s lost %s of account %s (%s): stopping its work at once",
                self.replica_id,
                unit.spec.name,
                unit.key[0],
                lease.lost_reason,
            )
            if held.task is not None:
                held.task.cancel()

        lease.on_lost(lost)
        return held

    async def _follow(self, held: _Held) -> StreamResult | None:
        """Follow the unit until asked to stop (or cancelled when the lease is lost), retrying after
        failures with a growing pause; then release it."""
        connector = held.unit.run.connector
        assert connector is not None
        interval = connector.settings.poll_interval.total_seconds()
        failures = 0
        try:
            while not held.stop.is_set():
                result = await connector.pipeline.follow_stream(
                    held.unit.spec, held.stop, interval, on_drained=lambda _: connector.record_status()
                )
                await connector.record_status()
                if not result.error:
                    continue
                if held.lease.is_lost:
                    break
                failures += 1
                with contextlib.suppress(TimeoutError):
                    pause = min(RETRY_PAUSE_MAX, interval * 2 ** min(failures, 8))
                    await asyncio.wait_for(held.stop.wait(), timeout=pause)
        finally:
            if not held.lease.is_lost:
                await self._release(held)
        return None

    async def _release(self, held: _Held, *, forget: bool = True) -> None:
        """Give the unit up (its worker has stopped). `forget`: drop its health, which is the new
        owner's to report from now on."""
        key = held.unit.key
        if self.held.get(key) is held:
            del self.held[key]
        connector = held.unit.run.connector
        if connector is not None and forget:
            connector.pipeline.telemetry.health.pop(held.unit.spec.name, None)
        if held.lease.is_lost:
            return
        try:
            await self.manager.release(held.lease)
        except OpSentinelError as exc:
            log.warning("replica %s could not release %s: %s", self.replica_id, held.unit.spec.name, exc)

    async def _reap(self) -> None:
        """Forget units whose lease was lost (their workers were cancelled when it happened)."""
        for key, held in list(self.held.items()):
            if held.lease.is_lost:
                if held.task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await held.task
                await self._release(held)
                self.held.pop(key, None)

    async def _release_all(self) -> None:
        for held in list(self.held.values()):
            held.stop.set()
        tasks = [h.task for h in self.held.values() if h.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for held in list(self.held.values()):
            await self._release(held)


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    """Set `target` when `source` is set (cancel to stop watching)."""
    await source.wait()
    target.set()
