"""Wiring: settings -> token, base URL, client, destination, pipeline; and the `check`/`run` flows.

Start-up validates everything that can be validated before the first page: the base URL rules, the
token (introspect), the streams the token allows, and the destination. Each problem is one UserError
line. `Connector` is what a caller (CLI, a serverless timer, a test) uses.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

import httpx

from opsentinel.config import Settings
from opsentinel.destination import Destination, open_destination
from opsentinel.errors import AuthError, OpSentinelError, StoreError
from opsentinel.events import Introspection
from opsentinel.pipeline import Pipeline, StreamResult
from opsentinel.source.baseurl import base_url_from_token, validate_base_url
from opsentinel.source.client import DEFAULT_TIMEOUT, DEFAULT_USER_AGENT, EventsClient
from opsentinel.source.ratelimit import RateLimiter
from opsentinel.source.retry import STARTUP_RETRY, RetryPolicy
from opsentinel.source.token import ApiToken
from opsentinel.state import Checkpoint
from opsentinel.streams import STREAMS, StreamSpec, get_stream
from opsentinel.telemetry import Telemetry
from opsentinel.timefmt import format_duration

log = logging.getLogger("opsentinel")

CLOCK_SKEW_WARNING = timedelta(minutes=5)
STATUS_TRIES = 3
STATUS_RETRY_DELAY = 0.5

REGIONS = {
    "events.1password.com": "1password.com (US / Business)",
    "events.ent.1password.com": "ent.1password.com (Enterprise)",
    "events.1password.ca": "1password.ca (Canada)",
    "events.1password.eu": "1password.eu (EU)",
}

# The retry policies `Connector.start` uses when it is given none: for event pages, and for the
# start-up introspect call. Module-level, not settings: users have no reason to tune them, while an
# embedding application or a test can (tests/e2e make them fast so fault tests never wait seconds).
# Read at each `start()`, so replacing them takes effect for the next connector.
RETRY_POLICY: RetryPolicy = RetryPolicy()
STARTUP_RETRY_POLICY: RetryPolicy = STARTUP_RETRY


def resolve_base_url(settings: Settings, token: ApiToken) -> str:
    """The configured base URL, or the one the token's `aud` claim names; validated either way."""
    if settings.base_url is not None:
        return validate_base_url(settings.base_url, allow_custom_host=settings.allow_custom_host)
    return base_url_from_token(token, allow_custom_host=settings.allow_custom_host)


def select_streams(
    requested: tuple[str, ...] | None, features: list[str]
) -> tuple[list[StreamSpec], list[str]]:
    """(streams to run, streams skipped because the token lacks their feature)."""
    wanted = [get_stream(name) for name in requested] if requested else list(STREAMS)
    runnable = [s for s in wanted if s.feature in features]
    skipped = [s.name for s in wanted if s.feature not in features]
    if not runnable:
        names = ", ".join(s.name for s in wanted)
        have = ", ".join(features) or "none"
        raise AuthError(f"the token allows none of the requested streams ({names}); its features: {have}")
    return runnable, skipped


