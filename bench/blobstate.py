"""blobstate: storage requests per unit per minute of a Blob state in steady state, on Azurite.

`units` (account, stream) units are claimed by `replicas` LeaseManagers (each its own client, as
separate processes would be; round-robin) and then, for `seconds`, every unit runs one page every
`page_every` seconds the way the live loop does when it is drained: record the page's uuids in the
ledger (an Append Block; only pages with events), commit the checkpoint (a Put Blob), give the store
the stream status. Lease renewals run beside it every 10 s. Every HTTP request is counted at the
transport, by kind; the claims before the steady phase are counted apart.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests.adapters
from tests.fakes.azurite import Azurite, require_azurite

from bench.simproc import BenchError
from bench.table import Table
from opsentinel.checkpoints.blob import BlobCheckpointStore
from opsentinel.checkpoints.leases import LeaseManager, UnitLease
from opsentinel.state import Checkpoint, StreamStatus

STREAMS = ("auditevents", "signinattempts", "itemusages")
_COUNTS: Counter[str] = Counter()


def _kind(request: Any) -> str:
    url, method, headers = request.url, request.method, request.headers
    action = headers.get("x-ms-lease-action")
    if action:
        return f"lease {action}"
    comp = re.search(r"[?&]comp=([a-z]+)", url)
    name = comp.group(1) if comp else ""
    if method == "PUT" and name == "appendblock":
        return "ledger append"
    if method == "PUT" and name == "metadata":
        return "metadata (status)"
    if method == "PUT" and not name and "/checkpoints/" in url:
        return "checkpoint put"
    if method == "GET" and name == "list":
        return "list"
    return f"{method} {name or 'blob'}"


def _count_requests() -> None:
    original = requests.adapters.HTTPAdapter.send

    def send(self: requests.adapters.HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
        _COUNTS[_kind(request)] += 1
        return original(self, request, *args, **kwargs)

    requests.adapters.HTTPAdapter.send = send  # type: ignore[method-assign]


class _Unit:
    """One unit's page loop: the live loop of a drained stream, reduced to its storage calls."""

    def __init__(self, store: BlobCheckpointStore, lease: UnitLease, with_events: bool) -> None:
        self.store, self.lease, self.with_events = store, lease, with_events
        self.cp = Checkpoint(lease.account, lease.stream)
        self.pages = 0

    async def start(self) -> None:
        found = await asyncio.to_thread(self.store.read, self.lease.account, self.lease.stream)
        self.cp = found or self.cp
        await self.page()  # the first page also creates the ledger: not steady state

    async def page(self) -> None:
        self.pages += 1
        store, account, stream = self.store, self.lease.account, self.lease.stream
        if self.with_events:
            now = int(time.time() * 1e6)
            uuids = [(f"{stream[:2]}{self.pages:06d}{i:018d}", now + i) for i in range(20)]
            await asyncio.to_thread(store.append_ledger, account, stream, uuids)
        self.cp = await asyncio.to_thread(store.commit, self.cp.advanced(cursor=f"c{self.pages}"))
        status = StreamStatus(account, stream, rows_stored=self.pages, lag_seconds=1.0)
        await asyncio.to_thread(store.write_status, status)

    async def follow(self, page_every: float, stop: float) -> int:
        pages = 0
        while time.monotonic() + page_every <= stop:
            await asyncio.sleep(page_every)
            await self.page()
            pages += 1
        return pages


async def _scenario(
    url: str, units: int, replicas: int, seconds: float, page_every: float, with_events: bool
) -> tuple[Counter[str], Counter[str], int, float]:
    stores = [BlobCheckpointStore.open(url) for _ in range(replicas)]
    managers = [LeaseManager(s.state, f"replica-{i}") for i, s in enumerate(stores)]
    keys = [(f"account-{n // len(STREAMS):03d}", STREAMS[n % len(STREAMS)]) for n in range(units)]
    _COUNTS.clear()
    leases = [await managers[n % replicas].claim(a, s) for n, (a, s) in enumerate(keys)]
    claims = Counter(_COUNTS)
    loops = [_Unit(stores[n % replicas], lease, with_events) for n, lease in enumerate(leases)]
    await asyncio.gather(*(u.start() for u in loops))
    _COUNTS.clear()
    started = time.monotonic()
    pages = await asyncio.gather(*(u.follow(page_every, started + seconds) for u in loops))
    elapsed = time.monotonic() - started
    steady = Counter(_COUNTS)
    for manager in managers:
        await manager.close()
    for store in stores:
        store.close()
    return claims, steady, sum(pages), elapsed


def run(*, units: int, replicas: int, seconds: float, page_every: float = 10.0) -> list[Table]:
    _require_azurite()
    _count_requests()
    table = Table(
        f"blobstate: storage requests per unit per minute, steady state ({units} units, {replicas} replicas, "
        f"a page every {page_every:g} s, {seconds:g} s)",
        ["pages", "kind", "requests", "per unit per min"],
    )
    with tempfile.TemporaryDirectory() as tmp, Azurite(Path(tmp)) as server:
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = server.connection_string
        for with_events in (False, True):
            url = server.state_url()
            claims, steady, pages, elapsed = asyncio.run(
                _scenario(url, units, replicas, seconds, page_every, with_events)
            )
            label = "with events" if with_events else "empty"
            minutes = elapsed / 60
            for kind, n in sorted(steady.items()):
                table.add(label, kind, n, f"{n / units / minutes:.2f}")
            total = sum(steady.values())
            table.add(label, "total", total, f"{total / units / minutes:.2f}")
            if with_events:
                table.notes.append(
                    f"claiming {units} units took {sum(claims.values())} requests "
                    f"({sum(claims.values()) / units:.1f} per unit, once per ownership period)"
                )
            table.notes.append(f"{label}: {pages} pages in {elapsed:.0f} s")
    return [table]


def _require_azurite() -> None:
    import pytest

    try:
        require_azurite()
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise BenchError(f"blobstate needs Azurite: {exc}") from None
