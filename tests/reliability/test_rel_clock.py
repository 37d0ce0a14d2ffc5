"""Clock trouble between the connector and the API: the simulator's clock runs ahead of or behind
the connector's, or jumps while the connector polls. Every event is still stored exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from tests.reliability.relhelp import STREAMS, SimClock, assert_store_exactly_once
from tests.reliability.stormhelp import drain_once, run_until_stored, settings_for

from opsentinel.simulator import SimulatorConfig, SimulatorServer

HISTORY_DAYS = 1.0
HOUR = 3600.0


def _simulator(clock: SimClock, *, trickle: float = 0.0) -> SimulatorServer:
    config = SimulatorConfig(
        events=300,
        days=HISTORY_DAYS,
        seed=23,
        page_cap=50,
        trickle=trickle,
        rate_limit_per_minute=0,
        rate_limit_per_hour=0,
        clock=clock,
    )
    return SimulatorServer(config)


def _sim_now(clock: SimClock) -> datetime:
    return datetime.fromtimestamp(clock() / 1e9, UTC)


@pytest.mark.parametrize("offset_hours", [3.0, -0.5], ids=["api-3h-ahead", "api-30min-behind"])
def test_skewed_api_clock_loses_nothing(tmp_path: Path, offset_hours: float) -> None:
    clock = SimClock(offset_hours * HOUR)
    with _simulator(clock) as sim:
        db = tmp_path / "s.duckdb"
        settings = settings_for(sim, db, history_days=HISTORY_DAYS + max(0.0, -offset_hours) / 24)
        run_until_stored(settings, sim)
        for stream in STREAMS:
            sim.add_events(stream, 5)  # stamped with the API's (skewed) now
            sim.add_events(stream, 3, at=_sim_now(clock) - timedelta(minutes=20))  # late
        drain_once(settings)
        assert_store_exactly_once(db, sim)


def test_api_clock_two_hours_behind_at_the_first_run(tmp_path: Path) -> None:
    """The host's clock runs 2 h fast (or the API's slow): events stamped during the next hours
    must still reach the live cursor."""
    clock = SimClock(-2 * HOUR)
    with _simulator(clock) as sim:
        db = tmp_path / "s.duckdb"
        settings = settings_for(sim, db, history_days=HISTORY_DAYS + 0.2)
        run_until_stored(settings, sim)
        for stream in STREAMS:
            sim.add_events(stream, 5)  # new events, stamped with the API's now
        drain_once(settings)
        assert_store_exactly_once(db, sim)


def test_api_clock_jumps_forward_and_back_while_polling(tmp_path: Path) -> None:
    clock = SimClock()
    with _simulator(clock, trickle=10.0) as sim:
        db = tmp_path / "s.duckdb"
        settings = settings_for(sim, db, history_days=HISTORY_DAYS)
        steps: set[str] = set()

        def jumps(elapsed: float) -> None:
            if elapsed > 0.3 and "forward" not in steps:
                steps.add("forward")
                clock.jump(HOUR)  # an hour of trickle arrives at once
            if elapsed > 0.8 and "back" not in steps:
                steps.add("back")
                clock.jump(-2 * HOUR)  # an hour before the connector's now
                for stream in STREAMS:
                    sim.add_events(stream, 4)

        # Both jumps happen while it polls, however fast the first drain was.
        run_until_stored(settings, sim, during=jumps, also=lambda: steps == {"forward", "back"})
        clock.freeze()
        run_until_stored(settings, sim)
        assert steps == {"forward", "back"}
        assert_store_exactly_once(db, sim)


def test_the_simulator_dates_its_answers_with_its_own_clock() -> None:
    clock = SimClock(-2 * HOUR)
    with _simulator(clock) as sim:
        answer = httpx.get(
            f"{sim.base_url}/api/v2/auth/introspect", headers={"Authorization": f"Bearer {sim.token}"}
        )
    served = parsedate_to_datetime(answer.headers["Date"])
    assert abs((served - _sim_now(clock)).total_seconds()) < 5
