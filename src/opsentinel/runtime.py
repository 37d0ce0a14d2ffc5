"""Process-wide tuning for a process whose main work is the connector (the `op-sentinel` command).

A library does not change these behind its user's back: the CLI calls `tune_process()` first thing,
and so do the benchmarks, which measure what the command does.
"""

from __future__ import annotations

import gc
import os
import sys

YOUNG_COLLECTION_THRESHOLD = 20_000
"""Allocations between young-generation collections (CPython's default is 700). A page of 1,000
events is ~6,000 acyclic dicts and lists that reference counting frees; at 700 the collector walked
each page's objects about nine times while they were alive."""


def tune_process() -> None:
    """Fewer malloc arenas, no transparent huge pages, Arrow on malloc, fewer cycle-collector
    passes (see the helpers)."""
    _cap_malloc_arenas()
    _no_transparent_huge_pages()
    _arrow_on_system_allocator()
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


def _no_transparent_huge_pages() -> None:
    """An allocator that asks for huge pages makes every touched 2 MB count as resident. Measured on
    `run --once` of 200k events over three streams: peak RSS 392 -> 306 MB without them, no slower."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE (inherited by children)
    except (OSError, AttributeError):
        pass


def _arrow_on_system_allocator() -> None:
    """pyarrow's default pool (mimalloc) keeps what each page's table freed; the pages' tables are
    short-lived, so malloc, which hands it back, holds less: with the above, 306 -> 281 MB, no
    slower. `ARROW_DEFAULT_MEMORY_POOL` is read when pyarrow loads; if it already has, set the pool."""
    if "pyarrow" in sys.modules:
        import pyarrow

        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    else:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def _tune_cycle_collector() -> None:
    # Objects alive now (modules, classes) live as long as the process: freezing them keeps every
    # later full collection from walking them again.
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
