"""`run --once` against download-only on a pre-rendered, zero-latency server (issue 13).

For each size (events over the three streams), one `bench.prerendered_server` child holds every
event's JSON, built before the clock starts. Then, alternating, `repeat` times each:

- `download only`: `python -m bench.download`, a plain sequential client (http.client + orjson,
  one stream after another, parse and discard), as its own process. The 1.00x reference;
- `op-sentinel run --once`: the console script `op-sentinel run --once` into a fresh DuckDB file,
  all three streams, the command's defaults (backfill slices and all). When a size needs more
  requests than the command's 590-per-minute budget allows in one burst, it runs as
  `python -m bench.cli_unlimited` (the same command with that budget lifted) so that the figure is
  not the rate limit's.

Both run under `bench.peakrss`, so seconds include interpreter start-up and imports on both sides,
and peak RSS is each process's own. After every op-sentinel run the store is checked: each stream
holds exactly the events the server has, and no (log_source, uuid_s) twice.

With `compare` (`--compare REV,REV+NAME=VALUE,...`), each listed git revision of `src/` runs too,
in the same rounds: `git archive REV src` unpacked into a temporary directory and put first on
`PYTHONPATH`, so `opsentinel` is that revision's and the rest (interpreter, libraries, this
benchmark's launcher) is shared. `+NAME=VALUE` adds an environment variable to that variant's runs
(for prototypes switched on by one). This is how a change is measured against its baseline on
one shared machine: both in the same run, alternating.

Goal (issue 13): run --once <= 1.5x download-only (2.0x at the least), at 200k and at 2M; peak RSS
under 300 MB at 2M.
"""

# ruff: noqa: S608  (SQL here is built from the table-name constant only)
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from bench.machine import ROOT
from bench.memory import child_env, cli_command, run_child, run_once_args
from bench.runs import short_count
from bench.simproc import BenchError, ServerProcess
from bench.table import Table, count, num, progress
from opsentinel.schema import TABLE_NAME
from opsentinel.streams import STREAM_NAMES
from opsentinel.timefmt import format_rfc3339

GOAL = 1.5
LEAST = 2.0
DAYS = 7.0
BURST = 500  # requests op-sentinel may send at once within its 590/min budget (with a margin)


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float


def _server(events: int, workdir: Path) -> ServerProcess:
    token_file = workdir / f"prerendered-token-{events}"
    args = [
        sys.executable,
        "-m",
        "bench.prerendered_server",
        "--events",
        str(events),
        "--days",
        str(DAYS),
        "--token-file",
        str(token_file),
    ]
    # Building the events takes ~12 us each before the server answers.
    return ServerProcess(
        args, token_file, ready_line="ready", start_timeout=60 + events / 20_000, env=child_env()
    )


def _download(server: ServerProcess) -> list[str]:
    since = format_rfc3339(datetime.now(UTC) - timedelta(days=DAYS + 1))
    return [
        sys.executable,
        "-m",
        "bench.download",
        "--base-url",
        server.base_url,
        "--token-file",
        str(server.token_file),
        "--since",
        since,
    ]


@dataclass(frozen=True)
class Variant:
    """One way of running op-sentinel: this tree, or a revision's `src/` (with extra environment)."""

    label: str
    src: Path | None = None  # None: the installed (this tree's) package
    env: tuple[tuple[str, str], ...] = ()

    def environment(self) -> dict[str, str]:
        env = child_env()
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.src), env["PYTHONPATH"]])
        env.update(self.env)
        return env


def variants(compare: list[str], workdir: Path) -> list[Variant]:
    """This tree last, after each `REV[+NAME=VALUE...]` of `compare` (its src/ unpacked here)."""
    found = []
    for spec in compare:
        rev, *settings = spec.split("+")
        pairs = [item.split("=", 1) for item in settings]
        if any(len(pair) != 2 for pair in pairs):
            raise BenchError(f"--compare {spec!r}: write extra settings as REV+NAME=VALUE")
        env = tuple((name, value) for name, value in pairs)
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            archive = subprocess.run(
                ["git", "archive", "--format=tar", sha, "src"], cwd=ROOT, capture_output=True, check=True
            ).stdout
        except subprocess.CalledProcessError as exc:
            raise BenchError(f"--compare {rev!r}: not a git revision of {ROOT}") from exc
        target = workdir / f"rev-{sha}"
        if not target.exists():
            target.mkdir()
            tar = workdir / f"rev-{sha}.tar"
            tar.write_bytes(archive)
            with tarfile.open(tar) as t:
                t.extractall(target, filter="data")
        extra = "".join(f" {k}={v}" for k, v in env)
        found.append(Variant(f"op-sentinel @{sha}{extra}", target / "src", env))
    return [*found, Variant("op-sentinel run --once -> DuckDB")]


def _op_sentinel(server: ServerProcess, db: Path, *, lifted: bool, variant: Variant) -> list[str]:
    if lifted:
        command = [sys.executable, "-m", "bench.cli_unlimited"]
    elif variant.src is None:
        command = cli_command()
    else:  # the console script would import this tree's package first; the module takes PYTHONPATH's
        command = [sys.executable, "-m", "opsentinel.cli"]
    return [*command, *run_once_args(server.base_url, server.token_file, db, days=DAYS)]


