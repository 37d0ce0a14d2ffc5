"""Peak RSS of `run --once` into a fresh DuckDB file, per history size (one stream).

Each size gets its own simulator in a child process (rate limits off on the simulator side) and the
connector runs in another child process whose peak RSS is read from the kernel when it exits
(`ru_maxrss` through the small `bench.peakrss` launcher, exact for that one command). Runners:

- `cli` (default): the real command, `op-sentinel run --once --streams auditevents --db ...`; the
  client's own 590/min limiter paces it (2M events = 2,000 pages, about 3.4 minutes);
- `lib`: `python -m bench.memchild`, the same library calls with an unlimited client limiter
  (faster; shows memory when pages arrive as fast as they can be stored).

Goal (issue 6): peak RSS under 300 MB for 2M events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import runs
from bench.machine import ROOT
from bench.runs import STREAM, parse_count, short_count, stored_rows
from bench.simproc import BenchError, SimulatorProcess
from bench.table import Table, count, num, progress

GOAL_MB = 300.0
DAYS = 7.0


@dataclass
class ChildRun:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stderr: str


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m opsentinel.cli`."""
    script = Path(sys.executable).parent / "op-sentinel"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "opsentinel.cli"]


def run_once_args(
    base_url: str, token_file: Path, db: Path, *, days: float, extra: Sequence[str] = ()
) -> list[str]:
    """`run --once` into `db` from a local server holding `days` of history, quietly."""
    return [
        "run",
        "--once",
        "--base-url",
        base_url,
        "--token-file",
        str(token_file),
        "--db",
        str(db),
        "--lookback",
        f"{int(days) + 1}d",
        "--no-progress",
        "--log-level",
        "warning",
        *extra,
    ]


def _command(runner: str, sim: SimulatorProcess, db: Path) -> list[str]:
    workers = [] if runs.BACKFILL_WORKERS is None else ["--backfill-workers", str(runs.BACKFILL_WORKERS)]
    if runner == "cli":
        extra = ["--streams", STREAM, *workers]
        return [*cli_command(), *run_once_args(sim.base_url, sim.token_file, db, days=DAYS, extra=extra)]
    return [
        sys.executable,
        "-m",
        "bench.memchild",
        "--base-url",
        sim.base_url,
        "--token-file",
        str(sim.token_file),
        "--db",
        str(db),
        "--days",
        str(DAYS),
        *workers,
    ]


_ENV_AT_START = dict(os.environ)
"""The environment before `runtime.tune_process()` ran in this process (`python -m bench` imports
this module first): what it set for itself (ARROW_DEFAULT_MEMORY_POOL) must not reach a measured
command, which tunes itself, or the baseline revisions of `--compare`, which do not."""


def child_env() -> dict[str, str]:
    """The environment this benchmark started with, minus any OP_SENTINEL_* setting (flags must be the
    only settings), with the repository root importable (for `bench.memchild`, run from a temporary
    directory)."""
    env = {k: v for k, v in _ENV_AT_START.items() if not k.startswith("OP_SENTINEL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(
    command: list[str], *, timeout: float, cwd: Path, env: dict[str, str] | None = None
) -> ChildRun:
    """Run `command` under `bench.peakrss` and return its wall time and its own peak RSS."""
    log = cwd / "child-stderr.txt"
    report = cwd / "child-peak.json"
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-m", "bench.peakrss", str(report), *command]
    started = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(
            launcher,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=cwd,
            env=env if env is not None else child_env(),
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the command
            proc.wait()
            raise BenchError(f"{command[0]} ran longer than {timeout:.0f} s") from None
    seconds = time.perf_counter() - started
    stderr = log.read_text(errors="replace")
    try:
        peak = json.loads(report.read_text())
    except (OSError, ValueError):
        raise BenchError(
            f"no peak RSS reported (launcher exited {proc.returncode}): {stderr[-300:]}"
        ) from None
    return ChildRun(seconds, peak["maxrss_kib"] / 1024, int(peak["returncode"]), stderr)


def run(*, sizes: list[int], runner: str) -> list[Table]:
    if runner not in ("cli", "lib"):
        raise BenchError(f"unknown runner {runner!r} (cli or lib)")
    label = "op-sentinel run --once (CLI)" if runner == "cli" else "library, unlimited limiter"
    table = Table(
        f"memory: peak RSS of run --once into a fresh DuckDB ({label}, one stream)",
        ["events", "seconds", "events/s", "peak RSS MB", "rows stored"],
    )
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        workdir = Path(tmp)
        for size in sizes:
            db = workdir / f"memory-{size}.duckdb"
            with SimulatorProcess(events=size, days=DAYS, workdir=workdir) as sim:
                # Generous: the CLI's limiter allows ~9.8 pages/s.
                timeout = 120.0 + 2 * (size / 1000) / 9.0
                child = run_child(_command(runner, sim, db), timeout=timeout, cwd=workdir)
            if child.returncode != 0:
                tail = " | ".join(child.stderr.strip().splitlines()[-3:])
                raise BenchError(
                    f"run --once for {short_count(size)} events exited {child.returncode}: {tail}"
                )
            progress(
                f"memory {short_count(size)}: {child.seconds:.1f} s, peak RSS {child.peak_rss_mb:.1f} MB"
            )
            stored = stored_rows(db)
            table.add(
                count(size),
                num(child.seconds),
                count(round(size / child.seconds)),
                num(child.peak_rss_mb),
                count(stored) if stored == size else f"{count(stored)} of {count(size)}!",
            )
    largest = max(sizes)
    table.notes.append(
        f"goal: peak RSS under {GOAL_MB:g} MB for 2M events; seconds include interpreter start-up; "
        f"largest size here {short_count(largest)}."
    )
    if runner == "cli":
        table.notes.append("the CLI keeps its 590/min limiter: events/s is capped near 9,800.")
    return [table]


def parse_sizes(text: str) -> list[int]:
    return [parse_count(part) for part in text.split(",") if part.strip()]
