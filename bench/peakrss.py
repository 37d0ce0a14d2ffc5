"""Run a command and report its own peak RSS: `python -m bench.peakrss RESULT.json COMMAND...`.

Why a launcher: Linux folds the memory of the process a child was exec'd from into the child's
`ru_maxrss`. A child spawned straight from the benchmark process (vfork + exec) therefore reports at
least the *benchmark's* peak, hundreds of MB after the in-process benchmarks. This small interpreter
forks the command itself, so the figure `os.wait4` returns is the command's own, give or take this
launcher's ~10 MB (the floor of any figure it reports).

Writes {"returncode", "maxrss_kib"} to RESULT.json and exits with the command's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m bench.peakrss RESULT.json COMMAND...", file=sys.stderr)
        return 2
    result, command = Path(argv[0]), argv[1:]
    _allow_huge_pages()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    kib = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
    result.write_text(json.dumps({"returncode": proc.returncode, "maxrss_kib": kib}))
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def _allow_huge_pages() -> None:
    """Undo the benchmark's own PR_SET_THP_DISABLE (from `runtime.tune_process`; children inherit it),
    so that the command runs as it would from a shell and tunes itself."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(41, 0, 0, 0, 0)  # PR_SET_THP_DISABLE off
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
