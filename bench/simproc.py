"""Local Events API servers in child processes, for benchmarks: the simulator (`SimulatorProcess`,
`python -m opsentinel.simulator`) and any server with the same banner (`ServerProcess`, e.g. the
pre-rendered one in `bench.prerendered_server`).

A separate process keeps the simulator's page generation off the measured process's GIL, as a real
remote API would be. It is started with `--port 0`, `--trickle 0` (so counts are exact) and a token
file in `workdir`; its printed base URL is read from the banner. With `count_statuses`, it runs with
`--verbose` and the per-request log lines on its stderr are tallied by path and HTTP status.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO, Self

_REQUEST = re.compile(r"^[A-Z]+ (\S+) -> (\d{3})")
START_TIMEOUT = 60.0


class BenchError(RuntimeError):
    """A benchmark could not run (not a slow result: something broke)."""


class ServerProcess:
    """A local API server in a child process: `with ServerProcess(args, token_file) as srv:` then
    `srv.base_url`, `srv.token`. The child prints `base URL: <url>` and then a line starting with
    `ready_line` once it serves; anything it prints on stderr that is not a request line is kept for
    error messages. `start_timeout` bounds the wait for each banner line."""

    def __init__(
        self,
        args: list[str],
        token_file: Path,
        *,
        ready_line: str,
        start_timeout: float = START_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.token_file = token_file
        self._args = args
        self._ready_line = ready_line
        self._start_timeout = start_timeout
        self._env = env
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._stderr_tail: list[str] = []
        self._readers: list[threading.Thread] = []
        self.base_url = ""

    @property
    def requests(self) -> Counter[tuple[str, int]]:
        """Requests answered so far, by (path, HTTP status) (only with `count_statuses`)."""
        with self._lock:
            return Counter(self._requests)

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def __enter__(self) -> Self:
        proc = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=self._env
        )
        self._proc = proc
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            while True:
                try:
                    line = self._lines.get(timeout=self._start_timeout)
                except queue.Empty:
                    raise BenchError(f"{self._args[2]} did not print its base URL in time") from None
                if line is None:
                    tail = " | ".join(self._stderr_tail[-3:])
                    raise BenchError(f"{self._args[2]} exited at start-up: {tail}")
                if line.startswith("base URL: "):
                    self.base_url = line.removeprefix("base URL: ").strip()
                if line.startswith(self._ready_line):
                    break
        except BaseException:
            self._terminate()
            raise
        if not self.base_url:
            self._terminate()
            raise BenchError(f"{self._args[2]}'s banner had no base URL")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._terminate()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for reader in self._readers:  # so `requests` holds every line the simulator logged
            reader.join(timeout=5)

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            match = _REQUEST.search(line)
            with self._lock:
                if match:
                    self._requests[match.group(1), int(match.group(2))] += 1
                else:
                    self._stderr_tail = [*self._stderr_tail[-9:], line.strip()]


class SimulatorProcess(ServerProcess):
    """`with SimulatorProcess(events=..., workdir=...) as sim:` then `sim.base_url`, `sim.token_file`."""

    def __init__(
        self,
        *,
        events: int,
        workdir: Path,
        days: float = 7.0,
        latency_ms: float = 0.0,
        rate_limited: bool = False,
        count_statuses: bool = False,
        seed: int = 1,
    ) -> None:
        self.events = events
        self.days = days
        token_file = workdir / f"sim-token-{seed}-{events}"
        args = [
            sys.executable,
            "-m",
            "opsentinel.simulator",
            "--port",
            "0",
            "--seed",
            str(seed),
            "--events",
            str(events),
            "--days",
            str(days),
            "--trickle",
            "0",
            "--latency",
            f"{latency_ms:g}ms",
            "--token-file",
            str(token_file),
        ]
        if not rate_limited:
            args += ["--rate-limit-per-minute", "0", "--rate-limit-per-hour", "0"]
        if count_statuses:
            args.append("--verbose")
        super().__init__(args, token_file, ready_line="stop with")
