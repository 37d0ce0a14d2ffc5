"""JsonlSink: one object a line with the 33 columns, nested JSON, RFC 3339, durable, stdout with "-"."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.contract.storehelp import ROOT, make_events, spawn, wait_for_line

from opsentinel.errors import StoreError
from opsentinel.schema import COLUMN_NAMES
from opsentinel.sinks.base import Batch
from opsentinel.sinks.jsonl import JsonlSink
from opsentinel.state import Checkpoint

NOW = datetime(2026, 5, 1, 8, 30, 15, 250000, tzinfo=UTC)


def test_each_line_is_the_row_with_nested_json_and_utc_times(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    sink.write(Batch("itemusages", make_events("itemusages", 2), NOW))
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    row = json.loads(lines[0])
    assert list(row) == list(COLUMN_NAMES)
    assert row["TimeGenerated"] == "2026-05-01T08:30:15.250000Z"
    assert row["timestamp"] == "2026-01-01T00:00:00Z"
    assert row["user"]["email"] == "jsmith@example.com"  # nested, not a string
    assert row["used_version"] == 123
    assert row["log_source"] == "itemusages"
    assert row["SourceSystem"] is None


def test_appends_across_sinks_and_creates_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    old = os.umask(0o022)
    try:
        for k in range(3):
            sink = JsonlSink(path)
            sink.write(Batch("auditevents", make_events("auditevents", 2, 2 * k), NOW))
            sink.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    uuids = [json.loads(line)["uuid_s"] for line in path.read_text().splitlines()]
    assert uuids == [e["uuid"] for e in make_events("auditevents", 6)]


def test_refuses_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not transactional"):
        JsonlSink(tmp_path / "x.jsonl").write(Batch("auditevents", [], NOW), Checkpoint("a", "auditevents"))


def test_dash_writes_to_stdout() -> None:
    code = (
        "from datetime import datetime, UTC\n"
        "from opsentinel.sinks.base import Batch\n"
        "from opsentinel.sinks.jsonl import JsonlSink\n"
        "s = JsonlSink('-')\n"
        "s.write(Batch('healthevents', [{'uuid': 'h', 'category': 'healthy'}], datetime.now(UTC)))\n"
        "s.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    (line,) = out.stdout.splitlines()
    assert json.loads(line)["category"] == "healthy"


def test_an_unwritable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open") as info:
        JsonlSink(tmp_path / "missing" / "x.jsonl").write(
            Batch("auditevents", make_events("auditevents", 1), NOW)
        )
    assert str(tmp_path / "missing" / "x.jsonl") in str(info.value)
    with pytest.raises(StoreError):
        JsonlSink(tmp_path).check()  # a directory


def test_a_full_disk_leaves_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "full.jsonl"
    sink = JsonlSink(path)
    sink.write(Batch("auditevents", make_events("auditevents", 3), NOW))
    sink.close()
    before = path.read_bytes()
    child = spawn("limited-write", "jsonl", str(path), str(len(before) + 5000))  # 2000 rows need far more
    result = wait_for_line(child)
    child.communicate(timeout=30)
    assert result["error"] is not None
    assert str(path) in result["error"]
    assert path.read_bytes() == before  # the torn batch was cut off again
