"""The API token never appears in what op-sentinel prints or writes: stdout, stderr, logs (at debug
level too), the DuckDB file, the state directory and the JSONL output, on success and on failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.e2e.e2ehelp import STREAMS, CliResult, assert_exactly_once, write_token

from opsentinel.simulator import Fault, SimulatorConfig, SimulatorServer
from opsentinel.streams import INTROSPECT_V2_PATH

Cli = Callable[..., CliResult]


def _secrets(token: str) -> list[bytes]:
    """The token, and its signature (the part that makes it a credential)."""
    return [token.encode(), token.rsplit(".", 1)[-1].encode()]


def _files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in root.rglob("*") if p.is_file())


def _assert_nowhere(token: str, outputs: list[CliResult], roots: list[Path], skip: set[Path]) -> int:
    """Asserts the token is in no output and no file under `roots` (but `skip`); files scanned."""
    secrets = _secrets(token)
    for result in outputs:
        for secret in secrets:
            assert secret.decode() not in result.all, f"the token leaked into output:\n{result.all}"
    scanned = 0
    for path in _files(*roots):
        if path in skip:
            continue
        data = path.read_bytes()
        scanned += 1
        for secret in secrets:
            assert secret not in data, f"the token leaked into {path}"
    return scanned


def test_the_token_is_never_printed_or_written(
    sim: SimulatorServer, token_file: Path, tmp_path: Path, workdir: Path, cli: Cli
) -> None:
    db = tmp_path / "store" / "events.duckdb"
    base = ["--base-url", sim.base_url, "--token-file", token_file, "--log-level", "debug"]
    outputs: list[CliResult] = []

    def run(args: list[str], env: dict[str, str] | None = None) -> CliResult:
        result = cli(args, env=env)
        outputs.append(result)
        return result

    assert run(["check", *base, "--db", db]).code == 0
    sim.faults.page_cap = 9
    sim.faults.add(Fault.truncate(stream="auditevents", times=1))
    sim.faults.add(Fault.error(503, stream="itemusages", times=2))
    sim.faults.add(Fault.rate_limited(retry_after=None, stream="signinattempts", times=1))
    assert run(["run", "--once", *base, "--db", db]).code == 0
    for stream in STREAMS:
        sim.add_events(stream, 2)
    sim.faults.invalidate_cursors()
    assert run(["run", "--once", *base, "--db", db, "--lookback", "1d"]).code == 0
    assert_exactly_once(db, sim, STREAMS)

    sim.faults.add(Fault.error(500, stream="itemusages", times=None))
    assert run(["run", "--once", *base, "--db", db]).code == 1
    sim.faults.clear()

    state = tmp_path / "state"
    jsonl = tmp_path / "out.jsonl"
    sink = ["--sink", "jsonl", "--jsonl-path", jsonl, "--state", state]
    assert run(["run", "--once", *base, *sink]).code == 0
    assert jsonl.stat().st_size > 0
    assert run(["status", "--sink", "jsonl", "--state", state, "--format", "json"]).code == 0
    assert run(["status", "--db", db]).code == 0
    assert run(["query", "--db", db, "--format", "json", "SELECT * FROM OnePasswordEventLogs_CL"]).code == 0

    # Failures, with the token from the environment this time.
    env = {"OP_SENTINEL_TOKEN": sim.token}
    assert run(["check", "--base-url", sim.base_url + "/"], env=env).code == 2
    assert run(["run", "--once", "--base-url", sim.base_url, "--streams", "nope"], env=env).code == 2
    assert run(["check", "--base-url", "https://events.example.com"], env=env).code == 2
    sim.faults.add(Fault.truncate(path=INTROSPECT_V2_PATH, times=None))
    assert run(["check", "--base-url", sim.base_url, "--log-level", "debug"], env=env).code != 0
    sim.faults.clear()

    scanned = _assert_nowhere(sim.token, outputs, [tmp_path], skip={token_file})
    assert scanned >= 4  # the DuckDB file, the JSONL output, checkpoint and status files


def test_a_rejected_token_is_not_echoed(sim: SimulatorServer, tmp_path: Path, cli: Cli) -> None:
    foreign = SimulatorServer(SimulatorConfig(events=1, seed=999)).issue_token()
    token = write_token(tmp_path / "foreign", foreign)

    result = cli(["check", "--base-url", sim.base_url, "--token-file", token, "--log-level", "debug"])

    assert result.code == 2
    _assert_nowhere(foreign, [result], [tmp_path], skip={token})


@pytest.mark.parametrize("value", ["not-a-jwt-but-a-secret-0123456789", "eyJhbGciOi.broken.token-secret-xyz"])
def test_a_token_that_is_not_a_jwt_is_not_echoed(tmp_path: Path, cli: Cli, value: str) -> None:
    # Without --base-url the base URL would come from the token's claims, which it does not have.
    result = cli(["check", "--log-level", "debug"], env={"OP_SENTINEL_TOKEN": value})

    assert result.code == 2
    assert len(result.errors) == 1
    assert "--base-url" in result.errors[0]
    assert value not in result.all
    assert value.rsplit(".", 1)[-1] not in result.all


def test_an_unresolved_key_vault_reference_is_never_sent_as_a_token(sim: SimulatorServer, cli: Cli) -> None:
    """In Azure an app setting whose Key Vault secret cannot be read keeps the reference text: a
    container or Functions app started that way stops with one line and sends nothing."""
    reference = "@Microsoft.KeyVault(SecretUri=https://opsent-kv.vault.azure.net/secrets/op-sentinel-token)"
    sim.clear_request_log()
    result = cli(["run", "--once", "--base-url", sim.base_url], env={"OP_SENTINEL_TOKEN": reference})
    assert result.code == 2, result.all
    (line,) = result.errors
    assert (
        "Key Vault reference" in line and "Key Vault Secrets User" in line and "Traceback" not in result.all
    )
    assert sim.request_log == []
