"""Helpers shared by the end-to-end tests: reading the store directly, comparing with the simulator."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from opsentinel.simulator import SimulatorServer

TABLE = "OnePasswordEventLogs_CL"
STREAMS = ("auditevents", "signinattempts", "itemusages")

# Small enough for speed, large enough for several pages when a test sets a page cap.
SIM_EVENTS = 40
SIM_SEED = 11

_CONSOLE_SCRIPT = Path(sys.executable).with_name("op-sentinel")
COMMAND: list[str] = (
    [str(_CONSOLE_SCRIPT)] if _CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "opsentinel.cli"]
)


@dataclass(frozen=True)
class CliResult:
    """What a user sees of one command: exit status, stdout and stderr."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def errors(self) -> list[str]:
        """The `error: ...` lines on stderr."""
        return [line for line in self.err_lines if line.startswith("error:")]

    def warnings(self, containing: str = "") -> list[str]:
        return [line for line in self.err_lines if " WARNING " in line and containing in line]

    @property
    def all(self) -> str:
        return self.out + self.err


def _reset_cli_logging() -> None:
    # `op-sentinel` installs its stderr handler once per process; a fresh one per call binds it to
    # the stderr of that call.
    root = logging.getLogger("opsentinel")
    for handler in list(root.handlers):
        root.removeHandler(handler)


def run_in_process(args: list[object]) -> CliResult:
    """`op-sentinel ARGS` through `opsentinel.cli.main`, with stdout and stderr captured."""
    from opsentinel.cli import main

    out, err = io.StringIO(), io.StringIO()
    _reset_cli_logging()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        _reset_cli_logging()
    return CliResult(code, out.getvalue(), err.getvalue())


def write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def proc_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OP_SENTINEL_")}
    base.update(env or {})
    base.setdefault("COLUMNS", "200")
    return base


def proc_output(tmp_path: Path, n: int = 0) -> tuple[str, str]:
    """(stdout, stderr) of the n-th process `start_proc` started."""
    return (tmp_path / f"proc{n}.out").read_text(), (tmp_path / f"proc{n}.err").read_text()


# --- reading the store directly (the test's own view, independent of `op-sentinel query`) -------


def store_rows(db: Path, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def stored_uuids(db: Path, stream: str) -> list[str]:
    """Every stored uuid of `stream`, duplicates kept (so a double store shows)."""
    rows = store_rows(db, 'SELECT uuid_s FROM "OnePasswordEventLogs_CL" WHERE log_source = ?', [stream])
    return [str(r[0]) for r in rows]


def sim_uuids(sim: SimulatorServer, stream: str) -> list[str]:
    return [str(e["uuid"]) for e in sim.events(stream)]


def assert_exactly_once(db: Path, sim: SimulatorServer, streams: tuple[str, ...]) -> None:
    """Every simulator event of each stream is stored once, and nothing else is."""
    for stream in streams:
        stored = stored_uuids(db, stream)
        assert len(stored) == len(set(stored)), f"{stream}: {len(stored) - len(set(stored))} duplicates"
        assert sorted(stored) == sorted(sim_uuids(sim, stream)), stream


REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "sentinel"


def summary_line(result: CliResult, stream: str) -> str:
    """The per-stream summary line `run --once` prints on stderr."""
    lines = [line.strip() for line in result.err_lines if line.startswith(stream + " ")]
    assert len(lines) == 1, f"expected one summary line for {stream}:\n{result.err}"
    return lines[0]


def assert_one_error_line(result: CliResult, code: int | None = None) -> str:
    """The command failed with exactly one `error:` line on stderr and no traceback; returns it."""
    assert result.code != 0, result.all
    if code is not None:
        assert result.code == code, result.all
    assert "Traceback" not in result.all
    assert len(result.errors) == 1, result.err
    return result.errors[0]


def sentinel_args(sim: SimulatorServer, token_file: Path, fake: Any, state: Path) -> list[str]:
    """The flags of a run into the Logs Ingestion fake `fake`, with checkpoints in `state`."""
    return [
        "--base-url", sim.base_url, "--token-file", str(token_file), "--sink", "sentinel",
        "--dce", fake.endpoint, "--dcr-id", fake.dcr_id, "--state", str(state),
    ]  # fmt: skip


def sentinel_env(identity: Any, fake: Any) -> dict[str, str]:
    """The environment that points azure-identity at the fake managed identity and trusts the fake."""
    return {**identity.env(), "REQUESTS_CA_BUNDLE": fake.ca_path}
