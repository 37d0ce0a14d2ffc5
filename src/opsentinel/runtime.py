"""Process-wide tuning for a process whose main work is the connector (the `op-sentinel` command).

A library does not change these behind its user's back: the CLI calls `tune_process()` first thing,
and so do the benchmarks, which measure what the command does.
"""

from __future__ import annotations

import gc
import sys

YOUNG_COLLECTION_THRESHOLD = 20_000
"""Allocations between young-generation collections (CPython's default is 700). A page of 1,000
events is ~6,000 acyclic dicts and lists that reference counting frees; at 700 the collector walked
each page's objects about nine times while they were alive."""


def tune_process() -> None:
    """Fewer malloc arenas and fewer cycle-collector passes (see the two helpers)."""
    _cap_malloc_arenas()
    _tune_cycle_collector()


def _cap_malloc_arenas() -> None:
    """glibc gives every thread that allocates its own malloc arena; with DuckDB's, the HTTP client's
    and the upload threads that is ~35 MB of resident memory the connector does not use. Two arenas
    are plenty for a process whose work is I/O bound."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _tune_cycle_collector() -> None:
    # Objects alive now (modules, classes) live as long as the process: freezing them keeps every
    # later full collection from walking them again.
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
