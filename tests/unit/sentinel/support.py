"""Shared pieces of the Sentinel sink tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsentinel.sinks.sentinel import SentinelSink
from opsentinel.source.retry import RetryPolicy

# Deterministic waits (no jitter): 0.5, 1, 2 s between four tries; `sleeps` records them, nobody waits.
TEST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=4.0, jitter=False)

MakeSink = Callable[..., SentinelSink]


def read_dead_letters(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "dead-letter.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
