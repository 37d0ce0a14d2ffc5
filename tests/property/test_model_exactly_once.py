"""Model-based test of the headline promise: nothing lost, nothing twice, late events included.

A hypothesis state machine drives the real pipeline (client, planner, history slices, live chain,
ledger, stores, sinks) against the simulator's application in-process, on a manual clock. The
simulator indexes a late event after everything already there, so its index order differs from time
order exactly as the real API's does when a device syncs item usages late. Rules add events on time
and late by any delay, run the connector (any number of backfill workers) and kill it at any of its
I/O points (before or after a page fetch, a sink write, an acknowledgement being recorded, a
checkpoint commit, a ledger write), or make one of those fail; they invalidate every cursor, refuse
every Sentinel request for a while, and let time pass. Each run is a new "process": nothing survives
but the files.

Invariants, checked after one last clean run:

- every event of the history present at the first run (from its start time) and every event that
  arrived within the late window of its own time is delivered;
- nothing is delivered twice (DuckDB: never; Sentinel: an event may be sent again only once per kill
  or failure that caught it accepted by Azure but not yet durable: neither in the ledger nor passed
  by a committed cursor: the "upload in flight with no acknowledgement recorded");
- checkpoints only move forward (version, counters, newest event time).

`OP_SENTINEL_MODEL_EXAMPLES` raises the example count (`make model` runs a long one).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import trustme
from azure.core.credentials import AccessToken
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule
from tests.fakes.azure_ingestion import HISTORY_STREAM, FakeLogsIngestion
from tests.fakes.azure_ingestion import STREAM as MAIN_STREAM

from opsentinel.checkpoints_file import FileCheckpointStore
from opsentinel.errors import RetriableError
from opsentinel.pipeline import Pipeline
from opsentinel.simulator import ManualClock, SimulatorConfig
from opsentinel.simulator.app import Request, SimulatorApp
from opsentinel.simulator.cursors import _BODY
from opsentinel.sinks.base import Batch, Receipt
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.sinks.sentinel import SentinelSink
from opsentinel.source.client import EventsClient
from opsentinel.source.ratelimit import RateLimit, RateLimiter
from opsentinel.source.retry import RetryPolicy
from opsentinel.source.token import ApiToken
from opsentinel.state import Checkpoint
from opsentinel.streams import get_stream
from opsentinel.timefmt import parse_rfc3339

STREAM = get_stream("auditevents")
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
EXAMPLES = int(os.environ.get("OP_SENTINEL_MODEL_EXAMPLES", "0")) or None
NO_RETRY = RetryPolicy(max_attempts=1, base_delay=0.0, max_delay=0.0, jitter=False)


# --- the simulator, in-process ---------------------------------------------------------------------


class SimTransport(httpx.AsyncBaseTransport):
    """httpx straight into `SimulatorApp.handle` (no socket): the simulator's answers, byte for byte."""

    def __init__(self, app: SimulatorApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = {k.decode().lower(): v.decode() for k, v in request.headers.raw}
        path = request.url.raw_path.decode()
        answer = self.app.handle(Request(request.method, path, headers, body or None))
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body)


def cursor_reach(text: str) -> tuple[int, int, int | None]:
    """(position, start_ns, end_ns) inside a simulator cursor, whatever key epoch signed it."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    _, _, position, _, start_ns, end_ns, _ = _BODY.unpack(raw[: _BODY.size])
    return position, start_ns, None if end_ns == -1 else end_ns


# --- kills and failures at I/O points ------------------------------------------------------------


class Killed(Exception):
    """The process died here (nothing after this point happens)."""


class Trap:
    """Counts the connector's I/O points; at the chosen one it dies (`kill`) or fails once."""

    def __init__(self, at: int | None, kill: bool) -> None:
        self.left = at
        self.kill = kill
        self.dead = False
        self.sprung = False
        self._lock = threading.Lock()

    def point(self) -> None:
        with self._lock:
            if self.dead:
                raise Killed
            if self.left is None:
                return
            self.left -= 1
            if self.left > 0:
                return
            self.left = None
            self.sprung = True
            if self.kill:
                self.dead = True
        if self.kill:
            raise Killed
        raise RetriableError("injected failure")


class TrappedClient:
    def __init__(self, client: EventsClient, trap: Trap) -> None:
        self._client = client
        self._trap = trap

    def api_now(self) -> datetime:
        return self._client.api_now()

    async def fetch_page(
        self, spec: Any, body: dict[str, Any], *, priority: bool = False, admit: Any = None
    ) -> Any:
        self._trap.point()
        page = await self._client.fetch_page(spec, body, priority=priority, admit=admit)
        self._trap.point()
        return page


