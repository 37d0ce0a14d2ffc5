"""kill -9 loops: `op-sentinel run` killed at random moments many times, restarted each time, then
drained. The DuckDB store ends with every simulator event exactly once; the Sentinel sink delivers
every event at least once and re-sends only pages that were in flight at a kill.

The simulator runs in this test process; each connector is a separate process (forked from a
pre-imported `op-sentinel`, see forkserver.py, so that 15 restarts fit in seconds) and is killed
with SIGKILL. The simulator adds latency to every request and trickles in new events, and the first
run starts with a parallel backfill of the history, so kills land in the backfill, in the live
chain and in between.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
from tests.fakes.azure_identity import FakeManagedIdentity
from tests.fakes.azure_ingestion import FakeLogsIngestion
from tests.reliability.relhelp import (
    STREAMS,
    ForkServer,
    SimClock,
    assert_no_duplicates,
    assert_store_exactly_once,
    checkpoints,
    sim_uuids,
    write_token,
)

from opsentinel.config import Settings
from opsentinel.pipeline import Pipeline
from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.timefmt import format_rfc3339

KILLS = 15
PAGE_CAP = 25
HISTORY_DAYS = 2.0


def _simulator(seed: int, clock: SimClock, events: int) -> SimulatorServer:
    config = SimulatorConfig(
        events=events,
        days=HISTORY_DAYS,
        seed=seed,
        trickle=90.0,  # 1.5 new events a second per stream
        latency=0.01,
        page_cap=PAGE_CAP,
        rate_limit_per_minute=0,
        rate_limit_per_hour=0,
        clock=clock,
        request_log_size=5000,
    )
    return SimulatorServer(config)


def _kill_mid_work(
    forkserver: ForkServer, pid: int, sim: SimulatorServer, rng: random.Random, *, early: bool
) -> int | None:
    """SIGKILL the child at a random moment of its work: a random 0.02-0.6 s after its first event
    request reached the simulator (so start-up time does not decide where kills land); `early`
    kills within 0.15 s, so that on a fast machine too the first kills land in the backfill."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not any(r.method == "POST" for r in sim.request_log):
        time.sleep(0.005)
    time.sleep(rng.uniform(0.02, 0.15 if early else 0.6))
    code = forkserver.kill9(pid)
    sim.clear_request_log()
    return code


def _since() -> str:
    return format_rfc3339(datetime.now(UTC) - timedelta(days=HISTORY_DAYS, hours=1))


def _add_late_and_live(sim: SimulatorServer, rng: random.Random) -> None:
    """Events arriving out of band: some stamped now, some late (inside the live chain's hour)."""
    for stream in STREAMS:
        sim.add_events(stream, rng.randint(1, 4))
        late = datetime.now(UTC) - timedelta(minutes=rng.randint(5, 40))
        sim.add_events(stream, rng.randint(0, 3), at=late)


