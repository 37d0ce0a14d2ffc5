"""The Sentinel sink: events/s and requests into the local Azure Logs Ingestion fake.

The fakes (`FakeManagedIdentity` + `FakeLogsIngestion`, HTTPS with a trustme CA) run in a child
process (`bench.azure_child`); this process points azure-identity's `DefaultAzureCredential` at the
fake identity through the environment, as managed identity works in production. Two measurements:

- `sink only`: `SentinelSink.write` of 1,000-event batches already in memory (taken from the
  simulator, re-sent round-robin): transform, chunking, gzip and HTTPS, nothing else;
- `run --once -> sentinel`: `Connector.start` + `poll_cycle` with `--sink sentinel` against a
  simulator in a child process (rate limits off, unlimited client limiter), checkpoints in files.

For each: requests, the average request body (gzip, as sent, and the JSON inside), the largest, and
how many bodies exceeded Azure's 1 MiB limit (must be 0; the fake would have answered 413).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.fakes.azure_identity import AZURE_CREDENTIAL_ENV_VARS

from bench.machine import ROOT
from bench.runs import STREAM, reset_body, run_once, settings_for, unlimited
from bench.simproc import BenchError, SimulatorProcess
from bench.table import Table, count, num, progress
from opsentinel.destination import open_destination
from opsentinel.sinks.base import Batch
from opsentinel.sinks.sentinel import SentinelSink
from opsentinel.source import ApiToken, EventsClient

MAX_BODY = 1_048_576
DAYS = 7.0
SAMPLE_PAGES = 10  # pages held in memory for the sink-only measurement


@dataclass(frozen=True)
class UploadRow:
    status: int
    content_length: int
    content_encoding: str | None
    uncompressed_size: int | None
    records: int


class AzureFakes:
    """The child process of `bench.azure_child`; `report()` returns the requests since the last one."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.azure_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=ROOT,
            env=env,
        )
        hello = self._read()
        self.endpoint: str = hello["endpoint"]
        self.dcr_id: str = hello["dcr_id"]
        self.ca_path: str = hello["ca_path"]
        self.env: dict[str, str] = hello["env"]

    def _read(self) -> Any:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise BenchError("the Azure fakes' child process exited")
        return json.loads(line)

    def report(self) -> list[UploadRow]:
        assert self._proc.stdin is not None
        self._proc.stdin.write("report\n")
        self._proc.stdin.flush()
        return [UploadRow(*row) for row in self._read()]

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@contextmanager
def azure_fakes() -> Iterator[AzureFakes]:
    """The fakes, with this process's environment pointing azure-identity at the fake identity."""
    fakes = AzureFakes()
    saved = {name: os.environ.pop(name) for name in AZURE_CREDENTIAL_ENV_VARS if name in os.environ}
    os.environ.update(fakes.env)
    try:
        yield fakes
    finally:
        for name in fakes.env:
            os.environ.pop(name, None)
        os.environ.update(saved)
        fakes.close()


async def _sample_pages(base_url: str, token: str) -> list[list[dict[str, Any]]]:
    from opsentinel.streams import get_stream

    spec = get_stream(STREAM)
    pages: list[list[dict[str, Any]]] = []
    body = reset_body(DAYS)
    async with EventsClient(base_url, ApiToken(token), limiter=unlimited()) as client:
        while len(pages) < SAMPLE_PAGES:
            page = await client.fetch_page(spec, body)
            pages.append(page.events)
            if not page.has_more:
                break
            body = {"cursor": page.cursor}
    return pages


def _sink_only(fakes: AzureFakes, pages: list[list[dict[str, Any]]], events: int, state: Path) -> float:
    sink = SentinelSink(fakes.endpoint, fakes.dcr_id, dead_letter_dir=state, connection_verify=fakes.ca_path)
    sent = 0
    started = time.perf_counter()
    try:
        index = 0
        while sent < events:
            batch = pages[index % len(pages)][: events - sent]
            sink.write(Batch(STREAM, batch, datetime.now(UTC)))
            sent += len(batch)
            index += 1
        return time.perf_counter() - started
    finally:
        sink.close()


def _add_row(table: Table, label: str, events: int, seconds: float, uploads: list[UploadRow]) -> None:
    progress(f"sentinel {label}: {seconds:.2f} s, {len(uploads)} requests")
    if not uploads:
        raise BenchError(f"{label}: no request reached the fake")
    sizes = [u.content_length for u in uploads]
    inner = [u.uncompressed_size or 0 for u in uploads]
    over = sum(1 for u in uploads if u.content_length > MAX_BODY or (u.uncompressed_size or 0) > MAX_BODY)
    refused = sum(1 for u in uploads if u.status != 204)
    accepted = sum(u.records for u in uploads if u.status == 204)
    table.add(
        label,
        count(events),
        num(seconds, 2),
        count(round(events / seconds)),
        count(len(uploads)),
        count(accepted),
        num(sum(sizes) / len(sizes) / 1024),
        num(sum(inner) / len(inner) / 1024),
        num(max(inner) / 1024),
        count(over),
        count(refused),
    )


def run(*, events: int) -> list[Table]:
    table = Table(
        f"sentinel: events/s and requests into the local Logs Ingestion fake ({count(events)} events)",
        [
            "what",
            "events",
            "seconds",
            "events/s",
            "requests",
            "records accepted",
            "avg KiB gzip",
            "avg KiB JSON",
            "max KiB JSON",
            "> 1 MiB",
            "not 204",
        ],
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-sentinel-") as tmp,
        SimulatorProcess(events=events, days=DAYS, workdir=Path(tmp)) as sim,
        azure_fakes() as fakes,
    ):
        token = sim.token
        pages = asyncio.run(_sample_pages(sim.base_url, token))
        seconds = _sink_only(fakes, pages, events, Path(tmp) / "state-sink")
        _add_row(table, "sink only (SentinelSink.write)", events, seconds, fakes.report())
        del pages

        settings = settings_for(
            sim.base_url,
            token,
            days=DAYS,
            sink="sentinel",
            dce=fakes.endpoint,
            dcr_id=fakes.dcr_id,
            state=Path(tmp) / "state-run",
        )
        destination = open_destination(settings, connection_verify=fakes.ca_path)
        result = asyncio.run(run_once(settings, limiter=unlimited(), destination=destination))
        if result.error:
            raise BenchError(f"run --once into the Sentinel fake failed: {result.error}")
        _add_row(table, "op-sentinel run --once -> sentinel", result.events, result.seconds, fakes.report())
    table.notes.append(
        "1 MiB = 1,048,576 bytes, Azure's limit per request body; the fake checks it on both the gzip and "
        "the JSON size. The run's requests include its one health-row upload."
    )
    return [table]