@dataclass
class Connector:
    """One account's connector, started: token checked, streams chosen, destination open.

    `connector = await Connector.start(settings)`, then `poll_cycle()` (one drain of every stream:
    what a serverless timer calls) or `run_forever(stop)`, and `close()` at the end; or
    `async with await Connector.start(settings) as connector: ...`.
    """

    settings: Settings
    base_url: str
    client: EventsClient
    introspection: Introspection
    streams: list[StreamSpec]
    skipped: list[str]
    destination: Destination
    pipeline: Pipeline

    async def __aenter__(self) -> Connector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def account(self) -> str:
        return self.pipeline.account

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        verify: object = True,
        destination: Destination | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        startup_retry: RetryPolicy | None = None,
        lock: bool = True,
        timeout: httpx.Timeout | None = None,
    ) -> Connector:
        """Validate the base URL and token (introspect), choose streams, open the destination.

        `limiter` defaults to one RateLimiter for this token (the API's per-minute and per-hour
        budgets); `retry` (pages) and `startup_retry` (introspect) to the module's RETRY_POLICY and
        STARTUP_RETRY_POLICY. Tests and benchmarks pass their own. `lock` takes the store's
        one-writer lock (a connector that delivers needs it; `check` does not).
        """
        token = settings.api_token()
        base_url = resolve_base_url(settings, token)
        client = EventsClient(
            base_url,
            token,
            limiter=limiter if limiter is not None else RateLimiter(),
            retry=retry if retry is not None else RETRY_POLICY,
            startup_retry=startup_retry if startup_retry is not None else STARTUP_RETRY_POLICY,
            verify=verify,  # type: ignore[arg-type]
            user_agent=f"{DEFAULT_USER_AGENT} replica/{settings.replica_id}",
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        )
        await client.__aenter__()
        dest: Destination | None = None
        try:
            info = await client.introspect()
            streams, skipped = select_streams(settings.streams, list(info.features))
            if skipped:
                log.warning(
                    "skipping %s: the token lacks the feature%s (issue a token with %s to collect %s)",
                    ", ".join(skipped),
                    "s" if len(skipped) > 1 else "",
                    "them" if len(skipped) > 1 else "it",
                    "them" if len(skipped) > 1 else "it",
                )
            account = info.account_uuid or token.claims.account or info.uuid
            dest = destination or open_destination(settings)
            if lock:
                dest.lock()
            _warn_clock_skew(client)
            first_start, clamp_warning = settings.first_run_start(client.api_now())
            telemetry = Telemetry(account=account, replica=settings.replica_id)
            pipeline = Pipeline(
                client=client,
                sink=dest.sink,
                store=dest.store,
                account=account,
                first_start=first_start,
                telemetry=telemetry,
                backfill_workers=settings.backfill_workers,
                late_window=settings.late_window,
                ledgers=dest.ledgers,
                send_history=settings.sends_history,
            )
            connector = cls(settings, base_url, client, info, streams, skipped, dest, pipeline)
            await connector._warn_about_start(clamp_warning)
        except BaseException:
            await client.__aexit__(None, None, None)
            if dest is not None and destination is None:
                dest.close()
            raise
        return connector

    async def first_runs(self) -> list[str]:
        """The streams that have no checkpoint yet: their next run is a first run. (A checkpoint that
        cannot be read is not a first run: that stream reports the problem when it runs.)"""
        stored = await self._checkpoints()
        return [spec.name for spec in self.streams if spec.name not in stored]

    async def _checkpoints(self) -> dict[str, Checkpoint | None]:
        """stream -> its stored checkpoint; a stream whose checkpoint cannot be read maps to None."""
        out: dict[str, Checkpoint | None] = {}
        for spec in self.streams:
            try:
                cp = await asyncio.to_thread(self.destination.store.read, self.account, spec.name)
            except StoreError:
                out[spec.name] = None
                continue
            if cp is not None:
                out[spec.name] = cp
        return out

    def first_run_plan(self) -> str:
        """One line: what a first run will read and where it will send it."""
        since = self.pipeline.first_start.isoformat(timespec="seconds")
        if self.settings.sink != "sentinel":
            return f"events from {since} on to {self.destination.describe()}"
        main = f"{self.settings.stream} (the analytic rules' table)"
        if not self.settings.sends_history:
            return f"events from the run's start on to {main}; no history (--history-stream none)"
        return (
            f"events from the run's start on to {main}; those from {since} up to it to "
            f"{self.settings.history_stream}"
        )

    async def _warn_about_start(self, clamp_warning: str | None) -> None:
        """One warning when --since/--lookback is not used (streams that continue a checkpoint), and
        the 120-day clamp warning only when some stream does start from it; and into Sentinel without
        a history stream, one loud warning that a first run sends no history."""
        fresh = await self.first_runs()
        if fresh and not self.settings.sends_history:
            log.warning(
                "first run of %s into Sentinel: no history is sent (--history-stream none), because the "
                "1Password analytic rules would alert on all of it as new; load it into the history table "
                "(deploy the DCR from `op-sentinel azure template`) or into DuckDB "
                "(op-sentinel run --once --sink duckdb --lookback 7d --db history.duckdb)",
                ", ".join(fresh),
            )
        if not self.settings.start_was_given:
            return
        resumed = [
            name for name, cp in (await self._checkpoints()).items() if cp is None or cp.cursor or cp.backfill
        ]
        if resumed:
            log.warning(
                "--since/--lookback not used for %s: continuing from the stored checkpoint "
                "(to read history again, use a fresh --db or state directory)",
                ", ".join(resumed),
            )
        if clamp_warning and len(resumed) < len(self.streams):
            log.warning(clamp_warning)

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)
        self.destination.close()

    async def poll_cycle(self, stop: asyncio.Event | None = None) -> list[StreamResult]:
        """Drain every enabled stream once (concurrently), record status, write health rows."""
        results = await self.pipeline.poll_cycle(self.streams, stop)
        await self.record_status()
        await self.pipeline.write_health()
        return results

    async def record_status(self) -> None:
        """Persist each stream's status for `op-sentinel status`. Retried a few times, then
        reported: a status that cannot be written must not stop the delivery of events."""
        for attempt in range(1, STATUS_TRIES + 1):
            try:
                await asyncio.to_thread(self.destination.record_status, self.account, self.pipeline.telemetry)
                return
            except OpSentinelError as exc:
                if attempt == STATUS_TRIES:
                    log.warning("could not record stream status (tried %d times): %s", attempt, exc)
                    return
                await asyncio.sleep(STATUS_RETRY_DELAY * attempt)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Poll each stream, waiting `poll_interval` after each drain (backing off after failures),
        and write health rows at least every `health_interval`, until `stop` is set."""
        tasks = [asyncio.create_task(self.follow_forever(spec, stop)) for spec in self.streams]
        tasks.append(asyncio.create_task(self.health_forever(stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        await self.record_status()
        await self.pipeline.write_health()

    async def follow_forever(self, spec: StreamSpec, stop: asyncio.Event) -> None:
        """Follow the stream (live cursor every poll interval, first-run history alongside); after a
        failure, start again from the checkpoint with a growing pause."""
        interval = self.settings.poll_interval.total_seconds()
        failures = 0

        async def drained(_: StreamResult) -> None:
            nonlocal failures
            failures = 0
            await self.record_status()

        while not stop.is_set():
            result = await self.pipeline.follow_stream(spec, stop, interval, on_drained=drained)
            await self.record_status()
            if not result.error:
                continue
            failures += 1
            await _wait(stop, min(300.0, interval * 2 ** min(failures, 8)))

    async def health_forever(self, stop: asyncio.Event) -> None:
        """Write health rows when a stream's category changes and at least every health interval."""
        interval = self.settings.health_interval.total_seconds()
        last = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            due = loop.time() - last >= interval
            if self.pipeline.telemetry.take_changed() or due:
                await self.pipeline.write_health()
                last = loop.time()
            await _wait(stop, 1.0)


def _warn_clock_skew(client: EventsClient) -> None:
    offset = client.clock_offset
    if offset is not None and abs(offset) > CLOCK_SKEW_WARNING:
        direction = "behind" if offset < timedelta(0) else "ahead of"
        log.warning(
            "the Events API's clock is %s %s this host's; first-run start times follow the API's clock "
            "(check this host's time, e.g. NTP)",
            format_duration(abs(offset)),
            direction,
        )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
