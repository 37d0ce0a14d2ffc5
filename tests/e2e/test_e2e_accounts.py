"""Many accounts from one config: each with its own token, URL and streams; a bad token fails its
account only."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.e2e.e2ehelp import STREAMS, CliResult, store_rows, stored_uuids

from opsentinel.simulator import SimulatorConfig, SimulatorServer

Cli = Callable[..., CliResult]


@pytest.fixture
def two() -> Iterator[tuple[SimulatorServer, SimulatorServer]]:
    with (
        SimulatorServer(SimulatorConfig(events=60, seed=101)) as first,
        SimulatorServer(SimulatorConfig(events=45, seed=202)) as second,
    ):
        assert first.account_uuid != second.account_uuid
        yield first, second


def _config(tmp_path: Path, first: SimulatorServer, second: SimulatorServer, db: Path) -> Path:
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "first").write_text(first.token + "\n")
    (tmp_path / "tokens" / "first").chmod(0o600)
    config = tmp_path / "accounts.toml"
    config.write_text(
        f"""
db = "{db}"
lookback = "8d"

[[account]]
name = "first"
token_file = "tokens/first"
base_url = "{first.base_url}"

[[account]]
name = "second"
token_env = "SECOND_OP_TOKEN"
base_url = "{second.base_url}"
streams = ["auditevents", "itemusages"]
"""
    )
    return config


def test_every_account_is_collected_into_one_store(
    two: tuple[SimulatorServer, SimulatorServer], tmp_path: Path, cli: Cli
) -> None:
    first, second = two
    db = tmp_path / "fleet.duckdb"
    config = _config(tmp_path, first, second, db)
    result = cli(["run", "--once", "--config", config], env={"SECOND_OP_TOKEN": second.token})
    assert result.code == 0, result.err
    for stream in STREAMS:
        stored = stored_uuids(db, stream)
        want = {e["uuid"] for e in first.events(stream)}
        if stream != "signinattempts":
            want |= {e["uuid"] for e in second.events(stream)}
        assert sorted(stored) == sorted(want), stream
    checkpoints = store_rows(db, "SELECT account, stream FROM opsentinel_checkpoints ORDER BY 1, 2")
    assert {a for a, _ in checkpoints} == {first.account_uuid, second.account_uuid}
    assert len(checkpoints) == 3 + 2
    status = json.loads(cli(["status", "--format", "json", "--db", db]).out)
    assert {(v["account"], v["stream"]) for v in status} == set(checkpoints)


def test_a_bad_token_fails_its_account_and_leaves_the_others_running(
    two: tuple[SimulatorServer, SimulatorServer], tmp_path: Path, cli: Cli
) -> None:
    first, second = two
    db = tmp_path / "fleet.duckdb"
    config = _config(tmp_path, first, second, db)
    revoked = first.token  # a token of another account: the second simulator refuses it (401)
    result = cli(["run", "--once", "--config", config], env={"SECOND_OP_TOKEN": revoked})
    assert result.code == 1
    assert any("account second could not start" in line for line in result.errors), result.err
    assert revoked not in result.all
    assert sorted(stored_uuids(db, "auditevents")) == sorted(e["uuid"] for e in first.events("auditevents"))
    failing = store_rows(
        db,
        "SELECT action_type, details->>'last_error' FROM OnePasswordEventLogs_CL "
        "WHERE log_source = 'healthevents' AND category = 'failing'",
    )
    assert {stream for stream, _ in failing} == {"auditevents", "itemusages"}
    assert all("account second" in str(error) for _, error in failing)


def test_every_request_names_the_replica(sim: SimulatorServer, sim_args: list[str], cli: Cli) -> None:
    result = cli(["run", "--once", *sim_args, "--replica-id", "east-1"])
    assert result.code == 0, result.err
    agents = {r.user_agent for r in sim.request_log}
    assert agents and all(a.startswith("op-sentinel/") and a.endswith(" replica/east-1") for a in agents)
    bad = cli(["run", "--once", *sim_args, "--replica-id", "no spaces allowed"])
    assert bad.code == 2 and "replica_id" in bad.err
