"""`check`, `status`, `query`, `demo` and the health rows, as a user reads them."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from tests.e2e.e2ehelp import (
    REFERENCE,
    SIM_EVENTS,
    SIM_SEED,
    STREAMS,
    TABLE,
    CliResult,
    assert_exactly_once,
    assert_one_error_line,
    run_in_process,
    store_rows,
    write_token,
)

from opsentinel.simulator import Fault, SimulatorConfig, SimulatorServer
from opsentinel.timefmt import parse_rfc3339

Cli = Callable[..., CliResult]

HEALTH_DETAILS = {
    "stream",
    "last_success",
    "last_error",
    "last_error_at",
    "lag_seconds",
    "newest_event",
    "events_delivered",
    "events_duplicate",
    "events_dead_lettered",
    "events_rejected",
    "backfilling",
    "connector",
    "replica",
}
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def _newest(sim: SimulatorServer, stream: str) -> datetime:
    return max(parse_rfc3339(e["timestamp"]) for e in sim.events(stream))


@dataclass(frozen=True)
class Filled:
    sim: SimulatorServer
    db: Path


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    """A store after one successful `run --once`, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("filled")
    with SimulatorServer(SimulatorConfig(events=SIM_EVENTS, seed=SIM_SEED)) as sim:
        token = write_token(root / "op-token", sim.token)
        db = root / "events.duckdb"
        with pytest.MonkeyPatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("OP_SENTINEL_")]:
                patch.delenv(name)
            result = run_in_process(
                ["run", "--once", "--base-url", sim.base_url, "--token-file", token, "--db", db]
            )
        assert result.code == 0, result.err
        yield Filled(sim, db)


# --- the table ----------------------------------------------------------------------------------

DUCKDB_TYPE = {"string": "VARCHAR", "datetime": "TIMESTAMP WITH TIME ZONE", "dynamic": "JSON"}


def test_the_table_has_the_33_official_columns_in_order_with_their_types(
    filled: Filled,
) -> None:
    official = json.loads((REFERENCE / "1Password_tables.json").read_text())["properties"]["schema"][
        "columns"
    ]
    stored = store_rows(
        filled.db,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        [TABLE],
    )
    assert len(stored) == 33
    assert [name for name, _ in stored] == [c["name"] for c in official]
    for (name, data_type), column in zip(stored, official, strict=True):
        if column["type"] == "int":
            assert data_type in ("INTEGER", "BIGINT"), name
        else:
            assert data_type == DUCKDB_TYPE[column["type"]], name


# --- check ----------------------------------------------------------------------------------------


def test_check_prints_account_features_region_and_streams(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    result = cli(["check", *sim_args])

    assert result.code == 0, result.err
    fields = dict(line.split(":", 1) for line in result.out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["account"] == sim.account_uuid
    assert set(fields["features"].split(", ")) == set(STREAMS)
    assert fields["streams"] == ", ".join(STREAMS)
    assert fields["region"]
    assert fields["base URL"] == sim.base_url
    assert str(db_path) in fields["sink"]
    assert not any(r.method == "POST" for r in sim.request_log)  # check reads no events


# --- status ---------------------------------------------------------------------------------------


def test_status_json_shows_every_stream_with_rows_newest_event_and_no_error(filled: Filled, cli: Cli) -> None:
    result = cli(["status", "--format", "json", "--db", filled.db])

    assert result.code == 0, result.err
    views = json.loads(result.out)
    assert sorted(v["stream"] for v in views) == sorted(STREAMS)
    for view in views:
        stream = view["stream"]
        assert view["account"] == filled.sim.account_uuid
        assert view["rows"] == filled.sim.event_count(stream)
        assert parse_rfc3339(view["newest_event"]) == _newest(filled.sim, stream)
        assert RFC3339_Z.match(view["checkpoint_at"])
        assert isinstance(view["checkpoint_age_seconds"], int)
        assert view["last_error"] is None
        assert view["last_success"] is not None
        assert view["lag_seconds"] is not None


def test_status_table_lists_each_stream_and_its_rows(filled: Filled, cli: Cli) -> None:
    result = cli(["status", "--db", filled.db])

    assert result.code == 0, result.err
    for header in ("stream", "checkpoint", "newest event", "rows", "last success", "last error"):
        assert header in result.out
    for stream in STREAMS:
        [row] = [line for line in result.out.splitlines() if f" {stream} " in line]
        assert f" {filled.sim.event_count(stream)} " in row
    assert filled.sim.account_uuid in result.out


def test_status_without_a_store_is_one_line_and_creates_nothing(tmp_path: Path, cli: Cli) -> None:
    missing = tmp_path / "nothing.duckdb"
    for fmt in ("table", "json"):
        result = cli(["status", "--db", missing, "--format", fmt])
        assert "nothing.duckdb" in assert_one_error_line(result, code=2)
    assert not missing.exists()


# --- query ----------------------------------------------------------------------------------------

SIGNINS = (
    f'SELECT uuid_s, "timestamp", TimeGenerated, target_user, client, details, log_source FROM {TABLE} '
    "WHERE log_source = 'signinattempts' ORDER BY \"timestamp\", uuid_s"
)


def _by_uuid(sim: SimulatorServer, stream: str) -> dict[str, dict[str, object]]:
    return {str(e["uuid"]): e for e in sim.events(stream)}


def test_query_json_is_one_array_with_nested_dynamic_columns_and_rfc3339_times(
    filled: Filled, cli: Cli
) -> None:
    result = cli(["query", "--db", filled.db, "--format", "json", SIGNINS])

    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert isinstance(rows, list)
    events = _by_uuid(filled.sim, "signinattempts")
    assert len(rows) == len(events)
    for row in rows:
        event = events[row["uuid_s"]]
        assert row["target_user"] == event["target_user"]  # nested JSON, not a string
        assert row["client"] == event["client"]
        assert row["details"] == event.get("details")
        assert RFC3339_Z.match(row["timestamp"]), row["timestamp"]
        assert RFC3339_Z.match(row["TimeGenerated"])
        assert parse_rfc3339(row["timestamp"]) == parse_rfc3339(str(event["timestamp"]))
        assert row["log_source"] == "signinattempts"


def test_query_jsonl_is_one_object_a_line(filled: Filled, cli: Cli) -> None:
    result = cli(["query", "--db", filled.db, "--format", "jsonl", SIGNINS])

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == filled.sim.event_count("signinattempts")
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) and isinstance(o["target_user"], dict) for o in objects)
    assert [o["uuid_s"] for o in objects] == [o["uuid_s"] for o in json.loads(_json(cli, filled.db))]


