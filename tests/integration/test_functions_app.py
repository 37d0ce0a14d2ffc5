"""The Functions app's entry points as plain Python, against Azurite (Blob state, Queue), the Events API
simulator and the Logs Ingestion fake: the app as `op-sentinel azure package` builds it, its indexed
functions called the way the host calls them (see tests/functions_app.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient
from tests.e2e.e2ehelp import run_in_process
from tests.fakes.azure_identity import AZURE_CREDENTIAL_ENV_VARS, FakeManagedIdentity
from tests.fakes.azure_ingestion import HISTORY_STREAM, STREAM, FakeLogsIngestion
from tests.fakes.azurite import Azurite
from tests.functions_app import App, app_dir

from opsentinel import telemetry
from opsentinel.checkpoints.blobaccess import BlobState
from opsentinel.checkpoints.leases import Leases
from opsentinel.checkpoints.membership import read_membership
from opsentinel.functions import InvocationFailed
from opsentinel.pipeline import Pipeline
from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.streams import STREAM_NAMES

pytestmark = pytest.mark.slow


@pytest.fixture
def azure() -> Iterator[tuple[FakeManagedIdentity, FakeLogsIngestion]]:
    with FakeManagedIdentity() as mi, FakeLogsIngestion(token_ok=mi.token_ok) as fake:
        yield mi, fake


@pytest.fixture
def app_env(
    monkeypatch: pytest.MonkeyPatch,
    blob_state_url: str,
    azure: tuple[FakeManagedIdentity, FakeLogsIngestion],
) -> dict[str, str]:
    """The app settings of a deployed app (as the template sets them), pointing at the fakes; the
    test adds OP_SENTINEL_BASE_URL and the token."""
    mi, fake = azure
    for name in [*AZURE_CREDENTIAL_ENV_VARS, *(n for n in os.environ if n.startswith("OP_SENTINEL_"))]:
        monkeypatch.delenv(name, raising=False)
    env = {
        **mi.env(),
        "REQUESTS_CA_BUNDLE": fake.ca_path,
        "OP_SENTINEL_SINK": "sentinel",
        "OP_SENTINEL_DCE": fake.endpoint,
        "OP_SENTINEL_DCR_ID": fake.dcr_id,
        "OP_SENTINEL_STATE": blob_state_url,
        "OP_SENTINEL_SCHEDULE": "0 */1 * * * *",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def use_account(monkeypatch: pytest.MonkeyPatch, sim: SimulatorServer, *, slow: bool = False) -> None:
    """Point the app at `sim`; `slow`: read its history one page at a time (a cycle lasts seconds)."""
    monkeypatch.setenv("OP_SENTINEL_BASE_URL", sim.base_url)
    monkeypatch.setenv("OP_SENTINEL_TOKEN", sim.token)
    if slow:
        monkeypatch.setenv("OP_SENTINEL_BACKFILL_WORKERS", "1")


# Pages of 25 events, 30 ms each: 2000 events take a stream some 6 s or more, one page at a time.
SLOW = {"rate_limit_per_minute": 0, "latency": 0.03, "page_cap": 25}
# What may be sent twice when an invocation ends abruptly: the uploads in flight, at most
# max_in_flight pages of each stream's live chain and one history page (one backfill worker).
IN_FLIGHT = (
    len(STREAM_NAMES) * (Pipeline.__dataclass_fields__["max_in_flight"].default + 1) * SLOW["page_cap"]
)


def delivered(fake: FakeLogsIngestion) -> Counter[str]:
    """uuid -> times the fake accepted it, over both streams (health rows left out)."""
    records = [*fake.records_of(STREAM), *fake.records_of(HISTORY_STREAM)]
    return Counter(r["uuid"] for r in records if r.get("log_source") != "healthevents")


def every_event(sim: SimulatorServer) -> set[str]:
    return {e["uuid"] for stream in STREAM_NAMES for e in sim.events(stream)}


def worked(report: Any) -> list[Any]:
    return [u for u in report.units if u.skipped_for is None]


def test_a_tick_drains_every_unit_and_commits(
    tmp_path: Path,
    app_env: dict[str, str],
    azure: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, fake = azure
    app = App(app_dir(tmp_path / "app"))
    with SimulatorServer(SimulatorConfig(events=150, seed=21, rate_limit_per_minute=0)) as sim:
        use_account(monkeypatch, sim)
        out, first = asyncio.run(app.tick())
        assert out.value is None, "without OP_SENTINEL_FANOUT the timer enqueues nothing"
        assert first.cycle.ok and sorted(u.stream for u in worked(first.cycle)) == sorted(STREAM_NAMES)
        assert not any(u.stopped for u in first.cycle.units), "caught up well before the deadline"
        assert set(delivered(fake)) == every_event(sim)

        fresh = [e["uuid"] for s in STREAM_NAMES for e in sim.add_events(s, 2)]
        _, second = asyncio.run(app.tick())
        # The commits of the first tick hold: the second sends the new events, and only those.
        assert sum(u.events for u in second.cycle.units) == len(fresh) == 6
        counts = delivered(fake)
        assert set(counts) == every_event(sim) and max(counts.values()) == 1
        state = BlobState.open(app_env["OP_SENTINEL_STATE"])
        units = read_membership(state).units
        state.close()
        assert len(units) == 3 and not any(u.leased for u in units), "every lease was released"

    # What the deploy page tells an admin to run from a workstation to watch the app.
    for name in [n for n in os.environ if n.startswith("OP_SENTINEL_")]:
        monkeypatch.delenv(name)
    status = run_in_process(["status", "--sink", "sentinel", "--state", app_env["OP_SENTINEL_STATE"]])
    assert status.code == 0, status.all
    assert all(stream in status.out for stream in STREAM_NAMES) and "fn-" in status.out, status.out


def test_a_tick_stops_at_its_deadline_and_the_next_one_continues(
    tmp_path: Path, app_env: dict[str, str], azure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """functionTimeout 40 s: the cycle stops working after 10 s (the rest is kept for closing),
    commits, and returns; the next tick continues from the commits, sending nothing twice."""
    _, fake = azure
    short = App(app_dir(tmp_path / "short", function_timeout="00:00:40"))
    config = SimulatorConfig(events=8000, seed=22, **SLOW)
    with SimulatorServer(config) as sim:
        use_account(monkeypatch, sim, slow=True)
        _, first = asyncio.run(short.tick())
        assert all(u.stopped for u in first.cycle.units), "a stream was drained in 10 s: make them slower"
        sent = sum(u.events for u in first.cycle.units)
        assert 0 < sent == sum(delivered(fake).values())

        _, second = asyncio.run(App(app_dir(tmp_path / "long")).tick())
        assert not any(u.stopped for u in second.cycle.units)
        counts = delivered(fake)
        assert set(counts) == every_event(sim) and max(counts.values()) == 1


def test_a_second_invocation_while_the_first_works_is_a_no_op(
    tmp_path: Path, app_env: dict[str, str], azure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overlapping timer (another instance or slot, a late tick) and a duplicate queue message both
    find every unit's lease taken and return without sending anything."""
    _, fake = azure
    app = App(app_dir(tmp_path / "app"))
    config = SimulatorConfig(events=2000, seed=23, **SLOW)
    with SimulatorServer(config) as sim:
        use_account(monkeypatch, sim, slow=True)

        async def overlapped() -> tuple[Any, Any, Any]:
            first = asyncio.create_task(app.tick())
            while len(delivered(fake)) < 50:  # the first invocation holds the units and sends
                assert not first.done(), "the first invocation ended before the overlap"
                await asyncio.sleep(0.05)
            before = sum(delivered(fake).values())
            _, second = await app.tick()
            duplicate = await app.work(json.dumps({"account": "default"}))
            assert not first.done(), "the first invocation ended before the overlap"
            assert sum(delivered(fake).values()) > before
            return (await first)[1], second, duplicate

        first, second, duplicate = asyncio.run(overlapped())
    assert len(worked(first.cycle)) == 3
    holders = set()
    for report in (second.cycle, duplicate):
        assert worked(report) == [] and len(report.units) == 3
        holders |= {u.skipped_for for u in report.units}
    # Each invocation is a replica named after its invocation id: the first one held every unit.
    (holder,) = holders
    assert holder is not None and holder.startswith("fn-")
    counts = delivered(fake)
    assert set(counts) == every_event(sim) and max(counts.values()) == 1


