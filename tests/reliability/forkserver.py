"""A fork server for crash tests: `op-sentinel` processes that start in milliseconds, to be killed.

A kill -9 loop restarts the connector 15-25 times; paying Python's ~1 s of imports each time would
spend the test's time budget on start-up instead of on work that can be interrupted. So this process
imports everything `op-sentinel` needs once (single-threaded: no thread exists to be lost by fork),
then forks one child per `spawn` request. Each child is a real, separate `op-sentinel` process: it
runs `opsentinel.cli.main(argv)` (the console script's entry point) with its own environment,
working directory and stdout/stderr files, and exits with that status. The test kills it with a real
SIGKILL.

Protocol: one JSON object a line on stdin, one answer a line on stdout.

    {"op": "spawn", "argv": [...], "env": {...}, "cwd": ..., "out": path, "err": path} -> {"pid": n}
        optional "fsize": RLIMIT_FSIZE for the child, in bytes (SIGXFSZ is ignored, as Python does);
        optional "umask": the child's umask
    {"op": "wait", "pid": n, "timeout": s}            -> {"code": status or null}  (-9 after SIGKILL)

At end of input every child still running is killed and reaped.

Run as `python -m tests.reliability.forkserver` from the repository root.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from typing import Any


def _preload() -> None:
    import azure.identity
    import azure.monitor.ingestion
    import duckdb
    import httpx
    import pyarrow

    import opsentinel.checkpoints_file
    import opsentinel.cli
    import opsentinel.commands
    import opsentinel.config
    import opsentinel.connector
    import opsentinel.destination
    import opsentinel.sinks.duckdb
    import opsentinel.sinks.jsonl
    import opsentinel.sinks.sentinel
    import opsentinel.statusview
    import opsentinel.store_read

    del azure, duckdb, httpx, pyarrow, opsentinel


def _child(request: dict[str, Any], protocol: tuple[int, int]) -> None:
    """In the forked child: become `op-sentinel ARGV` and exit with its status."""
    code = 70
    try:
        for fd in protocol:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        if request.get("umask") is not None:
            os.umask(int(request["umask"]))
        if request.get("fsize"):  # a full disk, as far as this process can tell (EFBIG past it)
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(request["fsize"]), resource.RLIM_INFINITY))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from opsentinel.cli import main

        code = main(list(request["argv"]))
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


def main() -> None:
    _preload()
    assert threading.active_count() == 1, "fork needs a single-threaded parent"
    protocol = (sys.stdin.fileno(), sys.stdout.fileno())
    children: set[int] = set()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "spawn":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, protocol)
            children.add(pid)
            answer: dict[str, Any] = {"pid": pid}
        else:
            pid = int(request["pid"])
            deadline = time.monotonic() + float(request.get("timeout", 30))
            code = None
            while True:
                done, raw = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = _status(raw)
                    children.discard(pid)
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            answer = {"code": code}
        print(json.dumps(answer), flush=True)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


if __name__ == "__main__":
    main()