def _json(cli: Cli, db: Path) -> str:
    return cli(["query", "--db", db, "--format", "json", SIGNINS]).out


def test_query_csv_has_a_header_and_one_line_a_row(filled: Filled, cli: Cli) -> None:
    result = cli(["query", "--db", filled.db, "--format", "csv", SIGNINS])

    assert result.code == 0, result.err
    rows = list(csv.reader(io.StringIO(result.out)))
    assert rows[0] == [
        "uuid_s",
        "timestamp",
        "TimeGenerated",
        "target_user",
        "client",
        "details",
        "log_source",
    ]
    assert len(rows) == 1 + filled.sim.event_count("signinattempts")
    events = _by_uuid(filled.sim, "signinattempts")
    for row in rows[1:]:
        assert json.loads(row[3]) == events[row[0]]["target_user"]
        assert RFC3339_Z.match(row[1])


def test_query_table_shows_the_columns_and_values(filled: Filled, cli: Cli) -> None:
    result = cli(
        ["query", "--db", filled.db, f"SELECT log_source, count(*) AS n FROM {TABLE} GROUP BY 1 ORDER BY 1"]
    )

    assert result.code == 0, result.err
    assert "log_source" in result.out
    for stream in STREAMS:
        assert stream in result.out


def test_query_with_bad_sql_is_one_line(filled: Filled, cli: Cli) -> None:
    result = cli(["query", "--db", filled.db, "SELEC nonsense FROM nowhere"])
    assert "query failed" in assert_one_error_line(result, code=2)


def test_query_with_an_unknown_format_is_one_line(filled: Filled, cli: Cli) -> None:
    result = cli(["query", "--db", filled.db, "--format", "xml", "SELECT 1"])
    assert "xml" in assert_one_error_line(result, code=2)


def test_query_without_a_store_fails_and_does_not_create_one(tmp_path: Path, workdir: Path, cli: Cli) -> None:
    missing = tmp_path / "nothing.duckdb"
    result = cli(["query", "--db", missing, "SELECT 1"])
    assert "nothing.duckdb" in assert_one_error_line(result, code=2)
    assert not missing.exists()

    default = cli(["query", "SELECT 1"])  # the default store, op-sentinel.duckdb, is not there either
    assert_one_error_line(default, code=2)
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    "sql",
    [
        f"DELETE FROM {TABLE}",
        f"DROP TABLE {TABLE}",
        f"UPDATE {TABLE} SET log_source = 'x'",
        f"INSERT INTO {TABLE} (uuid_s) VALUES ('x')",
        "CREATE TABLE t AS SELECT 1",
        "DELETE FROM opsentinel_checkpoints",
        "COPY (SELECT 1) TO '{out}'",
        "ATTACH '{out}.db' AS other",
        "SET lock_configuration = false",
        "SET enable_external_access = true",
        "EXPORT DATABASE '{out}'",
        "SELECT * FROM read_text('/etc/hostname')",
    ],
)
def test_query_cannot_modify_the_store_or_write_files(
    filled: Filled, tmp_path: Path, cli: Cli, sql: str
) -> None:
    out = tmp_path / "exported.csv"
    before = store_rows(filled.db, f"SELECT count(*) FROM {TABLE}")

    result = cli(["query", "--db", filled.db, sql.format(out=out)])

    assert_one_error_line(result, code=2)
    assert store_rows(filled.db, f"SELECT count(*) FROM {TABLE}") == before
    assert len(store_rows(filled.db, "SELECT * FROM opsentinel_checkpoints")) == 3
    assert not out.exists()
    assert not Path(f"{out}.db").exists()


