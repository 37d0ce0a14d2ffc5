"""End-to-end fixtures: a real simulator over HTTP, a token file, a DuckDB path, and two ways to run
the `op-sentinel` command: in-process (`cli`, fast, through `opsentinel.cli.main`) and as a real
process (`cli_proc` / `start_proc`, for signals, terminals and a second process on the store).

Every test runs in its own working directory with no `OP_SENTINEL_*` variables set, and with fast
retry policies (the connector's module defaults), so fault tests never wait seconds.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from tests.e2e.e2ehelp import (
    COMMAND,
    SIM_EVENTS,
    SIM_SEED,
    CliResult,
    proc_env,
    run_in_process,
    write_token,
)
from tests.fakes.azure_identity import FakeManagedIdentity
from tests.fakes.azure_ingestion import FakeLogsIngestion

from opsentinel import connector
from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.source.retry import RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)
FAST_STARTUP_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=1.0)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh working directory, no OP_SENTINEL_* variables, fast retries."""
    for name in list(os.environ):
        if name.startswith("OP_SENTINEL_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(connector, "RETRY_POLICY", FAST_RETRY)
    monkeypatch.setattr(connector, "STARTUP_RETRY_POLICY", FAST_STARTUP_RETRY)
    return work


@pytest.fixture
def azure() -> Iterator[tuple[FakeManagedIdentity, FakeLogsIngestion]]:
    """A fake managed identity and a Logs Ingestion fake that accepts only its tokens."""
    with FakeManagedIdentity() as mi, FakeLogsIngestion(token_ok=mi.token_ok) as fake:
        yield mi, fake


@pytest.fixture
def workdir(_isolated: Path) -> Path:
    return _isolated


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """A simulator with SIM_EVENTS history events per stream over 7 days, no trickle."""
    with SimulatorServer(SimulatorConfig(events=SIM_EVENTS, seed=SIM_SEED)) as server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path, sim: SimulatorServer) -> Path:
    """The simulator's all-features token in a file only the owner can read."""
    return write_token(tmp_path / "op-token", sim.token)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "events.duckdb"


@pytest.fixture
def sim_args(sim: SimulatorServer, token_file: Path, db_path: Path) -> list[str]:
    """The flags that point a command at the simulator and the test's store (whose directory does
    not exist yet: the first run creates it)."""
    return ["--base-url", sim.base_url, "--token-file", str(token_file), "--db", str(db_path)]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run `op-sentinel ARGS` in this process; `env=` sets OP_SENTINEL_* variables for the call."""

    def run(args: list[object], env: Mapping[str, str] | None = None) -> CliResult:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            return run_in_process(args)

    return run


@pytest.fixture
def cli_proc(workdir: Path) -> Callable[..., CliResult]:
    """Run the installed `op-sentinel ARGS` as a real process (default retry policies)."""

    def run(args: list[str], env: Mapping[str, str] | None = None, timeout: float = 30) -> CliResult:
        done = subprocess.run(
            [*COMMAND, *[str(a) for a in args]],
            capture_output=True,
            text=True,
            env=proc_env(env),
            cwd=workdir,
            timeout=timeout,
            check=False,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def start_proc(workdir: Path, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `op-sentinel ARGS` in the background (stdout/stderr to files); killed after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        n = len(started)
        with (tmp_path / f"proc{n}.out").open("w") as out, (tmp_path / f"proc{n}.err").open("w") as err:
            proc = subprocess.Popen(
                [*COMMAND, *[str(a) for a in args]],
                stdout=out,
                stderr=err,
                text=True,
                env=proc_env(env),
                cwd=workdir,
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
