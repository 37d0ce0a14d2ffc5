"""Smoke test of the benchmark suite (`python -m bench`): every benchmark runs, tiny, and prints a
well-formed table. No speed is asserted: figures from a loaded test machine mean nothing."""

from __future__ import annotations

import re

import pytest
from bench.cli import main

TINY = [
    "all",
    "--quick",
    "--pages",
    "2",
    "--latencies",
    "0,20",
    "--pipeline-events",
    "2000",
    "--sizes",
    "2000",
    "--sentinel-events",
    "2000",
    "--prerendered-sizes",
    "3000",
]


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_every_benchmark_prints_a_well_formed_table(capsys: pytest.CaptureFixture[str]) -> None:
    tables = main(TINY)
    out = capsys.readouterr().out

    assert out.startswith("machine: ")
    names = ["prerendered", "backfill", "pipeline", "memory", "sentinel"]
    assert [t.title.split(":")[0] for t in tables] == names
    lines = out.splitlines()
    for table in tables:
        assert table.rows
        start = lines.index(f"== {table.title} ==")
        header, rule = lines[start + 1], lines[start + 2]
        assert _cells(header) == list(table.columns)
        assert len(rule.split()) == len(table.columns)
        printed = lines[start + 3 : start + 3 + len(table.rows)]
        assert [_cells(line) for line in printed] == table.rows
        seconds = table.columns.index("seconds")
        assert all(float(row[seconds].replace(",", "")) > 0 for row in table.rows)
        # "!" marks a count that differs from what was served: every event must arrive, once.
        assert not any(cell.endswith("!") for row in table.rows for cell in row)

    prerendered, backfill, pipeline, memory, sentinel = tables
    # Each op-sentinel run's store was checked (every event once) or the benchmark would have failed.
    assert [row[:2] for row in prerendered.rows] == [
        ["3,000", "download only (http.client + orjson)"],
        ["3,000", "op-sentinel run --once -> DuckDB"],
    ]
    assert "goal run --once <= 1.5x download-only" in prerendered.notes[0]
    assert [row[:2] for row in backfill.rows] == [
        ["0 ms", "sequential"],
        ["0 ms", "op-sentinel"],
        ["20 ms", "sequential"],
        ["20 ms", "op-sentinel"],
    ]
    assert all(row[backfill.columns.index("events stored")] == "2,000" for row in backfill.rows)
    assert "ratio run --once / download-only = " in pipeline.notes[0]
    assert [row[0] for row in memory.rows] == ["2,000"]
    assert float(memory.rows[0][memory.columns.index("peak RSS MB")]) > 0
    over = sentinel.columns.index("> 1 MiB")
    assert [row[over] for row in sentinel.rows] == ["0", "0"]
