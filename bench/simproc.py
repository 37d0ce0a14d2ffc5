"""The Events API simulator in a child process (`python -m opsentinel.simulator`), for benchmarks.

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


class SimulatorProcess:
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
        self.token_file = workdir / f"sim-token-{seed}-{events}"
        self._args = [
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
            str(self.token_file),
        ]
        if not rate_limited:
            self._args += ["--rate-limit-per-minute", "0", "--rate-limit-per-hour", "0"]
        if count_statuses:
            self._args.append("--verbose")
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
            self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
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
                    line = self._lines.get(timeout=START_TIMEOUT)
                except queue.Empty:
                    raise BenchError("the simulator did not print its base URL in time") from None
                if line is None:
                    tail = " | ".join(self._stderr_tail[-3:])
                    raise BenchError(f"the simulator exited at start-up: {tail}")
                if line.startswith("base URL: "):
                    self.base_url = line.removeprefix("base URL: ").strip()
                if line.startswith("stop with"):
                    break
        except BaseException:
            self._terminate()
            raise
        if not self.base_url:
            self._terminate()
            raise BenchError("the simulator's banner had no base URL")
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