# --- health rows ----------------------------------------------------------------------------------


def test_run_once_writes_one_health_row_per_stream(filled: Filled) -> None:
    rows = store_rows(
        filled.db,
        f'SELECT action_type, category, uuid_s, account_uuid, TimeGenerated, "timestamp", '
        f"CAST(details AS VARCHAR) FROM {TABLE} WHERE log_source = 'healthevents'",
    )
    assert sorted(r[0] for r in rows) == sorted(STREAMS)
    for stream, category, uuid, account, generated, at, details_text in rows:
        assert category == "healthy"
        assert re.fullmatch(r"[A-Z2-7]{26}", str(uuid))
        assert account == filled.sim.account_uuid
        assert isinstance(generated, datetime)
        assert isinstance(at, datetime)
        details = json.loads(str(details_text))
        assert set(details) == HEALTH_DETAILS
        assert details["stream"] == stream
        assert details["last_error"] is None
        assert details["events_delivered"] == filled.sim.event_count(str(stream))
        assert details["events_rejected"] == 0
        assert parse_rfc3339(details["newest_event"]) == _newest(filled.sim, str(stream))
        assert str(details["connector"]).startswith("op-sentinel/")
        assert details["last_success"] is not None


def test_a_failing_stream_gets_a_failing_health_row_and_status_shows_its_error(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    sim.faults.add(Fault.error(500, stream="itemusages", times=None))

    result = cli(["run", "--once", *sim_args])

    assert result.code == 1
    assert "itemusages" in assert_one_error_line(result)
    assert "FAILED" in next(line for line in result.err_lines if line.startswith("itemusages "))
    assert_exactly_once(db_path, sim, ("auditevents", "signinattempts"))
    health = dict(
        store_rows(
            db_path,
            f"SELECT action_type, category FROM {TABLE} WHERE log_source = 'healthevents'",
        )
    )
    assert health == {"auditevents": "healthy", "signinattempts": "healthy", "itemusages": "failing"}
    [details] = store_rows(
        db_path,
        f"SELECT details->>'last_error' FROM {TABLE} "
        "WHERE log_source = 'healthevents' AND action_type = 'itemusages'",
    )
    assert "500" in str(details[0])

    views = {v["stream"]: v for v in json.loads(cli(["status", "--format", "json", "--db", db_path]).out)}
    assert "500" in views["itemusages"]["last_error"]
    assert views["itemusages"]["last_error_at"] is not None
    assert views["auditevents"]["last_error"] is None
    table = cli(["status", "--db", db_path]).out
    row = table[table.index(" itemusages ") : table.index(" signinattempts ")]  # a row may wrap
    assert "500" in row

    # The fault is over: the next run delivers the rest and the stream is healthy again.
    sim.faults.clear()
    again = cli(["run", "--once", *sim_args])
    assert again.code == 0, again.err
    assert_exactly_once(db_path, sim, STREAMS)
    [(latest,)] = store_rows(
        db_path,
        f"SELECT arg_max(category, TimeGenerated) FROM {TABLE} "
        "WHERE log_source = 'healthevents' AND action_type = 'itemusages'",
    )
    assert latest == "healthy"


# --- demo -----------------------------------------------------------------------------------------


def test_demo_fills_its_own_store_prints_a_summary_and_replaces_it_next_time(workdir: Path, cli: Cli) -> None:
    demo_db = workdir / "op-sentinel-demo.duckdb"
    demo_db.write_text("not a database: the demo replaces whatever is there")

    first = cli(["demo", "--events", "25"])

    assert first.code == 0, first.err
    for stream in STREAMS:
        assert re.search(rf"{stream}\s+\d+ rows", first.out), first.out
    assert "op-sentinel query" in first.out
    assert "op-sentinel-demo.duckdb" in first.out
    counts = dict(store_rows(demo_db, f"SELECT log_source, count(*) FROM {TABLE} GROUP BY 1"))
    assert all(25 <= counts[s] <= 30 for s in STREAMS), counts  # a few live events may trickle in

    second = cli(["demo", "--events", "25"])

    assert second.code == 0, second.err
    again = dict(store_rows(demo_db, f"SELECT log_source, count(*) FROM {TABLE} GROUP BY 1"))
    assert all(25 <= again[s] <= 30 for s in STREAMS), again  # replaced, not added to
    assert not (workdir / "op-sentinel.duckdb").exists()


@pytest.mark.parametrize("db", ["op-sentinel.duckdb", "./op-sentinel.duckdb", "{workdir}/op-sentinel.duckdb"])
def test_demo_refuses_the_default_store(workdir: Path, cli: Cli, db: str) -> None:
    store = workdir / "op-sentinel.duckdb"
    store.write_bytes(b"the user's real store")

    result = cli(["demo", "--db", db.format(workdir=workdir), "--events", "5"])

    assert "op-sentinel.duckdb" in assert_one_error_line(result, code=2)
    assert store.read_bytes() == b"the user's real store"