def test_a_cancelled_invocation_is_resumed_by_the_next_tick(
    tmp_path: Path, app_env: dict[str, str], azure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker cancels an invocation's task (a host shutdown): the units are released on the way
    out, and the next tick continues from the last commit."""
    _, fake = azure
    app = App(app_dir(tmp_path / "app"))
    config = SimulatorConfig(events=2000, seed=24, **SLOW)
    with SimulatorServer(config) as sim:
        use_account(monkeypatch, sim, slow=True)

        async def cancelled() -> None:
            task = asyncio.create_task(app.tick())
            while len(delivered(fake)) < 50:
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled())
        assert len(delivered(fake)) < 3 * 2000
        _, resumed = asyncio.run(app.tick())
    assert len(worked(resumed.cycle)) == 3, "a unit stayed leased after the cancelled invocation"
    counts = delivered(fake)
    assert set(counts) == every_event(sim)
    assert sum(n - 1 for n in counts.values()) <= IN_FLIGHT, "more than the uploads in flight were sent twice"


KILLED_INVOCATION = """
import asyncio, sys
from tests.functions_app import App
asyncio.run(App(__import__("pathlib").Path(sys.argv[1])).tick())
"""


def test_a_killed_invocation_is_resumed_by_a_later_tick(
    tmp_path: Path, app_env: dict[str, str], azure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host kills the worker process mid-cycle (a timeout, a crash, a scale-in): its leases run out
    (30 s), the ticks meanwhile skip the units, and then one resumes them from the last commit. Only
    the uploads in flight at the kill may be sent twice; nothing is lost."""
    _, fake = azure
    root = app_dir(tmp_path / "app")
    config = SimulatorConfig(events=3000, seed=25, **SLOW)
    with SimulatorServer(config) as sim:
        use_account(monkeypatch, sim, slow=True)
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_INVOCATION, str(root)],
            cwd=Path(__file__).resolve().parents[2],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while len(delivered(fake)) < 100:
                assert child.poll() is None, child.stderr.read() if child.stderr else ""
                assert time.monotonic() < deadline, "the child invocation sent nothing"
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        killed_at = len(delivered(fake))
        assert killed_at < 3 * 3000
        app = App(root)
        _, during = asyncio.run(app.tick())
        assert worked(during.cycle) == [] and len(during.cycle.units) == 3, (
            "a lease of the killed one was free"
        )
        deadline = time.monotonic() + 90
        while True:
            time.sleep(2)
            _, later = asyncio.run(app.tick())
            if worked(later.cycle):
                break
            assert time.monotonic() < deadline, "the killed invocation's leases never ran out"
        while any(u.stopped or u.skipped_for for u in later.cycle.units):
            _, later = asyncio.run(app.tick())
    counts = delivered(fake)
    assert set(counts) == every_event(sim), "events were lost"
    assert sum(n - 1 for n in counts.values()) <= IN_FLIGHT, "more than the uploads in flight were sent twice"


