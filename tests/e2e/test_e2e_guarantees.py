"""The guarantees of docs/usage.md ("What is guaranteed"), driven through the CLI only.

History that the API indexed out of order, events that arrive late after a first run, a cursor the
API rejects with late events still to come (DuckDB and Sentinel), Azure refusing every request and
then accepting again, two `run`s on one store, fresh events while a long backfill is rate limited,
and a stop in the middle of a backfill.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.e2ehelp import (
    STREAMS,
    CliResult,
    assert_exactly_once,
    assert_one_error_line,
    proc_output,
    sentinel_args,
    sentinel_env,
    stored_uuids,
    summary_line,
)
from tests.fakes.azure_identity import FakeManagedIdentity
from tests.fakes.azure_ingestion import FakeLogsIngestion

from opsentinel.simulator import SimulatorConfig, SimulatorServer

Cli = Callable[..., CliResult]


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


# --- history and late arrivals ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["0", "8"])
def test_history_indexed_out_of_order_is_stored_completely(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli, workers: str
) -> None:
    now = datetime.now(UTC)
    for stream in STREAMS:  # synced by a device days late: indexed after everything newer
        for days in (6, 4.5, 3, 2, 1.5):
            sim.add_events(stream, 2, at=now - timedelta(days=days))
    sim.faults.page_cap = 7  # many pages per slice
    result = cli(["run", "--once", *sim_args, "--backfill-workers", workers])
    assert result.code == 0, result.err
    assert_exactly_once(db_path, sim, STREAMS)


def test_events_arriving_late_after_the_first_run_are_kept_within_the_late_window(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    assert cli(["run", "--once", *sim_args, "--late-window", "6h"]).code == 0
    now = datetime.now(UTC)
    within = sim.add_events("itemusages", 3, at=now - timedelta(hours=5))
    beyond = sim.add_events("itemusages", 2, at=now - timedelta(hours=9))
    result = cli(["run", "--once", *sim_args, "--late-window", "6h"])
    assert result.code == 0, result.err
    stored = stored_uuids(db_path, "itemusages")
    assert {e["uuid"] for e in within} <= set(stored), "an event 5 h late was lost with a 6 h window"
    assert len(stored) == len(set(stored))
    # The documented limit: stamped before the live cursor's start (6 h before the first run) and
    # arriving after history was read, they belong to no chain that is still reading.
    assert not {e["uuid"] for e in beyond} & set(stored)


def _received(fake: FakeLogsIngestion, stream: str) -> Counter[str]:
    return Counter(str(r["uuid"]) for r in fake.records if r.get("log_source") == stream)


@pytest.mark.parametrize("sink", ["duckdb", "sentinel"])
def test_a_rejected_cursor_restarts_early_enough_for_late_events_and_sends_nothing_twice(
    sim: SimulatorServer,
    sim_args: list[str],
    token_file: Path,
    db_path: Path,
    tmp_path: Path,
    cli: Cli,
    azure: tuple[FakeManagedIdentity, FakeLogsIngestion],
    sink: str,
) -> None:
    mi, fake = azure
    args = sim_args if sink == "duckdb" else sentinel_args(sim, token_file, fake, tmp_path / "state")
    env = sentinel_env(mi, fake) if sink == "sentinel" else {}
    assert cli(["run", "--once", *args], env=env).code == 0
    fresh = {s: sim.add_events(s, 4) for s in STREAMS}
    sim.faults.invalidate_cursors()  # a key rotation: every stored cursor is refused
    result = cli(["run", "--once", *args], env=env)
    assert result.code == 0, result.err
    assert "rejected the stored cursor" in result.err
    # Late events that were not indexed yet when the cursor was rejected, stamped before the newest
    # event delivered: the new chain starts a late window before that, so they are still read.
    late = {s: sim.add_events(s, 3, at=datetime.now(UTC) - timedelta(hours=3)) for s in STREAMS}
    result = cli(["run", "--once", *args], env=env)
    assert result.code == 0, result.err
    for stream in STREAMS:
        expected = {e["uuid"] for e in [*fresh[stream], *late[stream]]}
        if sink == "duckdb":
            counts = Counter(stored_uuids(db_path, stream))
        else:
            counts = _received(fake, stream)
        assert expected <= set(counts), f"{stream}: {expected - set(counts)} lost"
        assert max(counts.values()) == 1, f"{stream}: the re-read after the rejection sent events twice"
        assert set(counts) == {e["uuid"] for e in sim.events(stream)}


def test_azure_refusing_every_request_stops_the_run_until_fixed_then_delivers_once(
    sim: SimulatorServer,
    token_file: Path,
    tmp_path: Path,
    cli: Cli,
    azure: tuple[FakeManagedIdentity, FakeLogsIngestion],
) -> None:
    mi, fake = azure
    state = tmp_path / "state"
    args = sentinel_args(sim, token_file, fake, state)
    env = sentinel_env(mi, fake)
    fake.reject_when(lambda r: True, code="InvalidPayload", message="The request could not be processed.")

    result = cli(["run", "--once", *args], env=env)
    line = assert_one_error_line(result, code=1)
    assert "refuses op-sentinel's uploads" in line
    # Per stream two chains (history, live cursor) may each have a page in flight: at most 8 requests
    # each to judge it (page, halves, quarters, a health record), and as many for the health rows.
    assert len(fake.uploads) <= 3 * 2 * 8 + 8, "a refusal of every request costs a few requests per page"
    assert not (state / "dead-letter.jsonl").exists(), "refusals of every request are not dead letters"
    status = json.loads(cli(["status", "--format", "json", "--sink", "sentinel", "--state", state]).out)
    assert {v["stream"] for v in status if v["last_error"] and "refuses" in v["last_error"]} == set(STREAMS)
    assert all(v["rows"] == 0 and v["dead_lettered"] == 0 for v in status)

    fake.accept_all()
    result = cli(["run", "--once", *args], env=env)
    assert result.code == 0, result.err
    for stream in STREAMS:
        counts = _received(fake, stream)
        assert sorted(counts) == sorted(e["uuid"] for e in sim.events(stream))
        assert max(counts.values()) == 1


# --- one writer -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sink", ["duckdb", "jsonl"])
def test_a_second_run_on_the_same_store_exits_naming_the_first(
    sim: SimulatorServer,
    sim_args: list[str],
    tmp_path: Path,
    cli_proc: Cli,
    start_proc: Callable[..., Any],
    sink: str,
) -> None:
    extra = [] if sink == "duckdb" else ["--sink", "jsonl", "--state", str(tmp_path / "state")]
    lock = tmp_path / ("store/events.duckdb.lock" if sink == "duckdb" else "state/run.lock")
    first = start_proc(["run", *sim_args, *extra, "--poll-interval", "1s"])
    _wait(lambda: lock.exists() and b"pid" in lock.read_bytes(), "the first run's lock")
    second = cli_proc(["run", "--once", *sim_args, *extra])
    line = assert_one_error_line(second, code=2)
    assert f"pid {first.pid}" in line and socket.gethostname() in line, line
    assert "one writer per store" in line
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    assert cli_proc(["run", "--once", *sim_args, *extra]).code == 0, "the lock goes with its holder"


# --- live while backfilling -------------------------------------------------------------------------


def test_fresh_events_are_stored_within_seconds_while_a_long_backfill_runs(
    tmp_path: Path, token_file: Path, cli: Cli, start_proc: Callable[..., Any]
) -> None:
    """A history of 40,000 events per stream in pages of 20 takes minutes at the API's 600
    requests a minute; fresh events do not wait for it (after the late window's own history)."""
    config = SimulatorConfig(events=40_000, days=30, seed=5, page_cap=20)
    with SimulatorServer(config) as sim:
        token = tmp_path / "big-token"
        token.write_text(sim.token + "\n")
        token.chmod(0o600)
        db = tmp_path / "big.duckdb"
        proc = start_proc(
            ["run", "--base-url", sim.base_url, "--token-file", str(token), "--db", str(db), "--lookback",
             "30d", "--poll-interval", "1s", "--late-window", "1h", "--streams", "auditevents"]
        )  # fmt: skip
        err = tmp_path / "proc0.err"
        _wait(
            lambda: "first-run history still being read" in err.read_text(),
            "the live chain's first drain",
            60,
        )
        fresh = sim.add_events("auditevents", 5)
        waited = _wait(
            lambda: {e["uuid"] for e in fresh} <= set(_query_uuids(cli, db)),
            "fresh events in the store",
            timeout=30,
        )
        status = json.loads(cli(["status", "--format", "json", "--db", str(db)]).out)
        (view,) = [v for v in status if v["stream"] == "auditevents"]
        assert view["history"] is not None, "the backfill had finished: the test proves nothing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        _, log = proc_output(tmp_path)
        assert "first-run history is not read completely" in log, "a stop mid-backfill is not a drain"
    print(f"fresh events stored {waited:.1f} s after they were added")
    assert waited < 1 + 8, f"fresh events waited {waited:.1f} s for the backfill"


def _query_uuids(cli: Cli, db: Path) -> list[str]:
    result = cli(["query", "--db", str(db), "--format", "json", "SELECT uuid_s FROM OnePasswordEventLogs_CL"])
    return [r["uuid_s"] for r in json.loads(result.out)] if result.code == 0 else []


def test_a_stop_during_the_backfill_is_not_reported_as_a_finished_drain(
    sim: SimulatorServer,
    sim_args: list[str],
    db_path: Path,
    tmp_path: Path,
    cli: Cli,
    start_proc: Callable[..., Any],
) -> None:
    sim.faults.page_cap = 1
    sim.faults.latency = 0.2
    proc = start_proc(["run", "--once", *sim_args])
    _wait(lambda: any(r.method == "POST" for r in sim.request_log), "the first page request")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    _, err = proc_output(tmp_path)
    assert code == 128 + signal.SIGTERM, err
    assert "stopped (SIGTERM) before" in err
    assert "Traceback" not in err
    for stream in STREAMS:
        line = summary_line(CliResult(code, "", err), stream)
        assert line.endswith("stopped"), line
    sim.faults.clear()
    assert cli(["run", "--once", *sim_args]).code == 0
    assert_exactly_once(db_path, sim, STREAMS)