def _measure(
    command: list[str], workdir: Path, timeout: float, what: str, env: dict[str, str] | None = None
) -> Sample:
    child = run_child(command, timeout=timeout, cwd=workdir, env=env)
    if child.returncode != 0:
        tail = " | ".join(child.stderr.strip().splitlines()[-3:])
        raise BenchError(f"{what} exited {child.returncode}: {tail}")
    return Sample(child.seconds, child.peak_rss_mb)


def check_store(db: Path, per_stream: dict[str, int]) -> str | None:
    """None when every stream holds exactly its events, once; else what is wrong."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            f'SELECT log_source, count(*), count(DISTINCT uuid_s) FROM "{TABLE_NAME}" '
            "WHERE log_source <> 'healthevents' GROUP BY 1"
        ).fetchall()
    stored = {source: (n, distinct) for source, n, distinct in rows}
    problems = []
    for stream, expected in per_stream.items():
        n, distinct = stored.get(stream, (0, 0))
        if n != expected or distinct != n:
            problems.append(f"{stream}: {n} rows ({distinct} distinct) of {expected}")
    return "; ".join(problems) or None


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def run(*, sizes: list[int], repeat: int, compare: list[str] | None = None) -> list[Table]:
    table = Table(
        f"prerendered: run --once vs download-only, pre-rendered server, 0 ms latency (median of {repeat})",
        ["events", "client", "seconds", "min-max s", "events/s", "peak RSS MB", "x download-only", "ratios"],
    )
    verdicts = []
    any_lifted = False
    with tempfile.TemporaryDirectory(prefix="bench-prerendered-") as tmp:
        workdir = Path(tmp)
        kinds = variants(compare or [], workdir)
        for size in sizes:
            lifted = size / 1000 + 60 > BURST
            any_lifted = any_lifted or lifted
            per_stream = dict.fromkeys(STREAM_NAMES, size // len(STREAM_NAMES))
            for i in range(size % len(STREAM_NAMES)):
                per_stream[STREAM_NAMES[i]] += 1
            downloads: list[Sample] = []
            runs: dict[Variant, list[Sample]] = {v: [] for v in kinds}
            started = time.perf_counter()
            with _server(size, workdir) as server:
                progress(
                    f"prerendered {short_count(size)}: server ready in {time.perf_counter() - started:.0f} s"
                )
                timeout = 120 + size / 2000
                for attempt in range(repeat):
                    sample = _measure(_download(server), workdir, timeout, "the download-only client")
                    downloads.append(sample)
                    line = [f"download {sample.seconds:.2f} s"]
                    # Each round starts at the next variant: a trend within a round (other work on the
                    # machine ramping up) does not always fall on the same row.
                    for variant in kinds[attempt % len(kinds) :] + kinds[: attempt % len(kinds)]:
                        db = workdir / f"prerendered-{size}-{attempt}.duckdb"
                        command = _op_sentinel(server, db, lifted=lifted, variant=variant)
                        got = _measure(command, workdir, timeout, variant.label, variant.environment())
                        runs[variant].append(got)
                        problem = check_store(db, per_stream)
                        if problem:
                            raise BenchError(
                                f"{variant.label} for {short_count(size)} events stored wrongly: {problem}"
                            )
                        for path in workdir.glob(f"{db.name}*"):
                            path.unlink()
                        line.append(
                            f"{variant.label} {got.seconds:.2f} s ({got.seconds / sample.seconds:.2f}x, "
                            f"{got.peak_rss_mb:.0f} MB)"
                        )
                    progress(f"prerendered {short_count(size)} #{attempt + 1}: " + "; ".join(line))
            reference = statistics.median(s.seconds for s in downloads)
            rows: list[tuple[str, list[Sample], list[float] | None]] = [
                ("download only (http.client + orjson)", downloads, None)
            ]
            for variant, samples in runs.items():
                ratios = [r.seconds / d.seconds for r, d in zip(samples, downloads, strict=True)]
                rows.append((variant.label + (" (limit lifted)" if lifted else ""), samples, ratios))
            for name, samples, shown in rows:
                seconds = [s.seconds for s in samples]
                median = statistics.median(seconds)
                table.add(
                    count(size),
                    name,
                    num(median, 2),
                    _spread(seconds),
                    count(round(size / median)),
                    num(max(s.peak_rss_mb for s in samples)),
                    f"{median / reference:.2f}",
                    " ".join(f"{r:.2f}" for r in shown) if shown else "-",
                )
            ratio = statistics.median(s.seconds for s in runs[kinds[-1]]) / reference
            verdict = (
                "meets" if ratio <= GOAL else ("within the least accepted" if ratio <= LEAST else "MISSES")
            )
            verdicts.append(f"{short_count(size)}: {ratio:.2f}x ({verdict})")
    table.notes.append(
        f"goal run --once <= {GOAL:g}x download-only ({LEAST:g}x at the least): " + "; ".join(verdicts)
    )
    table.notes.append(
        "each run a separate process (seconds include start-up); ratios = each run over the download "
        "run of the same round; rounds alternate every row, each starting at the next variant; every "
        "run's store checked: each event once."
    )
    if any_lifted:
        table.notes.append(
            "limit lifted = python -m bench.cli_unlimited: the command with its 590/min budget lifted "
            "(more requests than one burst allows)."
        )
    if len(kinds) > 1:
        table.notes.append(
            "@REV = that git revision's src/ first on PYTHONPATH, same interpreter and libraries."
        )
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    table.notes.append(f"load at the end: {load} (1, 5, 15 min)")
    return [table]
