"""A Blob state through the CLI, on Azurite: run --once as a replica, status with owners and leases,
a unit held by a running replica skipped by name, an operator breaking a stuck lease, and the
combinations that are refused."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.e2ehelp import STREAMS, CliResult, assert_one_error_line, proc_output

from opsentinel.simulator import SimulatorServer

Cli = Callable[..., CliResult]


def _jsonl_uuids(path: Path, stream: str) -> list[str]:
    return [r["uuid_s"] for r in map(json.loads, path.read_text().splitlines()) if r["log_source"] == stream]


def _args(sim: SimulatorServer, token_file: Path, url: str, out: Path, replica: str) -> list[str]:
    return [
        "--base-url", sim.base_url, "--token-file", str(token_file), "--sink", "jsonl",
        "--jsonl-path", str(out), "--state", url, "--replica-id", replica,
    ]  # fmt: skip


def test_run_once_as_a_replica_then_status_names_owner_and_lease(
    sim: SimulatorServer, token_file: Path, tmp_path: Path, blob_state_url: str, cli: Cli
) -> None:
    out = tmp_path / "events.jsonl"
    result = cli(["run", "--once", *_args(sim, token_file, blob_state_url, out, "east")])
    assert result.code == 0, result.err
    for stream in STREAMS:
        assert sorted(_jsonl_uuids(out, stream)) == sorted(e["uuid"] for e in sim.events(stream))
    status = json.loads(cli(["status", "--format", "json", "--state", blob_state_url, "--sink", "jsonl"]).out)
    assert {v["stream"] for v in status} == set(STREAMS)
    assert all(v["owner"] == "east" and v["lease"] == "available" for v in status), status
    assert all(v["rows"] == sim.event_count(v["stream"]) for v in status)
    table = cli(["status", "--state", blob_state_url]).out  # no --sink: the Blob state is enough
    assert "owner" in table and "east" in table


def test_a_unit_a_live_replica_holds_is_skipped_by_name_until_its_lease_is_broken(
    sim: SimulatorServer,
    token_file: Path,
    tmp_path: Path,
    blob_state_url: str,
    cli: Cli,
    start_proc: Callable[..., Any],
) -> None:
    holder = start_proc(
        [
            "run",
            *_args(sim, token_file, blob_state_url, tmp_path / "a.jsonl", "west"),
            "--poll-interval",
            "1s",
        ]
    )
    deadline = time.monotonic() + 30
    while True:
        status = cli(["status", "--format", "json", "--state", blob_state_url, "--sink", "jsonl"])
        views = json.loads(status.out) if status.code == 0 else []
        if len([v for v in views if v["lease"] == "leased"]) == 3:
            break
        assert time.monotonic() < deadline, status.err
        time.sleep(0.3)
    other = cli(["run", "--once", *_args(sim, token_file, blob_state_url, tmp_path / "b.jsonl", "east")])
    assert other.code == 0, other.err
    assert other.err.count("replica west holds it") == 3 + 3  # a warning and a summary line each

    account = views[0]["account"]
    broke = cli(["break-lease", "--state", blob_state_url, "--account", account, "--stream", "itemusages"])
    assert broke.code == 0 and "its holder was west" in broke.out
    deadline = time.monotonic() + 25  # the holder finds out at its next renewal (every ~10 s)
    while "lost itemusages" not in proc_output(tmp_path)[1]:
        assert time.monotonic() < deadline, "the holder kept working a unit whose lease was broken"
        time.sleep(0.2)
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 0


def test_a_blob_state_is_refused_with_duckdb_and_break_lease_without_one(
    sim_args: list[str], blob_state_url: str, cli: Cli
) -> None:
    line = assert_one_error_line(cli(["run", "--once", *sim_args, "--state", blob_state_url]), code=2)
    assert "Blob state" in line and "DuckDB" in line
    line = assert_one_error_line(cli(["break-lease", "--account", "A", "--stream", "auditevents"]), code=2)
    assert "Blob container URL" in line
