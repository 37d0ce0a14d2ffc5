"""The store and the state directory in trouble, at the command level: a full disk, a read-only
directory, a file where a directory belongs, a corrupt checkpoint file, a DuckDB file another
process holds. `op-sentinel run --once` stops with one clear `error:` line and a non-zero status,
skips nothing silently and damages nothing stored; once the trouble is gone, the next run completes
with every event exactly once.

Root ignores file permissions here, so a read-only directory is a read-only bind mount in a private
mount namespace (`unshare -m`), and a full disk is RLIMIT_FSIZE on the connector's process."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.reliability.relhelp import (
    COMMAND,
    STREAMS,
    ForkServer,
    Outcome,
    assert_jsonl_exactly_once,
    assert_no_duplicates,
    assert_store_exactly_once,
    clean_env,
    cli_in_process,
    jsonl_uuids,
    sim_uuids,
    stored_uuids,
    write_token,
)

from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.sinks.duckdb import DuckDBStore


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(events=150, days=2, seed=41, rate_limit_per_minute=0, rate_limit_per_hour=0)
    with SimulatorServer(config) as server:
        yield server


def _grow(sim: SimulatorServer, n: int) -> None:
    for stream in STREAMS:
        sim.add_events(stream, n)


def _failed(result: Outcome, *needles: str) -> str:
    """The run failed with exactly one `error:` line, no traceback; stderr holds every needle."""
    assert result.code != 0, result.err
    assert "Traceback" not in result.out + result.err, result.err
    assert len(result.errors) == 1, result.err
    for needle in needles:
        assert needle in result.err, f"{needle!r} not in:\n{result.err}"
    return result.errors[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _read_only_run(directory: Path, args: list[object], cwd: Path) -> Outcome | None:
    """`op-sentinel ARGS` with `directory` mounted read-only for that process only; None (with a
    warning) where no private mount namespace can be made (unshare -m needs privileges)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], check=False).returncode:
        warnings.warn("no private mount namespace (unshare -m): read-only step not run", stacklevel=2)
        return None
    quoted = " ".join("'" + str(a).replace("'", "'\\''") + "'" for a in [*COMMAND, *args])
    script = (
        f"mount --bind '{directory}' '{directory}' && mount -o remount,bind,ro '{directory}' && exec {quoted}"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=cwd,
        timeout=60,
    )
    if "mount:" in done.stderr and "error:" not in done.stderr:
        warnings.warn(f"cannot mount read-only here: {done.stderr.strip()[:200]}", stacklevel=2)
        return None
    return Outcome(done.returncode, done.stdout, done.stderr)


# --- DuckDB ---------------------------------------------------------------------------------------


def test_duckdb_store_full_disk_then_read_only_then_recovered(
    sim: SimulatorServer, forks: ForkServer, tmp_path: Path
) -> None:
    token = write_token(tmp_path / "op-token", sim.token)
    db = tmp_path / "store" / "events.duckdb"
    args = ["run", "--once", "--base-url", sim.base_url, "--token-file", token, "--db", db]
    assert forks.run(args, cwd=tmp_path).code == 0

    _grow(sim, 2500)  # far more than fits in 64 KB more
    full = forks.run(args, cwd=tmp_path, fsize=db.stat().st_size + 64 * 1024)
    _failed(full, f"cannot write the store {db}: the disk is full")
    stored = assert_no_duplicates(db)
    assert stored < sum(sim.event_count(s) for s in STREAMS)
    for stream in STREAMS:
        assert set(stored_uuids(db, stream)) <= set(sim_uuids(sim, stream))

    before = _digest(db)
    read_only = _read_only_run(db.parent, args, cwd=tmp_path)
    if read_only is not None:
        _failed(read_only, f"cannot write the store {db}", "Read-only file system")
        assert _digest(db) == before, "a failed run changed the store"

    assert forks.run(args, cwd=tmp_path).code == 0
    assert_store_exactly_once(db, sim)


