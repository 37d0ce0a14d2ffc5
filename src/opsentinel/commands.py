"""The `check` and `run` flows behind the CLI: start the connector, report, stop cleanly on signals."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from opsentinel.config import Settings
from opsentinel.connector import REGIONS, Connector
from opsentinel.errors import OpSentinelError, UserError
from opsentinel.pipeline import StreamResult
from opsentinel.timefmt import format_rfc3339

log = logging.getLogger("opsentinel")


def run_check(settings: Settings) -> None:
    """Print account, features, region and the streams that will run; raise UserError on problems."""
    asyncio.run(_check(settings))


async def _check(settings: Settings) -> None:
    if settings.accounts:
        await _check_accounts(settings)
        return
    connector = await Connector.start(settings, lock=False)
    try:
        info = connector.introspection
        host = connector.base_url.split("://", 1)[1]
        print(f"base URL:  {connector.base_url}")
        print(f"region:    {REGIONS.get(host, 'custom host ' + host)}")
        print(f"account:   {connector.account}")
        print(f"integration: {info.uuid}")
        print(f"features:  {', '.join(info.features) or 'none'}")
        print(f"streams:   {', '.join(s.name for s in connector.streams)}")
        if connector.skipped:
            print(f"skipped:   {', '.join(connector.skipped)} (token lacks the feature)")
        print(f"sink:      {connector.destination.describe()}")
        fresh = await connector.first_runs()
        if fresh:
            print(f"first run: {', '.join(fresh)}: {connector.first_run_plan()}")
        print(f"check:     {await asyncio.to_thread(connector.destination.sink.check)}")
    finally:
        await connector.close()


async def _check_accounts(settings: Settings) -> None:
    """`check` for every [[account]]: each one's block, then one error line if some failed."""
    from opsentinel.accounts import account_settings

    failed: list[str] = []
    for account in account_settings(settings):
        print(f"[account {account.account_name}]")
        try:
            await _check(account)
        except OpSentinelError as exc:
            print(f"error:     {exc}")
            failed.append(f"{account.account_name}: {exc}")
        print()
    if failed:
        raise UserError(f"{len(failed)} account(s) failed the check; {failed[0]}")


def run_connector(settings: Settings, *, once: bool, progress: bool) -> int:
    """`run` / `run --once`. Returns the exit status: 0 when everything fetched was delivered."""
    return asyncio.run(run_async(settings, once=once, progress=progress))


@contextmanager
def _progress(enabled: bool, connector: Connector) -> Iterator[None]:
    if not enabled:
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        tasks = {s.name: bar.add_task(f"{s.name:<15} starting", total=None) for s in connector.streams}

        def update(stream: str, result: StreamResult) -> None:
            span = (
                f"{format_rfc3339(result.oldest)} .. {format_rfc3339(result.newest)}"
                if result.oldest and result.newest
                else "no events yet"
            )
            bar.update(tasks[stream], description=f"{stream:<15} {result.events:>9,} events  {span}")

        connector.pipeline.on_progress = update
        try:
            yield
        finally:
            connector.pipeline.on_progress = None


async def run_async(settings: Settings, *, once: bool, progress: bool) -> int:
    """The body of `run`: start, drain once or poll until SIGINT/SIGTERM, close. Returns the exit status."""
    stop = _Stop()
    loop = asyncio.get_running_loop()
    handled = _install_signals(loop, stop)
    if settings.accounts or settings.state_url is not None:
        try:
            if settings.state_url is not None:
                return await _run_replica(settings, stop, once=once)
            return await _run_fleet(settings, stop, once=once)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
    connector = await Connector.start(settings)
    try:
        log.info(
            "account=%s streams=%s sink=%s",
            connector.account,
            ",".join(s.name for s in connector.streams),
            connector.destination.describe(),
        )
        with _progress(progress and once, connector):
            if once:
                results = await connector.poll_cycle(stop)
                return _report_once(results, stopped_by=stop.signal if stop.is_set() else None)
            await connector.run_forever(stop)
            return 0
    finally:
        await connector.close()
        for sig in handled:
            loop.remove_signal_handler(sig)


class _Stop(asyncio.Event):
    """The stop request, remembering which signal made it."""

    signal: signal.Signals | None = None


async def _run_fleet(settings: Settings, stop: _Stop, *, once: bool) -> int:
    """`run` over every [[account]] of the config."""
    from opsentinel.fleet import Fleet

    fleet = await Fleet.start(settings)
    try:
        if not once:
            await fleet.run_forever(stop)
            return 0
        outcomes = await fleet.poll_cycle(stop)
        codes = []
        for run, results in outcomes:
            print(f"[account {run.name}]", file=sys.stderr)
            codes.append(_report_once(results, stopped_by=stop.signal if stop.is_set() else None))
        failed = [run for run in fleet.accounts if run.connector is None]
        for run in failed:
            print(f"error: account {run.name} could not start ({run.error})", file=sys.stderr)
        if failed:
            codes.append(1)
        return max(codes, default=0)
    finally:
        await fleet.close()


