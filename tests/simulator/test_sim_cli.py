"""The `simulate` command: its help, its refusals, and a real run stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from opsentinel.errors import ConfigError
from opsentinel.simulator.cli import parse_latency, simulate_command

KNOBS = [
    "--host", "--port", "--seed", "--events", "--days", "--trickle", "--latency", "--rate-limit-per-minute",
    "--rate-limit-per-hour", "--no-retry-after", "--audience", "--features", "--token-file", "--allow-remote",
    "--error-style", "--missing-body", "--page-cap", "--error-rate", "--verbose",
]  # fmt: skip


def throwaway_app() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("other")(lambda: None)  # two commands, so "simulate" is a subcommand as in op-sentinel
    return app


def test_help_documents_every_knob() -> None:
    result = CliRunner().invoke(
        throwaway_app(),
        ["simulate", "--help"],
        env={"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"},
    )
    assert result.exit_code == 0
    for knob in KNOBS:
        assert knob in result.output, knob
    assert "loopback" in result.output
    assert "0600" in result.output


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com"])
def test_non_loopback_host_is_refused(host: str) -> None:
    result = CliRunner().invoke(throwaway_app(), ["simulate", "--host", host, "--port", "0"])
    assert isinstance(result.exception, ConfigError)
    assert "--allow-remote" in str(result.exception)


def test_unknown_feature_is_refused() -> None:
    result = CliRunner().invoke(throwaway_app(), ["simulate", "--features", "auditevents,events"])
    assert isinstance(result.exception, ConfigError)
    assert "events" in str(result.exception)


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("0.5s", 0.5), ("2", 2.0), ("0", 0.0)])
def test_latency_accepts_units(text: str, seconds: float) -> None:
    assert parse_latency(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["fast", "-1s", "10m"])
def test_bad_latency_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_latency(text)


def test_simulate_serves_until_sigterm_and_exits_0(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    process = subprocess.Popen(
        [sys.executable, "-m", "opsentinel.simulator", "--port", "0", "--events", "50", "--trickle", "0",
         "--token-file", str(token_file), "--audience", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("stop with"):
                break
        output = "\n".join(lines)
        base_url = next(x.split(": ", 1)[1] for x in lines if x.startswith("base URL: "))
        printed = next(x.split(": ", 1)[1] for x in lines if x.startswith("token: "))
        assert base_url.startswith("http://127.0.0.1:")
        assert "op-sentinel" in output  # an example command
        token = token_file.read_text().strip()
        assert token == printed
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        response = httpx.get(
            f"{base_url}/api/v2/auth/introspect", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