def test_kill_9_loop_duckdb_stores_every_event_exactly_once(forkserver: ForkServer, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    clock = SimClock()
    work = tmp_path / "work"
    work.mkdir()
    db = tmp_path / "store" / "events.duckdb"
    with _simulator(seed=31, clock=clock, events=800) as sim:
        token = write_token(tmp_path / "op-token", sim.token)
        args = ["--base-url", sim.base_url, "--token-file", token, "--db", db]
        first = ["--poll-interval", "1s", "--since", _since()]
        rows_seen: list[int] = []
        kills_in_backfill = 0
        for i in range(KILLS):
            sim.clear_request_log()
            pid = forkserver.spawn(
                ["run", *args, *first], env={}, cwd=work, out=tmp_path / "run.out", err=tmp_path / "run.err"
            )
            code = _kill_mid_work(forkserver, pid, sim, rng, early=i < 3)
            assert code == -9, f"run {i} ended by itself ({code}):\n{(tmp_path / 'run.err').read_text()}"
            if not db.exists():
                continue
            rows_seen.append(assert_no_duplicates(db))
            stored = checkpoints(db)
            if any(backfill is not None for _, _, backfill in stored):
                kills_in_backfill += 1
            # The hand-over is crash-safe: where the live cursor starts is stored with the first commit.
            assert all(live_start is not None for live_start in _live_starts(db)), "a live start was lost"
            if i % 3 == 2:
                _add_late_and_live(sim, rng)

        clock.freeze()
        final = forkserver.run(["run", "--once", *args], cwd=work)
        assert final.code == 0, final.err
        total = assert_store_exactly_once(db, sim)

    grew = sum(1 for a, b in itertools.pairwise(rows_seen) if b > a)
    assert grew >= KILLS // 3, f"the runs made too little progress between kills: {rows_seen}"
    assert kills_in_backfill >= 2, "no kill landed while the first run's backfill was in progress"
    assert rows_seen[-1] <= total
    assert all(cursor and backfill is None for _, cursor, backfill in checkpoints(db))


def _live_starts(db: Path) -> list[Any]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [row[0] for row in con.execute("SELECT live_start FROM opsentinel_checkpoints").fetchall()]
    finally:
        con.close()


def _counts(fake: FakeLogsIngestion) -> Counter[tuple[str, str]]:
    return Counter(
        (str(r.get("log_source")), str(r.get("uuid"))) for r in fake.records if r.get("log_source") in STREAMS
    )


def _settle(fake: FakeLogsIngestion) -> None:
    """Wait until requests a killed process left behind are answered (or cut off)."""
    last, stable = -1, 0
    while stable < 3:
        now = len(fake.uploads)
        stable = stable + 1 if now == last else 0
        last = now
        time.sleep(0.03)


def _state_backfill(state: Path) -> dict[str, bool]:
    """stream -> whether its checkpoint file (if there is one yet) holds an unfinished backfill plan."""
    out = {}
    for path in (state / "checkpoints").glob("*/*.json"):
        data = orjson.loads(path.read_bytes())
        out[data["stream"]] = data.get("backfill") is not None
        assert data.get("live_start"), "the live cursor's start is stored from the first commit on"
    return out


def test_kill_9_loop_sentinel_delivers_at_least_once_and_resends_only_unacknowledged(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    """Design bound on re-sent events: the checkpoint file is committed after Azure accepted a page,
    in page order, so at a kill the only pages Azure may have accepted without a committed
    checkpoint are those in flight: per stream at most `Pipeline.max_in_flight` (4) pages of the
    live chain plus one page per backfill worker (`--backfill-workers`, 8 by default) while a
    backfill is running. So the events received again after restart number j (whose uuids Azure had
    already received before it) are at most (4 + 8) * page size per stream, and 4 * page size for a
    stream whose backfill had finished at the kill. Every event is received at least once."""
    live_window = Pipeline.max_in_flight
    backfill_window = Pipeline.max_in_flight + Settings().backfill_workers
    rng = random.Random(4242)
    clock = SimClock()
    work = tmp_path / "work"
    work.mkdir()
    state = tmp_path / "state"
    with (
        FakeManagedIdentity() as mi,
        FakeLogsIngestion(token_ok=mi.token_ok) as fake,
        _simulator(seed=32, clock=clock, events=900) as sim,
    ):
        token = write_token(tmp_path / "op-token", sim.token)
        args = ["--base-url", sim.base_url, "--token-file", token, "--sink", "sentinel"]
        args += ["--dce", fake.endpoint, "--dcr-id", fake.dcr_id, "--state", state]
        first = ["--poll-interval", "1s", "--since", _since()]
        env = {**mi.env(), "REQUESTS_CA_BUNDLE": fake.ca_path}
        epochs: list[Counter[tuple[str, str]]] = [Counter()]
        plans: list[dict[str, bool]] = [{}]  # per kill: stream -> unfinished plan stored
        for i in range(KILLS):
            sim.clear_request_log()
            pid = forkserver.spawn(
                ["run", *args, *first], env=env, cwd=work, out=tmp_path / "run.out", err=tmp_path / "run.err"
            )
            code = _kill_mid_work(forkserver, pid, sim, rng, early=i < 3)
            assert code == -9, f"run {i} ended by itself ({code}):\n{(tmp_path / 'run.err').read_text()}"
            _settle(fake)
            epochs.append(_counts(fake))
            plans.append(_state_backfill(state))
            if i % 3 == 2:
                _add_late_and_live(sim, rng)

        clock.freeze()
        final = forkserver.run(["run", "--once", *args], env=env, cwd=work)
        assert final.code == 0, final.err
        _settle(fake)
        epochs.append(_counts(fake))
        received = epochs[-1]

        for stream in STREAMS:
            expected = set(sim_uuids(sim, stream))
            got = {u for (s, u) in received if s == stream}
            assert expected <= got, f"{stream}: {len(expected - got)} events never delivered"
            assert got <= expected, f"{stream}: Azure received events the simulator never had"

    delivered = [sum(e.values()) for e in epochs]
    grew = sum(1 for a, b in itertools.pairwise(delivered[:-1]) if b > a)
    assert grew >= KILLS // 3, f"the runs delivered too little between kills: {delivered}"
    assert sum(1 for p in plans if any(p.values())) >= 2, "no kill landed while the backfill was in progress"
    for j in range(1, len(epochs)):
        before, after = epochs[j - 1], epochs[j]
        for stream in STREAMS:
            resent = sum(
                after[key] - before[key] - (1 if before[key] == 0 else 0)
                for key in after
                if key[0] == stream and after[key] > before[key]
            )
            # Before a stream's first checkpoint its backfill has surely not finished.
            window = backfill_window if plans[j - 1].get(stream, True) else live_window
            assert resent <= window * PAGE_CAP, (
                f"{stream}: {resent} events re-sent after kill {j - 1}, more than the {window} pages "
                f"of {PAGE_CAP} that can be in flight"
            )
