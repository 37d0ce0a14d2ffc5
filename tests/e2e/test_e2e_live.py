"""`op-sentinel run` as a real process: it tails new events while readers query the same store, and
SIGTERM/SIGINT stop it cleanly (exit 0, every stored event checkpointed). `run --once` shows a
progress bar only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.e2e.e2ehelp import (
    COMMAND,
    STREAMS,
    TABLE,
    CliResult,
    assert_exactly_once,
    proc_env,
    proc_output,
    summary_line,
)

from opsentinel.simulator import SimulatorServer

Cli = Callable[..., CliResult]
Start = Callable[..., subprocess.Popen[str]]

EVENTS_SQL = f"SELECT log_source, uuid_s FROM {TABLE} WHERE log_source <> 'healthevents'"
HEALTH_SQL = f"SELECT DISTINCT action_type FROM {TABLE} WHERE log_source = 'healthevents'"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def queried(cli: Cli, db: Path, sql: str) -> list[dict[str, object]]:
    """Rows through `op-sentinel query --format json`; [] while the store does not exist yet."""
    if not db.exists():
        return []
    result = cli(["query", "--db", db, "--format", "json", sql])
    assert result.code == 0, result.err
    rows: list[dict[str, object]] = json.loads(result.out)
    return rows


def test_run_tails_new_events_and_stops_cleanly_on_sigterm(
    sim: SimulatorServer,
    sim_args: list[str],
    db_path: Path,
    tmp_path: Path,
    cli: Cli,
    cli_proc: Cli,
    start_proc: Start,
) -> None:
    proc = start_proc(["run", *sim_args, "--poll-interval", "1s"])
    history = 3 * sim.event_count("auditevents")
    wait_for(lambda: len(queried(cli, db_path, EVENTS_SQL)) == history, "the history to be stored")
    # A health row per stream once its first poll is done, not only when `run` stops (health.md).
    wait_for(
        lambda: {str(r["action_type"]) for r in queried(cli, db_path, HEALTH_SQL)} == set(STREAMS),
        "a health row per stream while run is running",
        timeout=5,
    )

    added = {s: {str(e["uuid"]) for e in sim.add_events(s, 2)} for s in STREAMS}

    def tailed() -> bool:
        stored = {(str(r["log_source"]), str(r["uuid_s"])) for r in queried(cli, db_path, EVENTS_SQL)}
        return all((s, u) in stored for s, uuids in added.items() for u in uuids)

    wait_for(tailed, "the new events to be tailed")
    # Readers in other processes work while `run` holds the store between its writes.
    reader = cli_proc(["query", "--db", db_path, "--format", "jsonl", EVENTS_SQL])
    assert reader.code == 0, reader.err
    assert len(reader.out.splitlines()) == history + 6
    status = cli(["status", "--db", db_path, "--format", "json"])
    assert status.code == 0, status.err
    assert sorted(v["stream"] for v in json.loads(status.out)) == sorted(STREAMS)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    _, err = proc_output(tmp_path)
    assert "Traceback" not in err
    assert not [line for line in err.splitlines() if line.startswith("error:")]
    assert "SIGTERM" in err

    assert_exactly_once(db_path, sim, STREAMS)
    after = cli(["run", "--once", *[a for a in sim_args]])
    assert after.code == 0, after.err
    for stream in STREAMS:
        assert " 0 events" in summary_line(after, stream)  # the checkpoint covered everything stored
    assert_exactly_once(db_path, sim, STREAMS)


def _run_on_a_terminal(args: list[str], workdir: Path) -> tuple[int, str]:
    """Run `op-sentinel ARGS` with stderr on a pseudo-terminal; (exit status, what the terminal got)."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                return
            if not data:
                return
            chunks.append(data)

    proc = subprocess.Popen(
        [*COMMAND, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=proc_env({"TERM": "xterm-256color"}),
        cwd=workdir,
    )
    os.close(slave)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=30)
    finally:
        reader.join(timeout=5)
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


HIDE_CURSOR = "\x1b[?25l"  # what a live progress display sends first


def test_run_once_shows_a_progress_bar_on_a_terminal(
    sim: SimulatorServer, sim_args: list[str], workdir: Path
) -> None:
    code, screen = _run_on_a_terminal(["run", "--once", *sim_args], workdir)

    assert code == 0, screen
    assert HIDE_CURSOR in screen
    for stream in STREAMS:
        assert stream in screen


def test_no_progress_on_a_terminal_gives_plain_lines(
    sim: SimulatorServer, sim_args: list[str], workdir: Path
) -> None:
    code, screen = _run_on_a_terminal(["run", "--once", "--no-progress", *sim_args], workdir)

    assert code == 0, screen
    assert "\x1b[" not in screen
    lines = [line for line in screen.splitlines() if line.split(" ")[0] in STREAMS]
    assert len(lines) == 3
    assert all(line.rstrip().endswith("ok") for line in lines)


def test_run_once_into_a_pipe_gives_plain_lines(
    sim: SimulatorServer, sim_args: list[str], cli_proc: Cli
) -> None:
    result = cli_proc(["run", "--once", *sim_args])

    assert result.code == 0, result.err
    assert "\x1b[" not in result.err
    assert result.out == ""
    for stream in STREAMS:
        assert summary_line(result, stream).endswith("ok")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_run_stopped_in_the_middle_of_its_first_drain_is_completed_by_the_next(
    sim: SimulatorServer,
    sim_args: list[str],
    db_path: Path,
    tmp_path: Path,
    cli: Cli,
    start_proc: Start,
    sig: signal.Signals,
) -> None:
    """Ctrl-C finishes the pages in flight and exits 0; kill -9 just dies. Either way the next run
    delivers the rest, and nothing twice."""
    sim.faults.page_cap = 1
    sim.faults.latency = 0.3  # slow pages: the signal arrives while history is being read
    proc = start_proc(["run", *sim_args, "--poll-interval", "1s"])
    wait_for(lambda: len(queried(cli, db_path, EVENTS_SQL)) > 0, "the first rows")

    proc.send_signal(sig)
    code = proc.wait(timeout=20)
    assert code == (0 if sig == signal.SIGINT else -signal.SIGKILL)
    if sig == signal.SIGINT:
        _, err = proc_output(tmp_path)
        assert "Traceback" not in err
        assert "SIGINT" in err
    stopped_at = len(queried(cli, db_path, EVENTS_SQL))
    assert stopped_at < 3 * sim.event_count("auditevents"), "the run finished before the signal"
    sim.faults.clear()

    result = cli(["run", "--once", *sim_args])
    assert result.code == 0, result.err
    assert_exactly_once(db_path, sim, STREAMS)