def test_a_file_where_the_store_directory_belongs(
    sim: SimulatorServer, forks: ForkServer, tmp_path: Path
) -> None:
    token = write_token(tmp_path / "op-token", sim.token)
    blocker = tmp_path / "data"
    blocker.write_text("not a directory\n")
    db = blocker / "events.duckdb"
    args = ["run", "--once", "--base-url", sim.base_url, "--token-file", token, "--db", db]
    _failed(forks.run(args, cwd=tmp_path), str(db), "Not a directory")
    assert blocker.read_text() == "not a directory\n"

    blocker.unlink()
    assert forks.run(args, cwd=tmp_path).code == 0
    assert_store_exactly_once(db, sim)


class _Holder:
    """Another process that opens the store read-write and keeps it until told to let go."""

    def __init__(self, db: Path) -> None:
        script = (
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "time.sleep(float(sys.stdin.readline())); c.close()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    def release_after(self, seconds: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def test_a_duckdb_file_held_by_another_process(
    sim: SimulatorServer,
    forks: ForkServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = write_token(tmp_path / "op-token", sim.token)
    db = tmp_path / "events.duckdb"
    args = ["run", "--once", "--base-url", sim.base_url, "--token-file", token, "--db", db]
    assert forks.run(args, cwd=tmp_path).code == 0
    _grow(sim, 20)
    holder = _Holder(db)
    try:
        # Held for longer than the writer waits (a minute by default; half a second here): busy.
        before = _digest(db)
        with monkeypatch.context() as patch:
            patch.setitem(DuckDBStore.__init__.__kwdefaults__, "lock_wait", 0.5)
            busy = cli_in_process(args, capsys)
        _failed(busy, f"the store {db} is busy: another process holds it")
        assert _digest(db) == before

        # Held for a moment more: the run waits for it and completes.
        holder.release_after(1.0)
        result = forks.run(args, cwd=tmp_path)
        assert result.code == 0, result.err
    finally:
        holder.stop()
    assert_store_exactly_once(db, sim)


# --- the state directory (jsonl and sentinel sinks) -----------------------------------------------


def test_state_directory_corrupt_read_only_full_then_recovered(
    sim: SimulatorServer, forks: ForkServer, tmp_path: Path
) -> None:
    token = write_token(tmp_path / "op-token", sim.token)
    state = tmp_path / "state"
    out = tmp_path / "events.jsonl"
    args = ["run", "--once", "--base-url", sim.base_url, "--token-file", token, "--sink", "jsonl"]
    args += ["--jsonl-path", out, "--state", state]
    assert forks.run(args, cwd=tmp_path).code == 0
    assert_jsonl_exactly_once(out, sim)

    # A corrupt checkpoint: that stream stops with the file's name; the file is left as it is.
    [checkpoint] = state.glob("checkpoints/*/auditevents.json")
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[: len(good) // 2])
    _grow(sim, 10)
    corrupt = forks.run(args, cwd=tmp_path)
    assert corrupt.code == 1
    _failed(corrupt, f"the checkpoint file {checkpoint} is corrupt")
    assert checkpoint.read_bytes() == good[: len(good) // 2]
    assert len(jsonl_uuids(out, "auditevents")) == sim.event_count("auditevents") - 10, "auditevents moved on"
    checkpoint.write_bytes(good)  # restored from a backup

    # A read-only state directory: found before anything is delivered.
    _grow(sim, 10)
    lines, files = out.read_bytes(), _tree(state)
    read_only = _read_only_run(state, args, cwd=tmp_path)
    if read_only is not None:
        _failed(read_only, f"cannot write the state directory {state}", "Read-only file system")
        assert out.read_bytes() == lines, "events were delivered without a writable state directory"
        assert _tree(state) == files

    # A full disk: the JSONL write fails, is cut back to whole lines, and the checkpoints stay.
    _grow(sim, 800)
    full = forks.run(args, cwd=tmp_path, fsize=out.stat().st_size + 16 * 1024)
    _failed(full, f"cannot write {out}")
    assert out.read_bytes().endswith(b"\n")
    for stream in STREAMS:
        got = jsonl_uuids(out, stream)
        assert len(got) == len(set(got))

    # A file where the state directory belongs.
    moved = tmp_path / "state-moved"
    state.rename(moved)
    state.write_text("oops\n")
    blocked = forks.run(args, cwd=tmp_path)
    _failed(blocked, f"cannot write the state directory {state}", "Not a directory")
    state.unlink()
    moved.rename(state)

    assert forks.run(args, cwd=tmp_path).code == 0
    assert_jsonl_exactly_once(out, sim)
