"""`op-sentinel run --once` against the simulator: every event stored once, in the table's shape;
restarts continue from the checkpoint; faults and a rejected cursor are survived."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.e2e.e2ehelp import (
    STREAMS,
    TABLE,
    CliResult,
    assert_exactly_once,
    store_rows,
    stored_uuids,
    summary_line,
)

from opsentinel.simulator import Fault, FaultKind, SimulatorServer
from opsentinel.timefmt import parse_rfc3339

Cli = Callable[..., CliResult]


def _page_requests(sim: SimulatorServer, stream: str) -> list[tuple[bool, int | None]]:
    """(was it a continuing cursor, status) of every page request to `stream`, in order."""
    return [(r.cursor, r.status) for r in sim.request_log if r.path == f"/api/v2/{stream}"]


def test_run_once_stores_every_event_of_every_stream_exactly_once(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    sim.faults.page_cap = 15  # several pages per stream
    before = datetime.now(UTC)

    result = cli(["run", "--once", *sim_args])

    after = datetime.now(UTC)
    assert result.code == 0, result.err
    assert_exactly_once(db_path, sim, STREAMS)
    for stream in STREAMS:
        line = summary_line(result, stream)
        assert f" {sim.event_count(stream)} events" in line
        pages = re.search(r"([\d,]+) pages", line)
        assert pages is not None
        assert int(pages.group(1).replace(",", "")) >= 3  # the page cap was followed, not ignored
        assert line.endswith("ok")
    # log_source is the stream read, the event's own time is `timestamp`, ingestion is TimeGenerated.
    for stream in STREAMS:
        expected = {e["uuid"]: parse_rfc3339(e["timestamp"]) for e in sim.events(stream)}
        rows = store_rows(
            db_path,
            f'SELECT uuid_s, "timestamp", TimeGenerated FROM {TABLE} WHERE log_source = ?',
            [stream],
        )
        assert {r[0]: r[1] for r in rows} == expected
        for _, _, generated in rows:
            assert isinstance(generated, datetime)
            assert before - timedelta(seconds=1) <= generated <= after + timedelta(seconds=1)
    kinds = store_rows(db_path, f"SELECT DISTINCT log_source FROM {TABLE}")
    assert {k[0] for k in kinds} == {*STREAMS, "healthevents"}


def test_a_rerun_stores_only_new_events_and_continues_the_stored_cursor(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    assert cli(["run", "--once", *sim_args]).code == 0
    for stream in STREAMS:
        sim.add_events(stream, 3)
    sim.clear_request_log()

    second = cli(["run", "--once", *sim_args])

    assert second.code == 0, second.err
    assert_exactly_once(db_path, sim, STREAMS)
    for stream in STREAMS:
        assert " 3 events" in summary_line(second, stream)
        requests = _page_requests(sim, stream)
        assert requests, stream
        assert requests[0] == (True, 200), f"{stream} did not continue its cursor: {requests}"

    third = cli(["run", "--once", *sim_args])
    assert third.code == 0
    for stream in STREAMS:
        assert " 0 events" in summary_line(third, stream)
    assert_exactly_once(db_path, sim, STREAMS)


def test_since_on_a_stream_with_a_checkpoint_warns_once_and_is_not_used(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    start = ["--since", "2020-01-01T00:00:00Z"]  # also older than 120 days: no clamp warning either
    assert cli(["run", "--once", *sim_args]).code == 0
    sim.add_events("auditevents", 2)
    sim.clear_request_log()

    result = cli(["run", "--once", *sim_args, *start])

    assert result.code == 0, result.err
    assert len(result.warnings()) == 1, result.err  # nothing else, not even the 120-day clamp
    assert all(name in result.warnings("not used")[0] for name in STREAMS)
    assert_exactly_once(db_path, sim, STREAMS)
    resets = [r for r in sim.request_log if r.method == "POST" and not r.cursor]
    assert resets == [], "a stream with a checkpoint was restarted from --since/--lookback"


def test_lookback_applies_only_to_the_stream_without_a_checkpoint(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    assert cli(["run", "--once", *sim_args, "--streams", "auditevents"]).code == 0
    before = datetime.now(UTC)

    result = cli(["run", "--once", *sim_args, "--lookback", "2d"])

    after = datetime.now(UTC)
    assert result.code == 0, result.err
    [warning] = result.warnings("not used")
    assert "auditevents" in warning
    assert "signinattempts" not in warning
    assert "itemusages" not in warning
    assert_exactly_once(db_path, sim, ("auditevents",))
    for stream in ("signinattempts", "itemusages"):
        stored = set(stored_uuids(db_path, stream))
        for event in sim.events(stream):
            at = parse_rfc3339(event["timestamp"])
            if at >= after - timedelta(days=2):
                assert event["uuid"] in stored, f"{stream}: an event inside the lookback is missing"
            elif at < before - timedelta(days=2):
                assert event["uuid"] not in stored, f"{stream}: an event before the lookback was stored"


def test_a_rejected_cursor_restarts_from_the_newest_stored_event_without_duplicates(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    assert cli(["run", "--once", *sim_args]).code == 0
    for stream in STREAMS:
        sim.add_events(stream, 4)
    sim.faults.invalidate_cursors()
    sim.clear_request_log()

    result = cli(["run", "--once", *sim_args])

    assert result.code == 0, result.err
    assert_exactly_once(db_path, sim, STREAMS)
    assert len(result.warnings("rejected the stored cursor")) == 3, result.err
    newest = dict(
        store_rows(
            db_path,
            "SELECT stream, newest_event_time FROM opsentinel_checkpoints",
        )
    )
    for stream in STREAMS:
        # The restart repeats the events at the newest stored time; the store keeps them once.
        assert re.search(r" [45] events", summary_line(result, stream))
        requests = _page_requests(sim, stream)
        assert requests[0] == (False, 400)  # the stale cursor (a 400 is logged as not a cursor request)
        assert requests[1] == (False, 200)  # a ResetCursor
        assert newest[stream] == max(parse_rfc3339(e["timestamp"]) for e in sim.events(stream))

    # The new cursor was saved: the next run continues it.
    sim.add_events("itemusages", 1)
    sim.clear_request_log()
    again = cli(["run", "--once", *sim_args])
    assert again.code == 0
    assert all(_page_requests(sim, s)[0] == (True, 200) for s in STREAMS)
    assert_exactly_once(db_path, sim, STREAMS)


FAULTS: dict[str, list[Fault]] = {
    "429 without Retry-After, a 500 burst, empty pages with has_more": [
        Fault.rate_limited(retry_after=None, stream="signinattempts", times=3),
        Fault.error(500, stream="itemusages", times=3),
        Fault.empty_has_more(stream="auditevents", times=3),
    ],
    "503 bursts on every stream": [Fault.error(503, stream=name, times=4) for name in STREAMS],
    "truncated bodies, connection resets, a stalled body": [
        Fault.truncate(stream="signinattempts", times=2),
        Fault.reset(stream="itemusages", times=2),
        Fault.stall(0.2, stream="auditevents", times=1),
    ],
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faults_are_survived_and_every_event_is_stored_once(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli, fault: str
) -> None:
    sim.faults.page_cap = 7  # below the limit the connector asks for: many pages
    for rule in FAULTS[fault]:
        sim.faults.add(rule)

    result = cli(["run", "--once", *sim_args])

    assert result.code == 0, result.err
    assert sim.faults.rules == [], "a fault never fired"
    assert_exactly_once(db_path, sim, STREAMS)
    assert not result.errors


def test_429_retry_after_pauses_every_request_then_retries(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    sim.faults.add(Fault.rate_limited(retry_after=1, stream="itemusages", times=1))

    assert cli(["run", "--once", *sim_args]).code == 0

    assert (FaultKind.STATUS, "/api/v2/itemusages") in sim.faults.fired
    log = sim.request_log
    t0 = next(r.at_ns for r in log if r.status == 429)
    later = [r.at_ns - t0 for r in log if r.at_ns > t0]
    # Requests already on the wire arrive at once; then nothing is sent until Retry-After is over,
    # and the refused request is sent again after it.
    assert not [t for t in later if 0.4e9 < t < 0.9e9], "requests were sent during Retry-After"
    assert max(later) >= 0.95e9, "nothing was retried after Retry-After"
    assert_exactly_once(db_path, sim, STREAMS)


def test_a_second_account_on_the_same_store_never_gets_the_first_accounts_cursor(
    sim: SimulatorServer, sim_args: list[str], tmp_path: Path, db_path: Path, cli: Cli
) -> None:
    assert cli(["run", "--once", *sim_args]).code == 0
    other = tmp_path / "other-token"
    other.write_text(sim.issue_token(account="OTHERACCOUNT2345672345672A"))
    other.chmod(0o600)
    sim.clear_request_log()

    result = cli(["run", "--once", "--base-url", sim.base_url, "--token-file", other, "--db", db_path])

    assert result.code == 0, result.err
    assert not result.warnings("rejected")
    pages = [r for r in sim.request_log if r.method == "POST"]
    assert pages
    assert all(r.status == 200 for r in pages)
    assert not any(r.cursor for r in pages[:3])  # each stream starts afresh for the new account
    accounts = {r[0] for r in store_rows(db_path, "SELECT account FROM opsentinel_checkpoints")}
    assert accounts == {sim.account_uuid, "OTHERACCOUNT2345672345672A"}
