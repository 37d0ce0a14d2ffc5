"""A first run into Sentinel does not flood the analytic rules: what happened before it goes to the
history stream (a table no rule reads), what happens from then on to the rules' table."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.e2ehelp import STREAMS, CliResult, assert_one_error_line, sentinel_args, sentinel_env
from tests.fakes.azure_identity import FakeManagedIdentity
from tests.fakes.azure_ingestion import HISTORY_STREAM, STREAM, FakeLogsIngestion

from opsentinel.simulator import SimulatorServer
from opsentinel.timefmt import parse_rfc3339

Cli = Callable[..., CliResult]


def _boundaries(state: Path) -> dict[str, datetime]:
    out = {}
    for path in (state / "checkpoints").glob("*/*.json"):
        data = json.loads(path.read_text())
        out[data["stream"]] = parse_rfc3339(data["first_run_at"])
    return out


def _times(records: list[dict[str, Any]], stream: str) -> list[datetime]:
    return [parse_rfc3339(r["timestamp"]) for r in records if r.get("log_source") == stream]


def test_history_goes_to_the_history_stream_and_only_new_events_reach_the_rules_table(
    sim: SimulatorServer,
    token_file: Path,
    tmp_path: Path,
    cli: Cli,
    azure: tuple[FakeManagedIdentity, FakeLogsIngestion],
) -> None:
    mi, fake = azure
    state = tmp_path / "state"
    args, env = sentinel_args(sim, token_file, fake, state), sentinel_env(mi, fake)
    check = cli(["check", *args], env=env)
    assert check.code == 0, check.err
    plan = [line for line in check.out.splitlines() if line.startswith("first run:")]
    assert len(plan) == 1 and STREAM in plan[0] and HISTORY_STREAM in plan[0], check.out

    before = datetime.now(UTC)
    assert cli(["run", "--once", *args], env=env).code == 0
    boundaries = _boundaries(state)
    assert set(boundaries) == set(STREAMS)
    time.sleep(1.1)  # sign-in times have whole seconds: fresh ones must not share the boundary's second
    fresh = {s: sim.add_events(s, 3) for s in STREAMS}
    late = {s: sim.add_events(s, 2, at=boundaries[s] - timedelta(hours=2)) for s in STREAMS}
    assert cli(["run", "--once", *args], env=env).code == 0

    main, history = fake.records_of(STREAM), fake.records_of(HISTORY_STREAM)
    for stream in STREAMS:
        b = boundaries[stream]
        assert before - timedelta(seconds=5) <= b <= datetime.now(UTC)
        assert all(t >= b for t in _times(main, stream)), (
            "an event older than the first run reached the rules"
        )
        assert all(t < b for t in _times(history, stream))
        counts = Counter(r["uuid"] for r in [*main, *history] if r.get("log_source") == stream)
        assert sorted(counts) == sorted(e["uuid"] for e in sim.events(stream)) and max(counts.values()) == 1
        assert {e["uuid"] for e in fresh[stream]} <= {r["uuid"] for r in main}
        assert {e["uuid"] for e in late[stream]} <= {r["uuid"] for r in history}, "a late old event alerted"
    # (`check` proves the history stream with its one check record)
    health = [r for r in history if r.get("log_source") == "healthevents" and r.get("type") != "check"]
    assert not health, "health rows go to the rules' table"
    assert [r for r in main if r.get("log_source") == "healthevents"]
    assert not check.warnings("no history")


def test_a_kill_during_the_history_keeps_the_boundary(
    sim: SimulatorServer,
    token_file: Path,
    tmp_path: Path,
    cli: Cli,
    start_proc: Callable[..., Any],
    azure: tuple[FakeManagedIdentity, FakeLogsIngestion],
) -> None:
    mi, fake = azure
    state = tmp_path / "state"
    args, env = sentinel_args(sim, token_file, fake, state), sentinel_env(mi, fake)
    sim.faults.page_cap = 2
    sim.faults.latency = 0.1
    proc = start_proc(["run", *args], env=env)
    deadline = time.monotonic() + 30
    while len(_boundaries(state) if (state / "checkpoints").exists() else {}) < 3:
        assert time.monotonic() < deadline, "no first commit"
        time.sleep(0.05)
    first = _boundaries(state)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    sim.faults.clear()
    assert cli(["run", "--once", *args], env=env).code == 0
    assert _boundaries(state) == first, "the boundary moved at a restart"
    main = fake.records_of(STREAM)
    for stream in STREAMS:
        assert all(t >= first[stream] for t in _times(main, stream))
        got = {r["uuid"] for r in fake.records if r.get("log_source") == stream}
        assert got == {e["uuid"] for e in sim.events(stream)}


def test_without_a_history_stream_no_history_reaches_azure_and_one_warning_says_so(
    sim: SimulatorServer,
    token_file: Path,
    tmp_path: Path,
    cli: Cli,
    azure: tuple[FakeManagedIdentity, FakeLogsIngestion],
) -> None:
    mi, fake = azure
    state = tmp_path / "state"
    args = [*sentinel_args(sim, token_file, fake, state), "--history-stream", "none"]
    before = datetime.now(UTC)
    result = cli(["run", "--once", *args], env=sentinel_env(mi, fake))
    assert result.code == 0, result.err
    assert len(result.warnings("no history is sent")) == 1, result.err
    assert fake.records_of(HISTORY_STREAM) == []
    for stream in STREAMS:
        assert all(t >= before - timedelta(seconds=5) for t in _times(fake.records, stream))


def test_a_dcr_without_the_history_stream_fails_in_one_line_and_sends_no_history_to_the_rules(
    sim: SimulatorServer,
    token_file: Path,
    tmp_path: Path,
    cli: Cli,
    azure: tuple[FakeManagedIdentity, FakeLogsIngestion],
) -> None:
    mi, fake = azure
    fake.dcrs[fake.dcr_id] = {STREAM}  # Microsoft's DCR, or one deployed before the history table
    state = tmp_path / "state"
    args, env = sentinel_args(sim, token_file, fake, state), sentinel_env(mi, fake)
    line = assert_one_error_line(cli(["check", *args], env=env), code=2)
    assert HISTORY_STREAM in line and "--history-stream none" in line
    result = cli(["run", "--once", *args], env=env)
    assert result.code == 1
    assert HISTORY_STREAM in result.errors[0]
    boundaries = _boundaries(state) if (state / "checkpoints").exists() else {}
    for stream in STREAMS:
        b = boundaries.get(stream, datetime.now(UTC))
        assert all(t >= b for t in _times(fake.records_of(STREAM), stream))
