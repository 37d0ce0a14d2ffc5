"""The benchmark command: `python -m bench [all|BENCHMARK] [--quick] [options]` (see `BENCHMARKS`).

`python -m bench blobstate` (storage requests of a Blob state, on Azurite) runs only when named."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import backfill, blobstate, machine, memory, pipeline, prerendered, runs, sentinel
from bench.runs import parse_count
from bench.simproc import BenchError
from bench.table import Table

BENCHMARKS = ("prerendered", "backfill", "pipeline", "memory", "sentinel")
EXTRA = ("blobstate",)  # run only when named


@dataclass(frozen=True)
class Sizes:
    """Defaults per mode; every one can be overridden by its flag."""

    pages: int
    latencies: str
    pipeline_events: int
    repeat: int
    sizes: str
    sentinel_events: int
    prerendered: str
    prerendered_repeat: int


FULL = Sizes(
    pages=1200,
    latencies="0,50,250",
    pipeline_events=300_000,
    repeat=2,
    sizes="100k,1M,2M",
    sentinel_events=200_000,
    prerendered="200k,2M",
    prerendered_repeat=3,
)
QUICK = Sizes(
    pages=10,
    latencies="0,50,250",
    pipeline_events=20_000,
    repeat=1,
    sizes="10k,20k",
    sentinel_events=10_000,
    prerendered="6k",
    prerendered_repeat=1,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "op-sentinel benchmarks: run --once vs download-only on a pre-rendered server, backfill "
            "pages/s, pipeline events/s, peak RSS, Sentinel sink."
        ),
    )
    p.add_argument("which", nargs="?", default="all", choices=("all", *BENCHMARKS, *EXTRA))
    p.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run in seconds, not a measurement"
    )
    p.add_argument("--pages", type=parse_count, help=f"backfill: pages of 1,000 events [full {FULL.pages}]")
    p.add_argument(
        "--latencies", help=f"backfill: simulated latency per request, ms, comma-separated [{FULL.latencies}]"
    )
    p.add_argument(
        "--pipeline-events", type=parse_count, help=f"pipeline: events [full {FULL.pipeline_events:,}]"
    )
    p.add_argument(
        "--repeat", type=int, help=f"pipeline: runs of each client, best kept [full {FULL.repeat}]"
    )
    p.add_argument("--sizes", help=f"memory: history sizes, comma-separated [full {FULL.sizes}]")
    p.add_argument(
        "--runner",
        choices=("cli", "lib"),
        default="cli",
        help="memory: the real CLI (590/min limiter) or the library with an unlimited limiter [cli]",
    )
    p.add_argument(
        "--backfill-workers",
        type=int,
        help="op-sentinel's --backfill-workers for every op-sentinel run (0: one cursor) [its default]",
    )
    p.add_argument("--units", type=int, help="blobstate: (account, stream) units [full 60]")
    p.add_argument(
        "--prerendered-sizes",
        help=f"prerendered: events over the three streams, comma-separated [full {FULL.prerendered}]",
    )
    p.add_argument(
        "--prerendered-repeat",
        type=int,
        help=f"prerendered: runs of each side, median kept [full {FULL.prerendered_repeat}]",
    )
    p.add_argument(
        "--compare",
        help="prerendered: git revisions (REV or REV+NAME=VALUE), comma-separated, run in the same "
        "rounds as this tree, e.g. --compare a4f4cdd",
    )
    p.add_argument(
        "--sentinel-events", type=parse_count, help=f"sentinel: events [full {FULL.sentinel_events:,}]"
    )
    return p


def _plan(args: argparse.Namespace) -> list[tuple[str, Callable[[], list[Table]]]]:
    d = QUICK if args.quick else FULL
    latencies = [float(x) for x in (args.latencies or d.latencies).split(",") if x.strip()]
    jobs: dict[str, Callable[[], list[Table]]] = {
        "prerendered": lambda: prerendered.run(
            sizes=memory.parse_sizes(args.prerendered_sizes or d.prerendered),
            repeat=args.prerendered_repeat or d.prerendered_repeat,
            compare=[r for r in (args.compare or "").split(",") if r],
        ),
        "backfill": lambda: backfill.run(pages=args.pages or d.pages, latencies_ms=latencies),
        "pipeline": lambda: pipeline.run(
            events=args.pipeline_events or d.pipeline_events, repeat=args.repeat or d.repeat
        ),
        "memory": lambda: memory.run(sizes=memory.parse_sizes(args.sizes or d.sizes), runner=args.runner),
        "sentinel": lambda: sentinel.run(events=args.sentinel_events or d.sentinel_events),
        "blobstate": lambda: blobstate.run(
            units=args.units or (6 if args.quick else 60),
            replicas=3 if not args.quick else 2,
            seconds=15 if args.quick else 120,
        ),
    }
    names = BENCHMARKS if args.which == "all" else (args.which,)
    return [(name, jobs[name]) for name in names]


def main(argv: Sequence[str] | None = None) -> list[Table]:
    """Run the chosen benchmarks, print the machine and each table; return the tables.

    Raises BenchError when a benchmark could not run (a broken run, not a slow one).
    """
    args = _parser().parse_args(argv)
    # The connector's warnings (e.g. retries) still reach stderr; its info lines are not figures.
    logger = logging.getLogger("opsentinel")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        return _run(args)
    finally:
        logger.setLevel(level)


def _run(args: argparse.Namespace) -> list[Table]:
    runs.BACKFILL_WORKERS = args.backfill_workers
    mode = "quick (smoke sizes: not a measurement)" if args.quick else "full"
    if args.backfill_workers is not None:
        mode += f", op-sentinel --backfill-workers {args.backfill_workers}"
    print("\n".join(machine.describe()))
    print(f"mode:    {mode}\n", flush=True)
    tables: list[Table] = []
    for name, job in _plan(args):
        started = time.perf_counter()
        produced = job()
        for table in produced:
            print(table.render())
        print(f"   ({name}: {time.perf_counter() - started:.0f} s)\n", flush=True)
        tables += produced
    return tables


def entry(argv: Sequence[str] | None = None) -> int:
    """`main` with its failures as exit statuses: 1 for a benchmark that could not run, 130 on Ctrl-C."""
    try:
        main(argv)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
