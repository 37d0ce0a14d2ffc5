"""`op-sentinel query` is read-only: no SQL can change, drop or extend the store, switch the
protection off, or reach other files; the store (and a pending write-ahead log) stays byte for byte
as it was, and nothing new appears beside it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest
from tests.contract.storehelp import make_events
from tests.reliability.relhelp import cli_in_process

from opsentinel.schema import TABLE_NAME
from opsentinel.sinks.base import Batch
from opsentinel.sinks.duckdb import DuckDBStore
from opsentinel.state import Checkpoint
from opsentinel.timefmt import parse_rfc3339

ATTEMPTS = {
    "insert": f"INSERT INTO {TABLE_NAME} (uuid_s, log_source) VALUES ('forged', 'auditevents')",
    "update": f"UPDATE {TABLE_NAME} SET action = 'forged'",
    "delete": f"DELETE FROM {TABLE_NAME}",
    "drop": f"DROP TABLE {TABLE_NAME}",
    "truncate": f"TRUNCATE {TABLE_NAME}",
    "alter": f"ALTER TABLE {TABLE_NAME} ADD COLUMN forged INTEGER",
    "create table": "CREATE TABLE forged AS SELECT 1",
    "create view": "CREATE VIEW forged AS SELECT 1",
    "move the cursor": "UPDATE opsentinel_checkpoints SET cursor = 'forged'",
    "second statement": f"SELECT 1; DROP TABLE {TABLE_NAME}",
    "attach": "ATTACH '{dir}/other.duckdb' AS other",
    "attach the store read-write": "ATTACH '{db}' AS again (READ_WRITE)",
    "write through a second name": "ATTACH '{db}' AS again; INSERT INTO again."
    + TABLE_NAME
    + " (uuid_s) VALUES ('x')",
    "in-memory database": "ATTACH ':memory:' AS scratch; CREATE TABLE scratch.t AS SELECT 1",
    "detach": "DETACH DATABASE store",
    "copy to": "COPY (SELECT * FROM " + TABLE_NAME + ") TO '{dir}/stolen.csv'",
    "export": "EXPORT DATABASE '{dir}/export'",
    "read another file": "SELECT * FROM read_text('/etc/hostname')",
    "glob": "SELECT * FROM glob('{dir}/*')",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "unlock": "SET lock_configuration = false",
    "reset lock": "RESET lock_configuration",
    "external access": "SET enable_external_access = true",
    "temp directory": "SET temp_directory = '{dir}/spill'",
    "secret": "CREATE SECRET forged (TYPE s3, KEY_ID 'a', SECRET 'b')",
}
HARMLESS = {
    "checkpoint": "CHECKPOINT",
    "force checkpoint": "FORCE CHECKPOINT",
    "vacuum": "VACUUM",
    "temporary table": "CREATE TEMP TABLE scratch AS SELECT 1 AS x",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with rows and a checkpoint, plus rows still only in the write-ahead log (shared by
    the module's tests: each one checks it is left exactly as it was)."""
    path = tmp_path_factory.mktemp("query") / "store.duckdb"
    writer = DuckDBStore(path)
    writer.write(Batch("auditevents", make_events("auditevents", 30), parse_rfc3339("2026-01-01T00:00:00Z")),
                 Checkpoint("ACCT", "auditevents"))  # fmt: skip
    writer.close()
    con = duckdb.connect(str(path))
    con.execute("SET wal_autocheckpoint = '1GB'")
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute(f"INSERT INTO {TABLE_NAME} (uuid_s, log_source) VALUES ('in-the-wal', 'auditevents')")
    con.close()
    assert path.with_name(path.name + ".wal").exists()
    return path


def _snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("name", list(ATTEMPTS))
def test_query_cannot_change_the_store(name: str, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = ATTEMPTS[name].format(dir=store.parent, db=store)
    before = _snapshot(store.parent)
    result = cli_in_process(["query", "--db", store, sql], capsys)
    assert result.code == 2, result
    errors = result.errors
    assert len(errors) == 1 and "Traceback" not in result.err
    assert _snapshot(store.parent) == before


@pytest.mark.parametrize("name", list(HARMLESS))
def test_harmless_statements_leave_the_store_as_it_was(
    name: str, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(store.parent)
    result = cli_in_process(["query", "--db", store, HARMLESS[name]], capsys)
    assert result.code == 0, result.err
    assert _snapshot(store.parent) == before


def test_after_every_attempt_the_rows_are_all_there(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for sql in [*ATTEMPTS.values(), *HARMLESS.values()]:
        cli_in_process(["query", "--db", store, sql.format(dir=store.parent, db=store)], capsys)
    result = cli_in_process(
        [
            "query",
            "--db",
            store,
            "--format",
            "csv",
            f"SELECT count(*), count(DISTINCT uuid_s) FROM {TABLE_NAME}",
        ],
        capsys,
    )
    assert result.out.splitlines()[1] == "31,31"
