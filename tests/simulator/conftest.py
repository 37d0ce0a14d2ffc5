"""Fixtures: simulators on ephemeral loopback ports, driven over real HTTP with plain httpx."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.simulator.simhelp import T0, bearer

from opsentinel.simulator import ManualClock, SimulatorConfig, SimulatorServer


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def make_sim(clock: ManualClock) -> Iterator[Callable[..., SimulatorServer]]:
    """Start a simulator pinned to `T0` on the manual clock; every one is stopped after the test."""
    started: list[SimulatorServer] = []

    def make(**overrides: Any) -> SimulatorServer:
        overrides.setdefault("now", T0)
        overrides.setdefault("clock", clock)
        overrides.setdefault("events", 300)
        sim = SimulatorServer(SimulatorConfig(**overrides)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., SimulatorServer]) -> SimulatorServer:
    return make_sim()


@pytest.fixture
def api(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token), timeout=10) as client:
        yield client
