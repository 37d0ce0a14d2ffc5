"""The API token never appears in anything op-sentinel prints, logs or writes, nor in its exception
texts or object reprs: every command runs with a known token at `--log-level debug`, on success and
on every failing path we can provoke (a server that echoes the token back in error bodies, headers
and redirects, faults, a rejected cursor, Azure refusing records), and then everything is scanned:
captured stdout/stderr, every file under the test's directories (DuckDB store and its table
contents, state directory, dead-letter file, JSONL output), a `run` stopped by SIGTERM, and the
repr and text of the objects and errors involved. Azure's access tokens (from the managed identity
fake) must not appear either."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from tests.fakes.azure_identity import FakeManagedIdentity
from tests.fakes.azure_ingestion import FakeLogsIngestion
from tests.reliability.relhelp import COMMAND, Outcome, clean_env, cli_in_process, write_token
from tests.security.sechelp import Answer, LocalServer, Seen, duckdb_text, files_under

from opsentinel.config import Settings, load_settings
from opsentinel.connector import Connector
from opsentinel.errors import OpSentinelError
from opsentinel.simulator import Fault, SimulatorConfig, SimulatorServer
from opsentinel.source.retry import RetryPolicy
from opsentinel.source.token import ApiToken

# Three tries: two faults may hit the same request (a reset, then a truncated body), as the first
# request of a first run is a single probe of the history.
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, max_retry_after=0.05)


def _secrets(token: str) -> list[str]:
    """The token and its signature, the part that makes it a credential."""
    return [token, token.rsplit(".", 1)[-1]]


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        events=60, days=3, seed=13, page_cap=15, rate_limit_per_minute=0, rate_limit_per_hour=0
    )
    with SimulatorServer(config) as server:
        yield server


def _echo(token_holder: list[str]) -> Callable[[Seen], Answer]:
    """A hostile Events API: it quotes the request's Authorization header back everywhere it can."""

    def answer(seen: Seen) -> Answer:
        auth = seen.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        token_holder.append(token)
        if seen.path == "/api/v2/auth/introspect" and "introspect-ok" in seen.headers.get("user-agent", "x"):
            return Answer(200, b"{}")
        if seen.method == "GET":
            body = orjson.dumps({"status": 401, "message": f"invalid token {auth} ({token})"})
            return Answer(401, body, (("WWW-Authenticate", f'Bearer error="{token}"'),))
        return Answer(500, f"<html>{auth}</html>".encode())

    return answer


def _echo_events(seen: Seen) -> Answer:
    """Introspect works; every event request fails, quoting the token in each way it can."""
    auth = seen.headers.get("authorization", "")
    token = auth.removeprefix("Bearer ")
    if seen.method == "GET":
        body = {
            "uuid": "INTEGRATION",
            "issued_at": "2026-01-01T00:00:00Z",
            "features": ["auditevents", "signinattempts", "itemusages"],
            "account_uuid": "ACCT",
        }
        return Answer(200, orjson.dumps(body))
    if b"auditevents" in seen.path.encode():
        return Answer(400, orjson.dumps({"Error": {"Message": f"Bad Request: {auth}"}}))
    if b"signinattempts" in seen.path.encode():
        return Answer(429, f"slow down {token}".encode(), (("Retry-After", "0"), ("X-Debug", token)))
    return Answer(307, b"", (("Location", f"http://127.0.0.2:9/steal?token={token}"),))


