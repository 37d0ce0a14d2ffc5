"""The `op-sentinel` shell: help, usage errors, exit codes and one-line errors, logging, progress."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsentinel import __version__, commands, statusview
from opsentinel.cli import main
from opsentinel.config import Settings
from opsentinel.errors import FatalError, StoreError


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger("opsentinel")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("OP_SENTINEL_")]:
        monkeypatch.delenv(name)


def _one_error(result: Result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert "Traceback" not in result.err + result.out
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_no_arguments_prints_help_and_succeeds() -> None:
    result = run()
    assert result.code == 0
    for command in ("check", "run", "status", "query", "simulate", "demo", "azure"):
        assert command in result.out


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.code == 0
    assert "run" in result.out


def test_run_help_names_every_documented_flag() -> None:
    result = run("run", "--help")
    assert result.code == 0
    for flag in (
        "--once", "--config", "--base-url", "--token-file", "--streams", "--since", "--lookback", "--sink",
        "--db", "--jsonl-path", "--dce", "--dcr-id", "--stream", "--state", "--poll-interval",
        "--health-interval", "--allow-custom-host", "--log-level", "--no-progress",
    ):  # fmt: skip
        assert flag in result.out, flag


def test_version() -> None:
    result = run("version")
    assert (result.code, result.out.strip()) == (0, __version__)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["launch"], "launch"),
        (["run", "--bogus"], "--bogus"),
        (["query"], "'sql'"),
        (["status", "--format", "xml"], "xml"),
        (["query", "--format", "yaml", "SELECT 1"], "yaml"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = run(*args)
    assert result.code == 2
    assert says in _one_error(result)


def test_a_usage_error_points_at_the_commands_help() -> None:
    assert "op-sentinel run --help" in _one_error(run("run", "--bogus"))


def test_an_unexpected_failure_is_one_line_without_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(settings: Settings, output_format: str) -> None:
        raise RuntimeError("internal detail that may hold anything")

    monkeypatch.setattr(statusview, "print_status", broken)
    result = run("status")
    assert result.code == 1
    line = _one_error(result)
    assert "internal error (RuntimeError)" in line
    assert "--log-level debug" in line
    assert "internal detail" not in result.err


def test_an_unexpected_failure_shows_its_traceback_at_debug_level(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(settings: Settings, output_format: str) -> None:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(statusview, "print_status", broken)
    result = run("status", "--log-level", "debug")
    assert result.code == 1
    assert "Traceback" in result.err


@pytest.mark.parametrize(
    ("error", "code"), [(StoreError("the store is busy"), 2), (FatalError("gave up"), 1)]
)
def test_errors_map_to_exit_codes(monkeypatch: pytest.MonkeyPatch, error: Exception, code: int) -> None:
    def failing(settings: Settings, output_format: str) -> None:
        raise error

    monkeypatch.setattr(statusview, "print_status", failing)
    result = run("status")
    assert result.code == code
    assert _one_error(result) == f"error: {error}"


def test_ctrl_c_outside_run_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(settings: Settings, output_format: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(statusview, "print_status", interrupted)
    assert run("status").code == 130


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the run flow: record how the shell called it; log one line per level; return 0."""
    calls: list[dict[str, Any]] = []

    def run_connector(settings: Settings, *, once: bool, progress: bool) -> int:
        calls.append({"settings": settings, "once": once, "progress": progress})
        log = logging.getLogger("opsentinel")
        log.debug("a debug line")
        log.info("an info line")
        log.warning("a warning line")
        return calls[0].get("code", 0)

    monkeypatch.setattr(commands, "run_connector", run_connector)
    return calls


def test_run_passes_settings_and_flags_through(fake_run: list[dict[str, Any]]) -> None:
    result = run("run", "--once", "--db", "x.duckdb", "--poll-interval", "3s", "--streams", "itemusages")
    assert result.code == 0
    [call] = fake_run
    assert call["once"] is True
    assert call["progress"] is False  # stderr is not a terminal
    settings = call["settings"]
    assert settings.db == Path("x.duckdb")
    assert settings.poll_interval.total_seconds() == 3
    assert settings.streams == ("itemusages",)


def test_progress_can_be_forced_on_or_off(fake_run: list[dict[str, Any]]) -> None:
    run("run", "--once", "--progress")
    run("run", "--once", "--no-progress")
    assert [c["progress"] for c in fake_run] == [True, False]


def test_logs_go_to_stderr_at_the_chosen_level(fake_run: list[dict[str, Any]]) -> None:
    default = run("run", "--once")
    assert "INFO an info line" in default.err
    assert "a debug line" not in default.err
    assert default.out == ""

    quiet = run("run", "--once", "--log-level", "warning")
    assert "an info line" not in quiet.err
    assert "WARNING a warning line" in quiet.err

    loud = run("run", "--once", "--log-level", "debug")
    assert "DEBUG a debug line" in loud.err


def test_the_run_exit_status_is_the_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "run_connector", lambda settings, *, once, progress: 1)
    assert run("run", "--once").code == 1


def test_help_into_a_closed_pipe_is_quiet() -> None:
    # `op-sentinel | head -1`: the reader goes away; no traceback, no error.
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsentinel.cli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"Traceback" not in err
    assert err == b""


def test_help_names_the_program_as_users_type_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "opsentinel.cli", "run", "--bogus"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: No such option: --bogus (see: op-sentinel run --help)"
