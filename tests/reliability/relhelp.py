"""Helpers for the crash and fault tests: the fork server client, a freezable simulator clock, and
exactly-once checks against the simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from opsentinel.simulator import SimulatorServer

ROOT = Path(__file__).resolve().parents[2]
STREAMS = ("auditevents", "signinattempts", "itemusages")
TABLE = "OnePasswordEventLogs_CL"

_CONSOLE_SCRIPT = Path(sys.executable).with_name("op-sentinel")
COMMAND: list[str] = (
    [str(_CONSOLE_SCRIPT)] if _CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "opsentinel.cli"]
)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without OP_SENTINEL_* and Azure credential variables, plus `extra`."""
    drop = ("OP_SENTINEL_", "AZURE_", "IDENTITY_", "MSI_", "IMDS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra or {})
    env.setdefault("COLUMNS", "200")
    return env


def write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


# --- the fork server ----------------------------------------------------------------------------


class ForkServer:
    """Client of `tests/reliability/forkserver.py`: spawn `op-sentinel` children, kill -9 them, reap."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.forkserver"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        self._lock = threading.Lock()
        self._runs = 0
        assert self._ask(None) == {"ready": True}

    def _ask(self, request: dict[str, Any] | None) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            if request is not None:
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited ({self._proc.poll()})")
        return dict(json.loads(line))

    def spawn(
        self,
        argv: list[Any],
        *,
        env: Mapping[str, str],
        cwd: Path,
        out: Path,
        err: Path,
        fsize: int = 0,
        umask: int | None = None,
    ) -> int:
        """Start `op-sentinel ARGV` in a forked child; its pid. `fsize` limits the size of every file
        it writes (RLIMIT_FSIZE): a full disk. `umask` is the child's umask."""
        request = {
            "fsize": fsize,
            "umask": umask,
            "op": "spawn",
            "argv": [str(a) for a in argv],
            "env": clean_env(env),
            "cwd": str(cwd),
            "out": str(out),
            "err": str(err),
        }
        return int(self._ask(request)["pid"])

    def wait(self, pid: int, timeout: float = 30.0) -> int | None:
        """The child's exit status (negative: killed by that signal), or None if still running."""
        code = self._ask({"op": "wait", "pid": pid, "timeout": timeout})["code"]
        return None if code is None else int(code)

    def run(
        self,
        argv: list[Any],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        fsize: int = 0,
        umask: int | None = None,
    ) -> Outcome:
        """`op-sentinel ARGV` to the end, in a forked child; what it printed."""
        out, err = cwd / f".run{self._runs}.out", cwd / f".run{self._runs}.err"
        self._runs += 1
        pid = self.spawn(argv, env=env or {}, cwd=cwd, out=out, err=err, fsize=fsize, umask=umask)
        code = self.wait(pid, timeout=60)
        assert code is not None, f"op-sentinel {argv[:2]} did not finish"
        outcome = Outcome(code, out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return outcome

    def kill9(self, pid: int) -> int | None:
        os.kill(pid, signal.SIGKILL)
        return self.wait(pid, timeout=10.0)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


# --- simulator time -----------------------------------------------------------------------------


class SimClock:
    """The simulator's clock: real time plus `offset` seconds, which can jump, until `freeze()`."""

    def __init__(self, offset: float = 0.0) -> None:
        self._offset_ns = int(offset * 1e9)
        self._frozen: int | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return time.time_ns() + self._offset_ns

    def jump(self, seconds: float) -> None:
        with self._lock:
            self._offset_ns += int(seconds * 1e9)

    def freeze(self) -> None:
        """Stop time: no more trickle events, so the simulator's event set is final."""
        now = self()
        with self._lock:
            self._frozen = now


# --- checking what was stored -------------------------------------------------------------------


def sim_uuids(sim: SimulatorServer, stream: str) -> list[str]:
    return [str(e["uuid"]) for e in sim.events(stream)]


def stored_uuids(db: Path, stream: str) -> list[str]:
    """Every stored uuid of `stream`, duplicates kept."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(f'SELECT uuid_s FROM "{TABLE}" WHERE log_source = ?', [stream]).fetchall()
    finally:
        con.close()
    return [str(r[0]) for r in rows]


def assert_store_exactly_once(db: Path, sim: SimulatorServer, streams: tuple[str, ...] = STREAMS) -> int:
    """Every simulator event of each stream is stored once and nothing else is; the total."""
    total = 0
    for stream in streams:
        stored = stored_uuids(db, stream)
        dupes = [u for u, n in Counter(stored).items() if n > 1]
        assert not dupes, f"{stream}: {len(dupes)} events stored twice, e.g. {dupes[:3]}"
        expected = set(sim_uuids(sim, stream))
        missing = expected - set(stored)
        extra = set(stored) - expected
        assert not missing, f"{stream}: {len(missing)} of {len(expected)} events never stored"
        assert not extra, f"{stream}: {len(extra)} stored events the simulator never had"
        total += len(stored)
    return total


def assert_no_duplicates(db: Path, streams: tuple[str, ...] = STREAMS) -> int:
    """No stream holds an event twice (checked after every kill); the rows stored."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            f'SELECT log_source, count(*), count(DISTINCT uuid_s) FROM "{TABLE}" GROUP BY 1'
        ).fetchall()
    finally:
        con.close()
    for stream, total, distinct in rows:
        if stream in streams:
            assert total == distinct, f"{stream}: {total - distinct} events stored twice"
    return sum(int(total) for stream, total, _ in rows if stream in streams)


def checkpoints(db: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT stream, cursor, backfill FROM opsentinel_checkpoints ORDER BY stream"
        ).fetchall()
    finally:
        con.close()


def cli_in_process(args: list[Any], capsys: Any) -> Outcome:
    """Run `op-sentinel ARGS` in this process through the console entry point (for tests that patch
    a default, such as how long the store waits for a lock)."""
    import logging

    from opsentinel.cli import main

    def reset() -> None:  # the command binds its log handler to the stderr of its first call
        root = logging.getLogger("opsentinel")
        for handler in list(root.handlers):
            root.removeHandler(handler)

    capsys.readouterr()
    reset()
    try:
        code = main([str(a) for a in args])
    finally:
        reset()
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def jsonl_uuids(path: Path, stream: str) -> list[str]:
    """uuids of `stream` in a JSONL sink's output, duplicates kept; every line must be whole JSON."""
    out = []
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), "the JSONL output ends with a partial line"
    for line in data.splitlines():
        row = json.loads(line)
        if row["log_source"] == stream:
            out.append(str(row["uuid_s"]))
    return out


def assert_jsonl_exactly_once(path: Path, sim: SimulatorServer, streams: tuple[str, ...] = STREAMS) -> None:
    for stream in streams:
        got = jsonl_uuids(path, stream)
        assert len(got) == len(set(got)), f"{stream}: {len(got) - len(set(got))} lines written twice"
        assert sorted(got) == sorted(sim_uuids(sim, stream)), stream
