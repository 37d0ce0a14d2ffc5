"""Every account of a deployment in one process (the `[[account]]` tables of the config).

Each account is a `Connector` of its own (its token, base URL, Events API client and rate limiter,
pipeline and health), so one account's trouble never slows or stops another's. They share the
deployment's store (the DuckDB file, or the state directory) and its one-writer lock; a sink is
shared by the accounts that send to the same destination.

An account that cannot start (a revoked token, a mistyped URL) is marked failing, with health rows
saying so, and is tried again with a growing pause while the others run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opsentinel.accounts import account_settings
from opsentinel.config import Settings
from opsentinel.connector import Connector
from opsentinel.destination import Destination, open_destination
from opsentinel.errors import OpSentinelError, UserError
from opsentinel.pipeline import StreamResult
from opsentinel.sinks.base import Batch
from opsentinel.streams import HEALTH_LOG_SOURCE, STREAMS
from opsentinel.telemetry import StreamFailed, Telemetry

__all__ = ["AccountRun", "Fleet"]

log = logging.getLogger("opsentinel")

RESTART_PAUSE = 30.0  # seconds before an account that could not start is tried again (doubling)
MAX_RESTART_PAUSE = 900.0


@dataclass
class AccountRun:
    """One account of the deployment: its settings, and its connector once it started."""

    settings: Settings
    connector: Connector | None = None
    error: str | None = None
    failures: int = 0

    @property
    def name(self) -> str:
        return self.settings.account_name or "default"


@dataclass
class Fleet:
    """The accounts of a deployment, started; see the module docstring."""

    settings: Settings
    accounts: list[AccountRun]
    shared: Destination
    options: dict[str, Any] = field(default_factory=dict)  # passed on to Connector.start
    sink_options: dict[str, Any] = field(default_factory=dict)  # passed on to every sink
    sinks: dict[tuple[Any, ...], Destination] = field(default_factory=dict)

    @classmethod
    async def start(
        cls, settings: Settings, *, sink_options: dict[str, Any] | None = None, **connector_options: Any
    ) -> Fleet:
        """Open the shared store (taking its lock) and start every account. Raises only when no
        account could start at all. `sink_options` go to every sink, `connector_options` to
        Connector.start."""
        shared = open_destination(settings, **(sink_options or {}))
        try:
            shared.lock()
        except BaseException:
            shared.close()
            raise
        try:
            runs = [AccountRun(s) for s in account_settings(settings)]
        except BaseException:
            shared.close()
            raise
        fleet = cls(settings, runs, shared, connector_options, sink_options or {})
        try:
            await asyncio.gather(*(fleet._start(run) for run in fleet.accounts))
            if not any(run.connector for run in fleet.accounts):
                first = fleet.accounts[0]
                raise UserError(f"no account could start; {first.name}: {first.error}")
        except BaseException:
            await fleet.close()
            raise
        return fleet

    def _destination(self, account: Settings) -> Destination:
        """The shared store with the sink for `account`'s destination (one sink per destination)."""
        key = (account.dce, account.dcr_id, account.stream, account.history_stream)
        if self.settings.sink != "sentinel" or key == (
            self.settings.dce,
            self.settings.dcr_id,
            self.settings.stream,
            self.settings.history_stream,
        ):
            return Destination(
                self.shared.sink,
                self.shared.store,
                self.shared.status,
                self.shared.label,
                self.shared.ledgers,
                owns_store=False,
            )
        if key not in self.sinks:
            from opsentinel.destination import sentinel_sink

            sink = sentinel_sink(account, account.state_dir, **self.sink_options)
            label = f"sentinel {account.dce} {account.dcr_id} {account.stream}"
            self.sinks[key] = Destination(
                sink, self.shared.store, self.shared.status, label, self.shared.ledgers
            )
        return self.sinks[key]

    async def _start(self, run: AccountRun) -> None:
        try:
            run.connector = await Connector.start(
                run.settings, destination=self._destination(run.settings), lock=False, **self.options
            )
        except OpSentinelError as exc:
            run.error = str(exc)
            run.failures += 1
            log.warning("account %s could not start: %s", run.name, exc)
            return
        run.error = None
        run.failures = 0
        log.info(
            "account %s (%s): streams %s",
            run.name,
            run.connector.account,
            ",".join(s.name for s in run.connector.streams),
        )

    @property
    def running(self) -> list[AccountRun]:
        return [run for run in self.accounts if run.connector is not None]

    async def poll_cycle(
        self, stop: asyncio.Event | None = None
    ) -> list[tuple[AccountRun, list[StreamResult]]]:
        """One drain of every stream of every started account, concurrently (accounts that could
        not start get a failing health row instead)."""
        started = self.running

        async def one(run: AccountRun) -> list[StreamResult]:
            assert run.connector is not None
            return await run.connector.poll_cycle(stop)

        results = await asyncio.gather(*(one(run) for run in started))
        await self._failing_health()
        return list(zip(started, results, strict=True))

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Follow every account until `stop`; accounts that could not start are tried again."""
        tasks = [asyncio.create_task(self._account_forever(run, stop)) for run in self.accounts]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _account_forever(self, run: AccountRun, stop: asyncio.Event) -> None:
        await self.until_started(run, stop)
        if run.connector is not None and not stop.is_set():
            await run.connector.run_forever(stop)

    async def until_started(
        self, run: AccountRun, stop: asyncio.Event, started: Callable[[AccountRun], None] | None = None
    ) -> None:
        """Try an account that could not start again, with a growing pause, until it runs (then
        call `started`) or `stop` is set; its streams get failing health rows meanwhile."""
        while not stop.is_set() and run.connector is None:
            await self._failing_health()
            pause = min(MAX_RESTART_PAUSE, RESTART_PAUSE * 2 ** max(0, run.failures - 1))
            try:
                await asyncio.wait_for(stop.wait(), timeout=pause)
            except TimeoutError:
                await self._start(run)
        if run.connector is not None and started is not None:
            started(run)

    async def _failing_health(self) -> None:
        """A `failing` health row for each stream of each account that could not start."""
        failed = [run for run in self.accounts if run.connector is None and run.error]
        if not failed:
            return
        records = []
        for run in failed:
            telemetry = Telemetry(account=_account_hint(run))
            for spec in STREAMS:
                if run.settings.streams and spec.name not in run.settings.streams:
                    continue
                telemetry.stream_failed(StreamFailed(spec.name, f"account {run.name}: {run.error}", None))
            records += telemetry.health_records()
        try:
            await asyncio.to_thread(
                self.shared.sink.write, Batch(HEALTH_LOG_SOURCE, records, telemetry.clock()), None
            )
        except OpSentinelError as exc:
            log.warning("could not write health rows: %s", exc)

    async def close(self) -> None:
        for run in self.accounts:
            if run.connector is not None:
                await run.connector.close()
        for destination in self.sinks.values():
            destination.close()
        self.shared.close()


def _account_hint(run: AccountRun) -> str:
    """The account's uuid from its token's claims if they can be read, else its configured name."""
    try:
        account = run.settings.api_token().claims.account
    except (OpSentinelError, ValueError):
        account = None
    return account or run.name
