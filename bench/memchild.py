"""Child process of the memory benchmark's `lib` runner: one `run --once` through the library.

    python -m bench.memchild --base-url URL --token-file PATH --db PATH [--days 7] [--backfill-workers N]

Runs `Connector.start(settings, limiter=unlimited())` + `poll_cycle()` for `auditevents` into `--db`
and prints one JSON line: {"seconds", "pages", "events", "error"}. Exit status 1 if the run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench import runs
from bench.runs import run_once, settings_for, unlimited
from opsentinel.runtime import tune_process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memchild")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--backfill-workers", type=int)
    args = parser.parse_args(argv)
    runs.BACKFILL_WORKERS = args.backfill_workers
    tune_process()  # as the `op-sentinel` command does
    token = args.token_file.read_text().strip()
    settings = settings_for(args.base_url, token, days=args.days, db=args.db)
    result = asyncio.run(run_once(settings, limiter=unlimited()))
    print(json.dumps(result.__dict__))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
