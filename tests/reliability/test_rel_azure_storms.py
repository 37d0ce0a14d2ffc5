"""Fault storms from the Azure side: the Logs Ingestion fake throttles (with and without
Retry-After), fails with 5xx, drops connections and answers later than the read timeout, while the
connector sends a first run's backfill and then live events. The sink waits as told, backs off,
keeps going, and in the end every event reached Azure; only an upload whose answer came too late
can have been accepted twice."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from tests.fakes.azure_ingestion import FakeLogsIngestion
from tests.reliability.relhelp import STREAMS, sim_uuids
from tests.reliability.stormhelp import run_until_stored

from opsentinel.config import Settings
from opsentinel.destination import Destination, open_destination
from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.source.retry import RetryPolicy

PAGE_CAP = 25
SINK_TIMEOUT = 0.4
# The sink's policy, with the first backoff at 0.05 s instead of 2 s so the test stays short; more
# tries than the default 6 so that no upload gives up during the scripted storms below.
SINK_RETRY = RetryPolicy(max_attempts=12, base_delay=0.05, max_delay=0.5, max_retry_after=300.0)


def _received(fake: FakeLogsIngestion) -> Counter[tuple[str, str]]:
    return Counter(
        (str(r["log_source"]), str(r["uuid"])) for r in fake.records if r.get("log_source") in STREAMS
    )


def _all_delivered(fake: FakeLogsIngestion, sim: SimulatorServer) -> Callable[[], bool]:
    """A check that every event the simulator has now reached the fake."""
    expected = {(s, u) for s in STREAMS for u in sim_uuids(sim, s)}
    return lambda: expected <= _received(fake).keys()


def test_azure_storms_are_waited_out_and_every_event_arrives(
    fake_ingestion: FakeLogsIngestion, azure_ca_path: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_ingestion
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    config = SimulatorConfig(events=150, days=2, seed=19, page_cap=PAGE_CAP, rate_limit_per_minute=0)
    with SimulatorServer(config) as sim:
        settings = Settings(
            base_url=sim.base_url,
            token=SecretStr(sim.token),
            sink="sentinel",
            dce=fake.endpoint,
            dcr_id=fake.dcr_id,
            state=tmp_path / "state",
            since=datetime.now(UTC) - timedelta(days=2, hours=1),
            poll_interval=timedelta(seconds=0.2),
        )

        def destination(timeout: float) -> Destination:
            return open_destination(
                settings, connection_verify=azure_ca_path, retry=SINK_RETRY, sleep=sleep, timeout=timeout
            )

        # The first run, throttled: 4 answers of 429 with Retry-After: 1.
        fake.fail_next(429, 4, retry_after="1")
        run_until_stored(settings, sim, destination=destination(30.0), complete=_all_delivered(fake, sim))
        throttled = [u for u in fake.uploads if u.status == 429]
        assert len(throttled) == 4
        assert len(sleeps) == 4 and all(s == 1.0 for s in sleeps), (
            f"a retry did not wait Retry-After: {sleeps}"
        )
        assert not [k for k, n in _received(fake).items() if n > 1], "an event was accepted twice"

        # Live events, through 5xx bursts, dropped connections, 429 without Retry-After and answers
        # that come later than the read timeout.
        for stream in STREAMS:
            sim.add_events(stream, 40)
        sleeps.clear()
        fake.fail_next(500, 2)
        fake.fail_next(503, 3)
        fake.drop_next(3)
        fake.fail_next(429, 3)
        fake.latency = SINK_TIMEOUT * 2

        def calm(elapsed: float) -> None:
            if elapsed > 0.4:
                fake.latency = 0.0

        caplog.clear()
        caplog.set_level(logging.WARNING, logger="opsentinel.sinks.sentinel")
        complete = _all_delivered(fake, sim)
        run_until_stored(settings, sim, destination=destination(SINK_TIMEOUT), complete=complete, during=calm)
        assert len(sleeps) >= 2 + 3 + 3 + 3, "every failed upload was retried after a wait"
        # An upload the sink gave up waiting for may still have been accepted: only those can repeat.
        timed_out = [
            r
            for r in caplog.records
            if r.name == "opsentinel.sinks.sentinel" and "timed out" in r.getMessage()
        ]
        twice = sum(n - 1 for n in _received(fake).values() if n > 1)
        assert twice <= len(timed_out) * PAGE_CAP, (
            f"{twice} events accepted twice; {len(timed_out)} answers came late"
        )