def test_queue_fan_out_works_each_account_once_even_when_a_message_comes_twice(
    tmp_path: Path,
    app_env: dict[str, str],
    azure: Any,
    monkeypatch: pytest.MonkeyPatch,
    azurite_queue: Azurite,
) -> None:
    """OP_SENTINEL_FANOUT=1 with two accounts: the tick puts one message per account on the queue and
    works nothing itself; each message's invocation works its account. A message delivered again
    (its first invocation died before deleting it) while the first still runs finds the leases taken."""
    _, fake = azure
    monkeypatch.setenv("OP_SENTINEL_FANOUT", "1")
    queue = QueueClient.from_connection_string(azurite_queue.connection_string, "op-sentinel-accounts")
    queue.create_queue()
    with (
        SimulatorServer(SimulatorConfig(events=300, seed=26, **SLOW)) as acme,
        SimulatorServer(SimulatorConfig(events=300, seed=27, **SLOW)) as umbrella,
    ):
        assert acme.account_uuid != umbrella.account_uuid
        # The accounts ship with the app (package --config); each token is an app setting.
        config = tmp_path / "accounts.toml"
        config.write_text(
            "".join(
                f'[[account]]\nname = "{name}"\ntoken_env = "{name.upper()}_TOKEN"\n'
                f'base_url = "{sim.base_url}"\n'
                for name, sim in (("acme", acme), ("umbrella", umbrella))
            )
        )
        app = App(app_dir(tmp_path / "app", config=config))
        monkeypatch.setenv("ACME_TOKEN", acme.token)
        monkeypatch.setenv("UMBRELLA_TOKEN", umbrella.token)

        out, tick = asyncio.run(app.tick())
        assert tick.cycle is None and not fake.records_of(STREAM), "a fanning-out tick works nothing itself"
        assert sorted(json.loads(m)["account"] for m in out.get()) == ["acme", "umbrella"]
        for body in out.get():  # what the output binding does with them
            queue.send_message(body)

        async def deliver() -> list[Any]:
            received = list(queue.receive_messages(messages_per_page=10, visibility_timeout=1))
            assert len(received) == 2
            again = None
            while again is None:  # umbrella's first invocation "died": the message comes back
                await asyncio.sleep(0.3)
                again = next(iter(queue.receive_messages(visibility_timeout=30)), None)
            reports = []
            first = [asyncio.create_task(app.work(m.content, message_id=m.id)) for m in received]
            while not fake.records_of(STREAM) and not fake.records_of(HISTORY_STREAM):
                await asyncio.sleep(0.05)
            reports.append(
                await app.work(again.content, message_id=again.id, dequeue_count=again.dequeue_count)
            )
            reports += await asyncio.gather(*first)
            queue.delete_message(again)
            return reports

        duplicate, *originals = asyncio.run(deliver())
        assert worked(duplicate) == [] and len(duplicate.units) == 3, "the duplicate worked a unit"
        assert sorted(len(worked(r)) for r in originals) == [3, 3]
        counts = delivered(fake)
        assert set(counts) == every_event(acme) | every_event(umbrella) and max(counts.values()) == 1

        # A tick skips an account whose units are all being worked (here: leased by someone else).
        state = BlobState.open(app_env["OP_SENTINEL_STATE"])
        for stream in STREAM_NAMES:
            Leases(state, "elsewhere").claim(acme.account_uuid, stream)
        out, _ = asyncio.run(app.tick())
        assert [json.loads(m)["account"] for m in out.get()] == ["umbrella"]
        state.close()
        assert asyncio.run(app.work(json.dumps({"account": "nobody"}))) is None