class Scanner:
    """Collects everything op-sentinel showed, and checks none of it holds a secret."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def outcome(self, where: str, result: Outcome) -> Outcome:
        self.add(where, result.out + result.err)
        return result

    def check(self) -> None:
        for where, text in self.texts:
            for secret in self.secrets:
                assert secret not in text, f"a secret leaked into {where}:\n{text[:2000]}"


def test_every_command_and_failure_keeps_the_token_secret(
    sim: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(__import__("os").environ):
        if name.startswith(("OP_SENTINEL_", "AZURE_", "IDENTITY_", "MSI_")):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    token_file = write_token(tmp_path / "op-token", sim.token)
    scan = Scanner(_secrets(sim.token))
    db = work / "store" / "events.duckdb"
    state = work / "state"
    debug = ["--log-level", "debug"]
    api = ["--base-url", sim.base_url, "--token-file", token_file, *debug]

    def cli(where: str, args: list[Any], env: dict[str, str] | None = None) -> Outcome:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            return scan.outcome(where, cli_in_process(args, capsys))

    from opsentinel import connector

    monkeypatch.setattr(connector, "RETRY_POLICY", FAST)
    monkeypatch.setattr(connector, "STARTUP_RETRY_POLICY", FAST)

    # Success paths, with faults the client retries through.
    assert cli("check", ["check", *api, "--db", db]).code == 0
    for fault in (
        Fault.truncate(stream="auditevents"),
        Fault.error(503, stream="itemusages"),
        Fault.rate_limited(retry_after=None, stream="signinattempts"),
        Fault.reset(stream="auditevents"),
    ):
        sim.faults.add(fault)  # fmt: skip
    assert cli("run --once duckdb", ["run", "--once", *api, "--db", db, "--lookback", "4d"]).code == 0
    sim.faults.invalidate_cursors()
    for stream in ("auditevents", "signinattempts", "itemusages"):
        sim.add_events(stream, 3)
    env_token = {"OP_SENTINEL_TOKEN": sim.token}
    no_file = ["--base-url", sim.base_url, *debug]
    assert cli("run after a key rotation", ["run", "--once", *no_file, "--db", db], env=env_token).code == 0
    jsonl = ["--sink", "jsonl", "--state", state]
    assert cli("jsonl", ["run", "--once", *api, *jsonl, "--jsonl-path", work / "out.jsonl"]).code == 0
    assert (
        cli("jsonl stdout", ["run", "--once", *no_file, *jsonl, "--jsonl-path", "-"], env=env_token).code == 0
    )
    for fmt in ("table", "json"):
        assert cli("status", ["status", "--db", db, "--format", fmt, *debug]).code == 0
        assert cli("status state", ["status", "--sink", "jsonl", "--state", state, "--format", fmt]).code == 0
    for fmt in ("table", "json", "jsonl", "csv"):
        sql = "SELECT * FROM OnePasswordEventLogs_CL UNION ALL BY NAME SELECT * FROM opsentinel_checkpoints"
        assert cli("query", ["query", "--db", db, "--format", fmt, *debug, sql]).code == 0
    assert cli("template", ["azure", "template"]).code == 0
    assert cli("help", ["--help"]).code == 0
    assert cli("run help", ["run", "--help"]).code == 0

    # The Sentinel sink: a token from the managed identity, a record Azure refuses, throttling.
    with FakeManagedIdentity() as mi, FakeLogsIngestion(token_ok=mi.token_ok) as fake:
        for name, value in {**mi.env(), "REQUESTS_CA_BUNDLE": fake.ca_path}.items():
            monkeypatch.setenv(name, value)
        refused = next(iter(sim.events("itemusages")))["uuid"]
        fake.reject_when(lambda record: record.get("uuid") == refused)
        fake.fail_next(429, 1, retry_after="0")
        fake.fail_next(500, 1)
        azure = [
            "--sink",
            "sentinel",
            "--dce",
            fake.endpoint,
            "--dcr-id",
            fake.dcr_id,
            "--state",
            work / "azure",
        ]
        assert cli("check sentinel", ["check", *api, *azure]).code == 0
        assert cli("run sentinel", ["run", "--once", *api, *azure, "--lookback", "4d"]).code == 0
        assert (work / "azure" / "dead-letter.jsonl").exists()
        fake.token_ok = lambda token: False  # Azure refuses every access token: 401
        sim.add_events("auditevents", 2)
        assert cli("sentinel 401", ["run", "--once", *api, *azure]).code != 0
        fake.deny_role()
        assert cli("check sentinel 403", ["check", *api, *azure]).code != 0
        scan.secrets += [*mi.issued, mi.secret]
        for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE"):
            monkeypatch.delenv(name)

    # Failing paths: a server that quotes the token back, at start-up and for every stream.
    seen_tokens: list[str] = []
    with LocalServer(_echo(seen_tokens)) as echo:
        assert (
            cli("echo 401", ["check", "--base-url", echo.url, "--token-file", token_file, *debug]).code == 2
        )
    with LocalServer(_echo_events) as echo:
        echo_args = ["--base-url", echo.url, "--token-file", token_file, *debug, "--db", work / "echo.duckdb"]
        assert cli("echo events", ["run", "--once", *echo_args]).code == 1
    assert seen_tokens and all(t == sim.token for t in seen_tokens), "the echo server never saw the token"
    foreign = SimulatorServer(SimulatorConfig(events=1, seed=99)).issue_token()
    scan.secrets += _secrets(foreign)
    assert (
        cli(
            "rejected token",
            ["check", "--base-url", sim.base_url, *debug],
            env={"OP_SENTINEL_TOKEN": foreign},
        ).code
        == 2
    )
    assert (
        cli(
            "unreachable", ["check", "--base-url", "http://127.0.0.1:9", "--token-file", token_file, *debug]
        ).code
        == 2
    )
    assert cli("bad url", ["check", "--base-url", sim.base_url + "/", "--token-file", token_file]).code == 2
    assert cli("no stream", ["run", "--once", *api, "--streams", "nope"]).code == 2
    sim.faults.add(Fault.error(500, stream="itemusages", times=None))
    assert cli("5xx", ["run", "--once", *api, "--db", db]).code == 1
    sim.faults.clear()
    sim.faults.add(Fault.truncate(path="/api/v2/auth/introspect", times=None))
    assert cli("bad introspect", ["check", *api]).code != 0
    sim.faults.clear()

    # `run` as a real process, stopped by SIGTERM.
    proc = subprocess.Popen(
        [*COMMAND, "run", *api, "--db", work / "run.duckdb", "--poll-interval", "1s", "--lookback", "4d"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=work,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (work / "run.duckdb").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    scan.add("run (SIGTERM)", out + err)

    # Objects and errors, as a program embedding op-sentinel would see them.
    settings = load_settings({"base_url": sim.base_url, "token_file": token_file, "db": work / "obj.duckdb"})
    env_settings = Settings(base_url=sim.base_url, token=SecretStr(sim.token), lookback=timedelta(days=1))
    for obj in (settings, env_settings, ApiToken(sim.token), settings.api_token()):
        scan.add(f"repr {type(obj).__name__}", f"{obj!r} {obj!s} {obj}")
    scan.add("settings json", env_settings.model_dump_json() + repr(env_settings.model_dump()))

    async def objects() -> None:
        started = await Connector.start(settings)
        try:
            for obj in (
                started,
                started.client,
                started.pipeline,
                started.destination,
                started.pipeline.telemetry,
            ):
                scan.add(f"repr {type(obj).__name__}", repr(obj))
        finally:
            await started.close()
        with LocalServer(_echo(seen_tokens)) as echo:
            hostile = load_settings({"base_url": echo.url, "token_file": token_file})
            with pytest.raises(OpSentinelError) as info:
                await Connector.start(hostile)
        scan.add("exception", "".join(traceback.format_exception(info.value)) + repr(info.value))

    asyncio.run(objects())

    # Every file written, byte for byte, and the DuckDB tables value by value.
    skip = {token_file}
    scanned = 0
    for path in files_under(tmp_path):
        if path in skip:
            continue
        scanned += 1
        scan.add(str(path), path.read_bytes().decode("utf-8", "replace"))
        if path.suffix == ".duckdb":
            scan.add(f"{path} tables", duckdb_text(path))
    assert scanned >= 10
    scan.check()
