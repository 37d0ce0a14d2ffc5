"""One bounded cycle over a Blob state (what a Functions timer runs), on Azurite and the simulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydantic import SecretStr

from opsentinel.config import load_settings
from opsentinel.cycle import run_cycle
from opsentinel.simulator import SimulatorConfig, SimulatorServer


def _health_rows(out: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return [r for r in rows if r["log_source"] == "healthevents"]


def test_cycles_drain_every_unit_and_write_health_rows_only_when_due(
    tmp_path: Path, blob_state_url: str
) -> None:
    out = tmp_path / "events.jsonl"
    with SimulatorServer(SimulatorConfig(events=120, seed=9, rate_limit_per_minute=0)) as sim:
        settings = load_settings(
            {"sink": "jsonl", "jsonl_path": str(out), "state": blob_state_url, "base_url": sim.base_url},
            environ={},
            config_path=None,
        ).model_copy(update={"token": SecretStr(sim.token)})
        first = asyncio.run(run_cycle(settings, deadline=300))
        assert first.ok and sorted(u.stream for u in first.units) == [
            "auditevents",
            "itemusages",
            "signinattempts",
        ]
        assert sum(u.events for u in first.units) == 360
        assert len(_health_rows(out)) == 3, "a first cycle reports every stream"

        sim.add_events("auditevents", 4)
        second = asyncio.run(run_cycle(settings, deadline=300))
        assert second.ok and sum(u.events for u in second.units) == 4
        assert len(_health_rows(out)) == 3, "healthy streams with a row minutes old get no new one"

        only = asyncio.run(run_cycle(settings, deadline=300, units=[("default", "itemusages")]))
        assert [u.stream for u in only.units] == ["itemusages"]


def test_overlapping_cycles_never_work_a_unit_twice(tmp_path: Path, blob_state_url: str) -> None:
    out = tmp_path / "events.jsonl"
    with SimulatorServer(SimulatorConfig(events=3000, seed=10, rate_limit_per_minute=0, latency=0.02)) as sim:
        sim.faults.page_cap = 20
        settings = load_settings(
            {"sink": "jsonl", "jsonl_path": str(out), "state": blob_state_url, "base_url": sim.base_url},
            environ={},
            config_path=None,
        ).model_copy(update={"token": SecretStr(sim.token)})

        async def both() -> list[object]:
            a = run_cycle(settings.model_copy(update={"replica_id": "tick-1"}), deadline=300)
            b = run_cycle(settings.model_copy(update={"replica_id": "tick-2"}), deadline=300)
            return list(await asyncio.gather(a, b))

        one, two = asyncio.run(both())
    worked = [u for report in (one, two) for u in report.units if u.skipped_for is None]  # type: ignore[attr-defined]
    skipped = [u for report in (one, two) for u in report.units if u.skipped_for is not None]  # type: ignore[attr-defined]
    assert sorted(u.stream for u in worked) == ["auditevents", "itemusages", "signinattempts"]
    assert len(skipped) == 3
    rows = [json.loads(line)["uuid_s"] for line in out.read_text().splitlines()]
    events = [r for r in rows]
    assert len(events) == len(set(events)), "a unit was worked by both cycles"