def test_health_rows_come_every_15_minutes_with_a_one_minute_schedule(
    tmp_path: Path, app_env: dict[str, str], azure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seventeen ticks a minute apart (a simulated clock): each stream's health row at the first tick,
    then at the fifteenth minute, none between. The Log Ingestion Failure rule needs one an hour."""
    _, fake = azure
    clock = {"now": datetime.now(UTC)}

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return clock["now"]

    monkeypatch.setattr(telemetry, "datetime", Clock)
    app = App(app_dir(tmp_path / "app"))
    written: dict[int, Counter[str]] = {}
    with SimulatorServer(SimulatorConfig(events=30, seed=28, rate_limit_per_minute=0)) as sim:
        use_account(monkeypatch, sim)
        for minute in range(17):
            before = len(fake.records_of(STREAM))
            if minute % 4 == 1:
                for stream in STREAM_NAMES:
                    sim.add_events(stream, 1)
            _, report = asyncio.run(app.tick())
            assert report.cycle.ok
            rows = fake.records_of(STREAM)[before:]
            written[minute] = Counter(r["type"] for r in rows if r.get("log_source") == "healthevents")
            clock["now"] += timedelta(minutes=1)
    for stream in STREAM_NAMES:
        minutes = [m for m, counts in written.items() if counts[stream]]
        assert minutes == [0, 15], (stream, minutes)


UNRESOLVED = "@Microsoft.KeyVault(SecretUri=https://opsent-kv.vault.azure.net/secrets/op-sentinel-token)"


def test_an_unresolved_key_vault_reference_is_refused_in_one_line_and_never_sent(
    tmp_path: Path,
    app_env: dict[str, str],
    azure: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the app's identity cannot read the secret (or it is not set yet), Azure leaves the app
    setting as the reference text: the app says so in one line and sends it nowhere."""
    _, fake = azure
    app = App(app_dir(tmp_path / "app"))
    with SimulatorServer(SimulatorConfig(events=20, seed=29, rate_limit_per_minute=0)) as sim:
        use_account(monkeypatch, sim)
        monkeypatch.setenv("OP_SENTINEL_TOKEN", UNRESOLVED)
        sim.clear_request_log()
        with pytest.raises(InvocationFailed) as failed:
            asyncio.run(app.tick())
        (line,) = str(failed.value).splitlines()
        assert "Key Vault reference" in line and "Key Vault Secrets User" in line
        assert asyncio.run(app.work(json.dumps({"account": "default"}))) is None
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 2 and all("Key Vault reference" in e for e in errors)
        assert sim.request_log == [] and fake.uploads == [], "the reference was sent somewhere"

        # With many accounts, one unreadable secret fails that account; the others run.
        config = app.root / "op-sentinel.toml"
        config.write_text(
            '[[account]]\nname = "good"\ntoken_env = "GOOD_TOKEN"\n'
            '[[account]]\nname = "vaulted"\ntoken_env = "VAULTED_TOKEN"\n'
        )
        monkeypatch.setenv("GOOD_TOKEN", sim.token)
        monkeypatch.setenv("VAULTED_TOKEN", UNRESOLVED)
        with pytest.raises(InvocationFailed, match="account vaulted: the API token is still the Key Vault"):
            asyncio.run(app.tick())
        assert set(delivered(fake)) == every_event(sim)
        assert sim.request_log and all(r.status != 401 for r in sim.request_log), "a token was refused"
