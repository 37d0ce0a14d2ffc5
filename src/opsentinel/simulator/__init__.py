"""A faithful local 1Password Events API: generated, seedable data over real HTTP, with fault injection.

An application, not a mock: it issues and verifies its own ES256 tokens, paginates server-side with
signed cursors, rate-limits, trickles in live events and fails on request. It shares only the event
models (`opsentinel.events`) and stream table (`opsentinel.streams`) with the connector, never its
client logic. See docs/simulator.md.

    with SimulatorServer(SimulatorConfig(events=1000)) as sim:
        sim.base_url, sim.token, sim.faults.add(Fault.error(503, times=2)), sim.add_events("itemusages", 5)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsentinel.simulator.app import Request, RequestRecord, Response, SimulatorApp
    from opsentinel.simulator.config import ManualClock, SimulatorConfig
    from opsentinel.simulator.faults import Fault, FaultKind, FaultPlan
    from opsentinel.simulator.server import SimulatorServer

# Loaded on first use: `op-sentinel` registers the simulate command at start-up, and every other
# command should not pay for the simulator's data generator and token authority.
_WHERE = {
    "Request": "app",
    "RequestRecord": "app",
    "Response": "app",
    "SimulatorApp": "app",
    "ManualClock": "config",
    "SimulatorConfig": "config",
    "Fault": "faults",
    "FaultKind": "faults",
    "FaultPlan": "faults",
    "SimulatorServer": "server",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"opsentinel.simulator.{_WHERE[name]}"), name)


__all__ = [
    "Fault",
    "FaultKind",
    "FaultPlan",
    "ManualClock",
    "Request",
    "RequestRecord",
    "Response",
    "SimulatorApp",
    "SimulatorConfig",
    "SimulatorServer",
]
