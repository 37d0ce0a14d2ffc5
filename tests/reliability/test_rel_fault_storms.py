"""Fault storms from the simulator: the connector keeps going, backs off without hammering, and in
the end stores every event exactly once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from tests.reliability.relhelp import STREAMS, assert_store_exactly_once
from tests.reliability.stormhelp import run_until_stored, settings_for

from opsentinel.config import Settings
from opsentinel.simulator import Fault, FaultKind, SimulatorConfig, SimulatorServer
from opsentinel.source.client import EventsClient
from opsentinel.source.retry import RetryPolicy

HISTORY_DAYS = 2.0
STORM = 2.0  # seconds


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        events=250,
        days=HISTORY_DAYS,
        seed=17,
        page_cap=40,
        rate_limit_per_minute=0,
        rate_limit_per_hour=0,
        request_log_size=20_000,
    )
    with SimulatorServer(config) as server:
        yield server


def _storm_requests(sim: SimulatorServer) -> list[float]:
    """Arrival times (seconds, from the first) of the event requests answered 429."""
    times = [r.at_ns / 1e9 for r in sim.request_log if r.method == "POST" and r.status == 429]
    return [t - times[0] for t in times] if times else []


def _bursts(times: list[float], gap: float) -> list[list[float]]:
    """Requests grouped into bursts: a new burst starts after a silence of at least `gap` seconds."""
    bursts: list[list[float]] = []
    for t in sorted(times):
        if bursts and t - bursts[-1][-1] < gap:
            bursts[-1].append(t)
        else:
            bursts.append([t])
    return bursts


def test_a_429_storm_with_retry_after_is_waited_out_by_every_stream(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """Design: a 429 pauses the one rate limiter all streams share for Retry-After seconds, so during
    a storm of T seconds requests come in bursts at least Retry-After apart: at most T/R + 2 bursts,
    each of at most one request per chain (3 live cursors; plus 8 slices per stream while the first
    run's backfill pages history)."""
    db = tmp_path / "s.duckdb"
    settings = settings_for(sim, db, history_days=HISTORY_DAYS)
    retry_after = 1
    chains_in_backfill = len(STREAMS) * (1 + Settings().backfill_workers)

    def storm(elapsed: float) -> None:
        if elapsed < STORM and not sim.faults.rules:
            for stream in STREAMS:
                sim.faults.add(Fault.rate_limited(retry_after=retry_after, stream=stream, times=None))
        elif elapsed >= STORM:
            sim.faults.clear()

    run_until_stored(settings, sim, retry=RetryPolicy(), during=storm)  # first run: backfill
    assert_store_exactly_once(db, sim)
    bursts = _bursts(_storm_requests(sim), gap=retry_after / 2)
    assert len(bursts) <= STORM / retry_after + 2, bursts
    assert all(len(b) <= chains_in_backfill for b in bursts), bursts
    assert all(b[0] - a[-1] >= 0.9 * retry_after for a, b in itertools.pairwise(bursts)), bursts

    for stream in STREAMS:
        sim.add_events(stream, 30)
    sim.clear_request_log()
    run_until_stored(settings, sim, retry=RetryPolicy(), during=storm)  # live cursors only
    assert_store_exactly_once(db, sim)
    bursts = _bursts(_storm_requests(sim), gap=retry_after / 2)
    assert 2 <= len(bursts) <= STORM / retry_after + 2, bursts
    assert all(len(b) <= len(STREAMS) for b in bursts), bursts
    assert all(b[0] - a[-1] >= 0.9 * retry_after for a, b in itertools.pairwise(bursts)), bursts


def test_a_429_storm_without_retry_after_backs_off(sim: SimulatorServer, tmp_path: Path) -> None:
    """Design: without Retry-After a stream retries a page `RetryPolicy.max_attempts` (5) times with
    exponential backoff (each wait pausing every stream; 0.1 s doubling here instead of 1 s, to keep
    the test short), then fails that drain; `run` then waits
    `--poll-interval` * 2**failures before the next drain (0.4, 0.8, 1.6 s here). So in a storm of
    T = 2 s each stream starts at most 3 drains, and all streams together send at most
    3 * 5 * 3 requests, however the jitter falls."""
    db = tmp_path / "s.duckdb"
    settings = settings_for(sim, db, history_days=HISTORY_DAYS)
    run_until_stored(settings, sim)  # the first run, without faults
    for stream in STREAMS:
        sim.add_events(stream, 30)
    sim.clear_request_log()
    policy = RetryPolicy(base_delay=0.1, max_delay=3.0)

    def storm(elapsed: float) -> None:
        if elapsed < STORM and not sim.faults.rules:
            for stream in STREAMS:
                sim.faults.add(Fault.rate_limited(retry_after=None, stream=stream, times=None))
        elif elapsed >= STORM:
            sim.faults.clear()

    run_until_stored(settings, sim, retry=policy, during=storm)
    assert_store_exactly_once(db, sim)
    storm_requests = _storm_requests(sim)
    assert 0 < len(storm_requests) <= len(STREAMS) * policy.max_attempts * 3, storm_requests


KINDS = {kind.value for kind in FaultKind}


def _storm(probability: float) -> list[Fault]:
    """One rule of every kind: the timeout and stall rules outlast the client's read timeout."""
    return [
        Fault.error(500, times=None, probability=probability),
        Fault.error(502, times=None, probability=probability),
        Fault.error(503, times=None, probability=probability),
        replace(Fault.rate_limited(retry_after=None, times=None), probability=probability),
        replace(Fault.reset(times=None), probability=probability),
        replace(Fault.truncate(times=None), probability=probability),
        replace(Fault.stall(2.0, times=None), probability=probability),
        replace(Fault.delay(2.0, times=None), probability=probability),
        replace(Fault.empty_has_more(times=None), probability=probability),
    ]


def _one_of_each(stream: str) -> list[Fault]:
    """Each kind once, for the next requests of `stream`: so every kind surely fires."""
    return [replace(f, stream=stream, times=1, probability=1.0) for f in _storm(1.0)]


def test_mixed_fault_storm_through_backfill_and_live_polling(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5xx, 429 without Retry-After, connection resets, truncated JSON, a body that stalls, an answer
    later than the read timeout, empty pages with has_more, and cursors invalidated (a key
    rotation), all at once: first during the first run's backfill, then while polling live."""
    monkeypatch.setitem(EventsClient.__init__.__kwdefaults__, "timeout", httpx.Timeout(0.5, connect=1.0))
    db = tmp_path / "s.duckdb"
    settings = settings_for(sim, db, history_days=HISTORY_DAYS)
    steps: set[str] = set()

    def once(name: str) -> bool:
        new = name not in steps
        steps.add(name)
        return new

    def backfill_storm(elapsed: float) -> None:
        if once("storm"):  # after start-up: introspect is not part of this test
            for stream in STREAMS:
                for fault in _one_of_each(stream):
                    sim.faults.add(fault)
            for fault in _storm(0.04):
                sim.faults.add(fault)
        if elapsed > 0.3 and once("invalidate"):
            sim.faults.invalidate_cursors()  # every slice's cursor and the live cursor

    def stormed() -> bool:  # however quickly the history is read, every fault hits before the end
        return "invalidate" in steps and {kind.value for kind, _ in sim.faults.fired} == KINDS

    run_until_stored(settings, sim, during=backfill_storm, also=stormed)
    assert_store_exactly_once(db, sim)
    assert {kind.value for kind, _ in sim.faults.fired} == KINDS
    assert "invalidate" in steps

    sim.faults.clear()
    sim.faults.fired.clear()
    sim.faults.invalidate_cursors()  # the stored live cursors are refused at once
    steps.clear()
    for stream in STREAMS:
        sim.add_events(stream, 20)

    def live_storm(elapsed: float) -> None:
        if once("storm"):
            for stream in STREAMS:
                for fault in _one_of_each(stream):
                    sim.faults.add(fault)
            for fault in _storm(0.1):
                sim.faults.add(fault)
        if elapsed > 0.5 and once("more events"):
            for stream in STREAMS:
                sim.add_events(stream, 15)
        if elapsed > 2.0 and {kind.value for kind, _ in sim.faults.fired} == KINDS and once("calm"):
            sim.faults.clear()

    run_until_stored(settings, sim, during=live_storm, also=lambda: "calm" in steps)
    assert_store_exactly_once(db, sim)
    assert {kind.value for kind, _ in sim.faults.fired} == KINDS
