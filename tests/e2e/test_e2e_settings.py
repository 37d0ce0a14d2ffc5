"""Settings through the command line: flag > environment > TOML file > default, and every bad
setting is one `error:` line with exit status 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.e2e.e2ehelp import STREAMS, CliResult, assert_exactly_once, assert_one_error_line, write_token

from opsentinel.simulator import SimulatorConfig, SimulatorServer

Cli = Callable[..., CliResult]


def _line(out: str, label: str) -> str:
    [line] = [line for line in out.splitlines() if line.startswith(label)]
    return line.split(":", 1)[1].strip()


def test_flag_beats_environment_beats_file_beats_default(
    sim: SimulatorServer, token_file: Path, workdir: Path, cli: Cli
) -> None:
    default = cli(["check", "--base-url", sim.base_url, "--token-file", token_file])
    assert default.code == 0, default.err
    assert _line(default.out, "sink") == "duckdb op-sentinel.duckdb"
    assert _line(default.out, "streams") == ", ".join(STREAMS)

    (workdir / "op-sentinel.toml").write_text(
        f'base_url = "http://127.0.0.1:1"\n'  # nothing listens there: the environment must win
        f'token_file = "{token_file}"\n'
        f'db = "file.duckdb"\n'
        f'streams = ["auditevents"]\n'
    )
    from_file = cli(["check", "--base-url", sim.base_url])
    assert from_file.code == 0, from_file.err
    assert _line(from_file.out, "sink") == "duckdb file.duckdb"
    assert _line(from_file.out, "streams") == "auditevents"

    env = {
        "OP_SENTINEL_BASE_URL": sim.base_url,
        "OP_SENTINEL_DB": "env.duckdb",
        "OP_SENTINEL_STREAMS": "auditevents,itemusages",
    }
    from_env = cli(["check"], env=env)
    assert from_env.code == 0, from_env.err
    assert _line(from_env.out, "base URL") == sim.base_url
    assert _line(from_env.out, "sink") == "duckdb env.duckdb"
    assert _line(from_env.out, "streams") == "auditevents, itemusages"

    from_flags = cli(["check", "--db", "flag.duckdb", "--streams", "signinattempts"], env=env)
    assert from_flags.code == 0, from_flags.err
    assert _line(from_flags.out, "sink") == "duckdb flag.duckdb"
    assert _line(from_flags.out, "streams") == "signinattempts"


def test_token_file_flag_beats_the_token_environment_variable(
    sim: SimulatorServer, token_file: Path, cli: Cli
) -> None:
    foreign = SimulatorServer(SimulatorConfig(events=1, seed=999)).issue_token()
    env = {"OP_SENTINEL_TOKEN": foreign}

    by_env = cli(["check", "--base-url", sim.base_url], env=env)
    assert "401" in assert_one_error_line(by_env, code=2)

    by_flag = cli(["check", "--base-url", sim.base_url, "--token-file", token_file], env=env)
    assert by_flag.code == 0, by_flag.err


def test_the_token_environment_variable_beats_a_token_file_in_toml(
    sim: SimulatorServer, tmp_path: Path, workdir: Path, cli: Cli
) -> None:
    foreign = SimulatorServer(SimulatorConfig(events=1, seed=999)).issue_token()
    write_token(tmp_path / "old-token", foreign)
    (workdir / "op-sentinel.toml").write_text(f'token_file = "{tmp_path / "old-token"}"\n')

    by_file = cli(["check", "--base-url", sim.base_url])
    assert "401" in assert_one_error_line(by_file, code=2)

    by_env = cli(["check", "--base-url", sim.base_url], env={"OP_SENTINEL_TOKEN": sim.token})
    assert by_env.code == 0, by_env.err


def test_the_token_environment_variable_works_alone(sim: SimulatorServer, cli: Cli) -> None:
    result = cli(["check", "--base-url", sim.base_url], env={"OP_SENTINEL_TOKEN": sim.token})
    assert result.code == 0, result.err
    assert _line(result.out, "account") == sim.account_uuid


def test_a_since_flag_wins_over_a_lookback_from_the_environment_or_file(
    sim: SimulatorServer, sim_args: list[str], workdir: Path, cli: Cli
) -> None:
    (workdir / "op-sentinel.toml").write_text('lookback = "3d"\n')
    result = cli(
        ["run", "--once", *sim_args, "--since", "2020-01-01T00:00:00Z"],
        env={"OP_SENTINEL_LOOKBACK": "2d"},
    )
    assert result.code == 0, result.err


@pytest.mark.parametrize(
    ("extra", "env", "toml", "says"),
    [
        ([], {}, 'colour = "blue"\n', "colour"),
        ([], {}, "db = [unclosed\n", "TOML"),
        ([], {}, 'token = "secret-in-toml"\n', "token_file"),
        (["--poll-interval", "10x"], {}, "", "poll_interval"),
        (["--lookback", "seven days"], {}, "", "lookback"),
        ([], {"OP_SENTINEL_HEALTH_INTERVAL": "0s"}, "", "health_interval"),
        (["--since", "yesterday"], {}, "", "since"),
        (["--since", "2026-01-01"], {}, "", "since"),
        (["--since", "2026-01-01T00:00:00Z", "--lookback", "3d"], {}, "", "since"),
        ([], {"OP_SENTINEL_SINCE": "2026-01-01T00:00:00Z", "OP_SENTINEL_LOOKBACK": "3d"}, "", "since"),
        (["--streams", "auditevents,signins"], {}, "", "signins"),
        ([], {"OP_SENTINEL_STREAMS": "itemusage"}, "", "itemusage"),
        (["--sink", "kafka"], {}, "", "sink"),
        (["--sink", "sentinel"], {}, "", "--dce"),
        (["--log-level", "loud"], {}, "", "log_level"),
        ([], {"OP_SENTINEL_ALLOW_CUSTOM_HOST": "maybe"}, "", "allow_custom_host"),
        (["--config", "missing.toml"], {}, "", "missing.toml"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    sim: SimulatorServer,
    sim_args: list[str],
    workdir: Path,
    cli: Cli,
    extra: list[str],
    env: dict[str, str],
    toml: str,
    says: str,
) -> None:
    if toml:
        (workdir / "op-sentinel.toml").write_text(toml)
    result = cli(["run", "--once", *sim_args, *extra], env=env)
    line = assert_one_error_line(result, code=2)
    assert says in line
    assert "secret-in-toml" not in result.all
    assert not any(r.method == "POST" for r in sim.request_log)


def test_a_missing_token_is_one_line_and_exit_2(sim: SimulatorServer, cli: Cli) -> None:
    for command in (["check"], ["run", "--once"]):
        result = cli([*command, "--base-url", sim.base_url])
        line = assert_one_error_line(result, code=2)
        assert "--token-file" in line
        assert "OP_SENTINEL_TOKEN" in line
    assert sim.request_log == []


def test_an_unreadable_token_file_is_one_line_and_exit_2(
    sim: SimulatorServer, tmp_path: Path, cli: Cli
) -> None:
    result = cli(["check", "--base-url", sim.base_url, "--token-file", tmp_path / "no-such-token"])
    assert "no-such-token" in assert_one_error_line(result, code=2)


def test_a_start_beyond_120_days_is_clamped_with_a_warning(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    result = cli(["run", "--once", *sim_args, "--lookback", "200d"])

    assert result.code == 0, result.err
    assert len(result.warnings("120")) == 1, result.err
    assert_exactly_once(db_path, sim, STREAMS)


def test_the_token_file_in_toml_is_relative_to_the_toml_file(
    sim: SimulatorServer, tmp_path: Path, workdir: Path, cli: Cli
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    write_token(conf / "op-token", sim.token)
    (conf / "settings.toml").write_text(f'token_file = "op-token"\nbase_url = "{sim.base_url}"\n')

    result = cli(["check", "--config", conf / "settings.toml"])

    assert result.code == 0, result.err