class TrappedSink:
    def __init__(self, sink: Any, trap: Trap) -> None:
        self._sink = sink
        self._trap = trap
        self.name = sink.name
        self.transactional = sink.transactional

    def prepare(self, batch: Batch) -> Batch:
        prepared: Batch = self._sink.prepare(batch)
        return prepared

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None) -> Receipt:
        self._trap.point()
        if batch.on_resolved is not None:
            inner = batch.on_resolved

            def resolved(indexes: Sequence[int], accepted: bool) -> None:
                self._trap.point()  # acknowledged by Azure, not yet recorded
                inner(indexes, accepted)

            batch = dataclasses.replace(batch, on_resolved=resolved)
        receipt: Receipt = self._sink.write(batch, checkpoint)
        self._trap.point()
        return receipt

    def check(self) -> str:
        return str(self._sink.check())

    def close(self) -> None:
        self._sink.close()


class TrappedStore:
    """A checkpoint store (and ledger store) whose writes are trap points."""

    def __init__(self, store: Any, trap: Trap) -> None:
        self._store = store
        self._trap = trap

    def read(self, account: str, stream: str) -> Checkpoint | None:
        self._trap.point()
        cp: Checkpoint | None = self._store.read(account, stream)
        return cp

    def commit(self, checkpoint: Checkpoint) -> Checkpoint:
        self._trap.point()
        stored: Checkpoint = self._store.commit(checkpoint)
        self._trap.point()
        return stored

    def list(self) -> list[Checkpoint]:
        out: list[Checkpoint] = self._store.list()
        return out

    def load_ledger(self, account: str, stream: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = self._store.load_ledger(account, stream)
        return out

    def append_ledger(self, account: str, stream: str, entries: Sequence[tuple[str, int]]) -> None:
        self._trap.point()
        self._store.append_ledger(account, stream, entries)
        self._trap.point()

    def rewrite_ledger(self, account: str, stream: str, entries: Sequence[tuple[str, int]]) -> None:
        self._trap.point()
        self._store.rewrite_ledger(account, stream, entries)
        self._trap.point()


class StaticCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("model-test-token", 2_000_000_000)


_CA: dict[str, Any] = {}


def _ca() -> tuple[trustme.CA, str]:
    if not _CA:
        ca = trustme.CA()
        path = Path(tempfile.mkdtemp(prefix="model-ca-")) / "ca.pem"
        ca.cert_pem.write_to_path(str(path))
        _CA.update(ca=ca, path=str(path))
    return _CA["ca"], _CA["path"]


# --- the machine -----------------------------------------------------------------------------------


class ExactlyOnce(RuleBasedStateMachine):
    """See the module docstring. `kind` is the sink: "duckdb" (transactional) or "sentinel"."""

    kind = "duckdb"

    @initialize(
        history=st.integers(0, 300),
        days=st.integers(1, 4),
        late_hours=st.sampled_from([2, 6, 24]),
        page_cap=st.sampled_from([4, 9, 40]),
        seed=st.integers(1, 50),
    )
    def setup(self, history: int, days: int, late_hours: int, page_cap: int, seed: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="model-"))
        self.clock = ManualClock(T0)
        self.app = SimulatorApp(
            SimulatorConfig(
                events=history,
                days=days,
                now=T0,
                clock=self.clock,
                seed=seed,
                trickle=0,
                rate_limit_per_minute=0,
                rate_limit_per_hour=0,
            )
        )
        self.app.faults.page_cap = page_cap
        self.token = self.app.issue_token()
        self.late = timedelta(hours=late_hours)
        self.first_start = T0 - timedelta(days=days, hours=1)
        self.started = False
        self.required: set[str] = set()
        self.allowed: Counter[str] = Counter()
        self.durable: set[str] = set()
        self.uuid_of: dict[int, str] = {}
        self.last: Checkpoint | None = None
        self.refusing = False
        self.fake: FakeLogsIngestion | None = None
        if self.kind == "sentinel":
            ca, path = _ca()
            self.fake = FakeLogsIngestion(ca, path).start()
        for seq, ts in self.app.logs[STREAM.name].snapshot():
            self._note(seq, ts, delay=timedelta(0))

    def teardown(self) -> None:
        try:
            if getattr(self, "app", None) is not None and self.started:
                self._final_check()
        finally:
            if getattr(self, "fake", None) is not None:
                self.fake.stop()  # type: ignore[union-attr]
            if getattr(self, "tmp", None) is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- time and events ---------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock() / 1e9, tz=UTC)

    def _note(self, seq: int, ts_ns: int, delay: timedelta) -> None:
        ts = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
        if ts < self.first_start:
            return
        if not self.started or delay <= self.late:
            self.required.add(self._uuid(seq))

    def _uuid(self, seq: int) -> str:
        if seq not in self.uuid_of:
            self.uuid_of[seq] = str(self.app.event(STREAM.name, seq)["uuid"])
        return self.uuid_of[seq]

    def _add(self, count: int, delay: timedelta) -> None:
        log = self.app.logs[STREAM.name]
        at = None if delay <= timedelta(0) else self.clock() - int(delay.total_seconds() * 1e9)
        for seq in log.add(count, at):
            self._note(seq, log.ts(seq), delay)

    @rule(count=st.integers(1, 25), minutes=st.integers(0, 90))
    def time_passes_with_new_events(self, count: int, minutes: int) -> None:
        self.clock.advance(minutes * 60)
        self._add(count, timedelta(0))

    @rule(count=st.integers(1, 6), share=st.floats(0.0, 1.0))
    def late_events_within_the_window(self, count: int, share: float) -> None:
        self._add(count, self.late * share)

    @rule(count=st.integers(1, 4), extra_hours=st.integers(1, 72))
    def late_events_beyond_the_window(self, count: int, extra_hours: int) -> None:
        self._add(count, self.late + timedelta(hours=extra_hours))

    @rule()
    def cursors_are_invalidated(self) -> None:
        self.app.faults.invalidate_cursors()

    @precondition(lambda self: self.kind == "sentinel")
    @rule(refuse=st.booleans(), names_the_stream=st.booleans())
    def azure_refuses_every_request(self, refuse: bool, names_the_stream: bool) -> None:
        """A broken DCR: Azure refuses every request (naming the stream, or with a generic 400)."""
        assert self.fake is not None
        if refuse and not self.refusing:
            if names_the_stream:
                self.fake.reject_when(
                    lambda _: True, code="InvalidStream", message="The stream is not valid."
                )
            else:
                self.fake.reject_when(lambda _: True, code="InvalidPayload", message="Bad request.")
        elif not refuse:
            self.fake.accept_all()
        self.refusing = refuse

    # -- runs ------------------------------------------------------------------------------------------

    @rule(
        workers=st.sampled_from([0, 1, 3, 8]),
        trap_at=st.none() | st.integers(1, 120),
        kill=st.booleans(),
    )
    def run(self, workers: int, trap_at: int | None, kill: bool) -> None:
        self.started = True
        trap = Trap(trap_at, kill)
        result = self._run(workers, trap)
        self._after_run(trap)
        if self.refusing and result is not None and not trap.sprung and result.events:
            raise AssertionError(f"events were delivered while Azure refused every request: {result}")
        if self.refusing and result is not None and result.error is not None and not trap.sprung:
            assert "refuses" in result.error, result
        self.clock.advance(5)

    def _run(self, workers: int, trap: Trap) -> Any:
        async def main() -> Any:
            client = EventsClient(
                "http://127.0.0.1:9",
                ApiToken(self.token),
                limiter=RateLimiter([RateLimit(10**9, 60.0)]),
                retry=NO_RETRY,
                transport=SimTransport(self.app),
                now=self.now,
            )
            sink, store, ledgers = self._destination()
            pipeline = Pipeline(
                client=TrappedClient(client, trap),  # type: ignore[arg-type]
                sink=TrappedSink(sink, trap),
                store=TrappedStore(store, trap),
                account=self.app.account_uuid,
                first_start=self.first_start,
                backfill_workers=workers,
                late_window=self.late,
                ledgers=TrappedStore(ledgers, trap) if ledgers is not None else None,
                clock=self.now,
            )
            try:
                (result,) = await pipeline.poll_cycle([STREAM])
                return result
            except Killed:
                return None
            finally:
                await client.aclose()
                sink.close()

        return asyncio.run(main())

    def _destination(self) -> tuple[Any, Any, FileCheckpointStore | None]:
        if self.kind == "duckdb":
            store = DuckDBStore(self.tmp / "events.duckdb", linger=0.0)
            return store, store, None
        assert self.fake is not None
        files = FileCheckpointStore(self.tmp / "state")
        sink = SentinelSink(
            self.fake.endpoint,
            self.fake.dcr_id,
            credential=StaticCredential(),  # type: ignore[arg-type]
            dead_letter_dir=self.tmp / "state",
            connection_verify=_CA["path"],
            retry=NO_RETRY,
            sleep=lambda _: None,
            history_stream=HISTORY_STREAM,
        )
        return sink, files, files

    # -- the oracle ------------------------------------------------------------------------------------

    def _checkpoint(self) -> Checkpoint | None:
        if self.kind == "duckdb":
            store = DuckDBStore(self.tmp / "events.duckdb")
            try:
                return store.read(self.app.account_uuid, STREAM.name)
            finally:
                store.close()
        return FileCheckpointStore(self.tmp / "state").read(self.app.account_uuid, STREAM.name)

    def _after_run(self, trap: Trap) -> None:
        cp = self._checkpoint()
        if self.last is not None:
            assert cp is not None, "a checkpoint disappeared"
            assert cp.version >= self.last.version
            assert cp.events_delivered >= self.last.events_delivered
            assert cp.events_duplicate >= self.last.events_duplicate
            if self.last.newest_event_time is not None:
                assert cp.newest_event_time is not None
                assert cp.newest_event_time >= self.last.newest_event_time
            if self.last.live_start is not None:
                assert cp.live_start == self.last.live_start, "the live start moved"
            if self.last.first_run_at is not None:
                assert cp.first_run_at == self.last.first_run_at, "the first-run boundary moved"
        self.last = cp
        if self.kind != "sentinel":
            return
        self.durable |= self._passed(cp) | self._ledger()
        if trap.sprung:  # died or failed: whatever Azure took that is not durable may come again
            for uuid in set(self._delivered()) - self.durable:
                self.allowed[uuid] += 1

    def _ledger(self) -> set[str]:
        files = FileCheckpointStore(self.tmp / "state")
        return {u for u, _ in files.load_ledger(self.app.account_uuid, STREAM.name)}

    def _passed(self, cp: Checkpoint | None) -> set[str]:
        """Events behind a committed cursor (the live chain's and every slice's)."""
        if cp is None:
            return set()
        cursors = [cp.cursor] if cp.cursor else []
        if cp.backfill:
            cursors += [s["cursor"] for s in cp.backfill["slices"] if s.get("cursor")]
        log = self.app.logs[STREAM.name]
        out: set[str] = set()
        for cursor in cursors:
            position, start_ns, end_ns = cursor_reach(cursor)
            for seq in range(min(position, log.total())):
                ts = log.ts(seq)
                if ts >= start_ns and (end_ns is None or ts <= end_ns):
                    out.add(self._uuid(seq))
        return out

    def _delivered(self) -> Counter[str]:
        if self.kind == "duckdb":
            with duckdb.connect(str(self.tmp / "events.duckdb"), read_only=True) as con:
                rows = con.execute(
                    "SELECT uuid_s FROM OnePasswordEventLogs_CL WHERE log_source = ?", [STREAM.name]
                ).fetchall()
            return Counter(r[0] for r in rows)
        assert self.fake is not None
        return Counter(r["uuid"] for r in self.fake.records if r.get("log_source") == STREAM.name)

    def _final_check(self) -> None:
        if self.fake is not None:
            self.fake.accept_all()
        for _ in range(2):  # the second run picks up what arrived during the first
            result = self._run(2, Trap(None, kill=False))
            assert result is not None and result.error is None, result
            self._after_run(Trap(None, kill=False))
            self.clock.advance(1)
        delivered = self._delivered()
        if self.kind == "sentinel":
            letters = self.tmp / "state" / "dead-letter.jsonl"
            assert not letters.exists() or not letters.read_text(), "a refusal of every request dead-lettered"
        if self.kind == "sentinel" and self.last is not None and self.last.first_run_at is not None:
            assert self.fake is not None
            boundary = self.last.first_run_at
            for record in self.fake.records_of(MAIN_STREAM):
                if record.get("log_source") == STREAM.name:
                    assert parse_rfc3339(record["timestamp"]) >= boundary, "history reached the rules' table"
        missing = self.required - set(delivered)
        assert not missing, f"{len(missing)} event(s) never delivered, e.g. {sorted(missing)[:3]}"
        twice = {u: n for u, n in delivered.items() if n > 1 + self.allowed[u]}
        assert not twice, f"delivered more often than allowed: {dict(list(twice.items())[:5])}"


def _settings(examples: int) -> settings:
    return settings(
        max_examples=EXAMPLES or examples,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class DuckDBExactlyOnce(ExactlyOnce):
    kind = "duckdb"


class SentinelExactlyOnce(ExactlyOnce):
    kind = "sentinel"


TestDuckDBExactlyOnce = DuckDBExactlyOnce.TestCase
TestDuckDBExactlyOnce.settings = _settings(20)
TestSentinelExactlyOnce = SentinelExactlyOnce.TestCase
TestSentinelExactlyOnce.settings = _settings(20)
_TIMEOUT = max(600, 10 * (EXAMPLES or 0))
TestDuckDBExactlyOnce = pytest.mark.timeout(_TIMEOUT)(TestDuckDBExactlyOnce)
TestSentinelExactlyOnce = pytest.mark.timeout(_TIMEOUT)(TestSentinelExactlyOnce)
