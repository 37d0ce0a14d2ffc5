"""Everything op-sentinel writes is for its owner only: the DuckDB store, the state directory
(checkpoints, status, lock), the JSONL output, the dead-letter file and a token file written by
`simulate` are created 0600 (directories 0700) even under a permissive umask; and a token file that
others can read gets a warning."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

import pytest
from tests.fakes.azure_identity import FakeManagedIdentity
from tests.fakes.azure_ingestion import FakeLogsIngestion
from tests.reliability.relhelp import COMMAND, ForkServer, clean_env, cli_in_process, write_token

from opsentinel.simulator import SimulatorConfig, SimulatorServer

PERMISSIVE = 0o022


@pytest.fixture(scope="module")
def sim() -> SimulatorServer:
    server = SimulatorServer(SimulatorConfig(events=30, seed=9)).start()
    yield server  # type: ignore[misc]
    server.stop()


def _modes(root: Path) -> dict[str, str]:
    """Every path under `root` whose mode lets group or others in: name -> mode."""
    loose = {}
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            loose[str(path)] = oct(mode)
    return loose


def test_store_state_and_output_files_are_private(
    sim: SimulatorServer, forks: ForkServer, tmp_path: Path
) -> None:
    token = write_token(tmp_path / "op-token", sim.token)
    base = ["run", "--once", "--base-url", sim.base_url, "--token-file", token]
    store_dir = tmp_path / "new" / "store"
    result = forks.run([*base, "--db", store_dir / "events.duckdb"], cwd=tmp_path, umask=PERMISSIVE)
    assert result.code == 0, result.err
    assert (store_dir / "events.duckdb").exists()
    assert _modes(tmp_path / "new") == {}

    out_dir = tmp_path / "jsonl"
    out_dir.mkdir(mode=0o700)
    state = tmp_path / "state"
    result = forks.run(
        [*base, "--sink", "jsonl", "--jsonl-path", out_dir / "events.jsonl", "--state", state],
        cwd=tmp_path,
        umask=PERMISSIVE,
    )
    assert result.code == 0, result.err
    assert len(list(state.rglob("*.json"))) >= 6  # checkpoints and status of three streams
    assert _modes(state) == {}
    assert _modes(out_dir) == {}


def test_the_dead_letter_file_is_private(sim: SimulatorServer, forks: ForkServer, tmp_path: Path) -> None:
    token = write_token(tmp_path / "op-token", sim.token)
    refused = next(iter(sim.events("auditevents")))["uuid"]
    state = tmp_path / "state"
    with FakeManagedIdentity() as mi, FakeLogsIngestion(token_ok=mi.token_ok) as fake:
        fake.reject_when(lambda record: record.get("uuid") == refused)
        args = ["run", "--once", "--base-url", sim.base_url, "--token-file", token, "--sink", "sentinel"]
        args += [
            "--dce",
            fake.endpoint,
            "--dcr-id",
            fake.dcr_id,
            "--state",
            state,
            "--streams",
            "auditevents",
        ]
        env = {**mi.env(), "REQUESTS_CA_BUNDLE": fake.ca_path}
        result = forks.run(args, cwd=tmp_path, env=env, umask=PERMISSIVE)
    assert result.code == 0, result.err
    dead = state / "dead-letter.jsonl"
    assert refused in dead.read_text()
    assert _modes(state) == {}


def test_the_simulators_token_file_is_private(tmp_path: Path) -> None:
    token_file = tmp_path / "sim-token"
    proc = subprocess.Popen(
        [*COMMAND, "simulate", "--port", "0", "--events", "5", "--token-file", str(token_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
        preexec_fn=lambda: __import__("os").umask(PERMISSIVE),
    )
    try:
        deadline = time.monotonic() + 20
        while not (token_file.exists() and token_file.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert token_file.exists()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True), (0o644, True)])
def test_a_token_file_others_can_read_is_warned_about(
    sim: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int, warned: bool
) -> None:
    token = write_token(tmp_path / "op-token", sim.token)
    token.chmod(mode)
    result = cli_in_process(
        ["check", "--base-url", sim.base_url, "--token-file", token, "--db", tmp_path / "s.duckdb"], capsys
    )
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "readable by other users" in line]
    assert len(warnings) == (1 if warned else 0), result.err
    if warned:
        assert str(token) in warnings[0] and "chmod 600" in warnings[0]
    assert sim.token not in result.out + result.err