async def _run_replica(settings: Settings, stop: _Stop, *, once: bool) -> int:
    """`run` with a Blob state: this process is one replica among any number (see replicas)."""
    import httpx

    from opsentinel.checkpoints.blob import BlobCheckpointStore
    from opsentinel.checkpoints.leases import LeaseManager
    from opsentinel.fleet import Fleet
    from opsentinel.replicas import Replica

    # Short timeouts: a request is started only with the lease's time left for it to end (replicas).
    fleet = await Fleet.start(
        settings,
        sink_options={"timeout": 10.0, "connect_timeout": 5.0} if settings.sink == "sentinel" else {},
        timeout=httpx.Timeout(10.0, connect=5.0),
    )
    try:
        store = fleet.shared.store
        assert isinstance(store, BlobCheckpointStore)
        replica = Replica(fleet, LeaseManager(store.state, settings.replica_id))
        log.info("replica %s on %s", settings.replica_id, store.state.location)
        if not once:
            await replica.run_forever(stop)
            return 0
        outcomes = await replica.run_once(stop)
        failed = 0
        for unit, result, owner in sorted(outcomes, key=lambda o: o[0].key):
            account = unit.key[0]
            if result is None:
                print(f"{unit.spec.name:<15} {account}  skipped: replica {owner} holds it", file=sys.stderr)
                continue
            state = f"FAILED: {result.error}" if result.error else "stopped" if result.stopped else "ok"
            failed += bool(result.error)
            print(f"{unit.spec.name:<15} {account}  {result.events:>9,} events  {state}", file=sys.stderr)
        not_started = [run for run in fleet.accounts if run.connector is None]
        for run in not_started:
            print(f"error: account {run.name} could not start ({run.error})", file=sys.stderr)
        if failed or not_started:
            return 1
        if stop.is_set() and stop.signal is not None:
            return 128 + int(stop.signal)
        return 0
    finally:
        await fleet.close()


def _install_signals(loop: asyncio.AbstractEventLoop, stop: _Stop) -> list[signal.Signals]:
    """SIGINT/SIGTERM set `stop` (graceful drain). Only possible on the main thread."""
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, _on_signal, stop, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        handled.append(sig)
    return handled


def _on_signal(stop: _Stop, sig: signal.Signals) -> None:
    if stop.is_set():
        return
    log.info("received %s: finishing the page in flight, saving checkpoints", sig.name)
    stop.signal = sig
    stop.set()


def _report_once(results: list[StreamResult], stopped_by: signal.Signals | None = None) -> int:
    """Print one line per stream; the exit status: 0 when every stream is up to date, 1 when one
    failed, 128 + the signal number when a signal stopped a stream before it was up to date."""
    failed = [r for r in results if r.error]
    stopped = [r for r in results if r.stopped and not r.error]
    for r in results:
        span = f"{format_rfc3339(r.oldest)} .. {format_rfc3339(r.newest)}" if r.oldest and r.newest else "-"
        state = f"FAILED: {r.error}" if r.error else "stopped" if r.stopped else "ok"
        extra = ""
        if r.duplicates:
            extra += f"  {r.duplicates:,} already delivered"
        if r.dead_lettered:
            extra += f"  {r.dead_lettered:,} dead-lettered"
        print(
            f"{r.stream:<15} {r.events:>9,} events  {r.pages:>6,} pages  {span}  {state}{extra}",
            file=sys.stderr,
        )
    if failed:
        names = ", ".join(r.stream for r in failed)
        print(
            f"error: {names} did not finish ({failed[0].error}); the checkpoints keep what was delivered",
            file=sys.stderr,
        )
        return 1
    if stopped:
        names = ", ".join(r.stream for r in stopped)
        why = f" ({stopped_by.name})" if stopped_by is not None else ""
        print(
            f"stopped{why} before {names} caught up; the checkpoints keep what was delivered and the next "
            "run continues from there",
            file=sys.stderr,
        )
        return 128 + int(stopped_by) if stopped_by is not None else 1
    return 0


def run_resend(settings: Settings) -> int:
    """`resend-dead-letters`: 0 when every dead letter was accepted, 1 when some are still refused."""
    from opsentinel.destination import sentinel_sink
    from opsentinel.resend import resend_dead_letters, scratch_dead_letter_dir

    scratch = scratch_dead_letter_dir()
    sink = sentinel_sink(settings, scratch)
    try:
        summary = resend_dead_letters(sink, settings.state_dir)
    finally:
        sink.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if not summary.found:
        print(f"no dead letters in {settings.state_dir}")
        return 0
    print(f"re-sent {summary.resent:,} of {summary.found:,} dead-lettered record(s)")
    if summary.still_refused:
        why = f" ({summary.refusal})" if summary.refusal else ""
        print(
            f"error: Azure still refuses {summary.still_refused:,} record(s); they stay in "
            f"{settings.state_dir / 'dead-letter.jsonl'}{why}",
            file=sys.stderr,
        )
        return 1
    return 0
