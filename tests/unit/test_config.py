"""Settings: flag > environment > TOML file > default, validated once, one-line errors, secret token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsentinel.config import RETENTION, Settings, load_settings, retention_floor
from opsentinel.errors import ConfigError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldA"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray op-sentinel.toml from the developer's directory


def load(
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    toml: str | None = None,
    path: Path | None = None,
) -> Settings:
    config_path = None
    if toml is not None:
        config_path = path or Path("settings.toml")
        config_path.write_text(toml)
    return load_settings(flags or {}, environ=env or {}, config_path=config_path)


# --- precedence -----------------------------------------------------------------------------------

CASES = [
    # setting, flag value, env var, env value, toml line, attribute, expected from flag/env/file/default
    ("db", "flag.duckdb", "OP_SENTINEL_DB", "env.duckdb", 'db = "file.duckdb"',
     [Path("flag.duckdb"), Path("env.duckdb"), Path("file.duckdb"), Path("op-sentinel.duckdb")]),
    ("poll_interval", "5s", "OP_SENTINEL_POLL_INTERVAL", "2m", 'poll_interval = "1h"',
     [timedelta(seconds=5), timedelta(minutes=2), timedelta(hours=1), timedelta(seconds=10)]),
    ("streams", "itemusages", "OP_SENTINEL_STREAMS", "auditevents,signinattempts",
     'streams = ["auditevents"]',
     [("itemusages",), ("auditevents", "signinattempts"), ("auditevents",), None]),
    ("sink", "jsonl", "OP_SENTINEL_SINK", "sentinel", 'sink = "jsonl"',
     ["jsonl", "sentinel", "jsonl", "duckdb"]),
    ("log_level", "debug", "OP_SENTINEL_LOG_LEVEL", "WARNING", 'log_level = "error"',
     ["debug", "warning", "error", "info"]),
    ("health_interval", "30m", "OP_SENTINEL_HEALTH_INTERVAL", "1h", 'health_interval = "2h"',
     [timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2), timedelta(minutes=15)]),
    ("backfill_workers", 2, "OP_SENTINEL_BACKFILL_WORKERS", "0", "backfill_workers = 16",
     [2, 0, 16, 8]),
    ("allow_custom_host", True, "OP_SENTINEL_ALLOW_CUSTOM_HOST", "1", "allow_custom_host = false",
     [True, True, False, False]),
    ("base_url", "https://events.1password.eu", "OP_SENTINEL_BASE_URL", "https://events.1password.ca",
     'base_url = "https://events.1password.com"',
     ["https://events.1password.eu", "https://events.1password.ca", "https://events.1password.com", None]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "flag", "env_name", "env_value", "toml", "expected"), CASES)
def test_flag_beats_environment_beats_file_beats_default(
    name: str, flag: Any, env_name: str, env_value: str, toml: str, expected: list[Any]
) -> None:
    env = {env_name: env_value}
    assert getattr(load({name: flag}, env, toml), name) == expected[0]
    assert getattr(load({}, env, toml), name) == expected[1]
    assert getattr(load({}, {}, toml), name) == expected[2]
    assert getattr(load({}, {}), name) == expected[3]


def test_a_flag_given_as_none_is_not_given() -> None:
    assert load({"db": None}, {"OP_SENTINEL_DB": "env.duckdb"}).db == Path("env.duckdb")


def test_an_empty_environment_variable_is_not_set() -> None:
    assert load({}, {"OP_SENTINEL_DB": ""}, 'db = "file.duckdb"').db == Path("file.duckdb")


def test_the_default_toml_file_is_read_when_present(tmp_path: Path) -> None:
    (tmp_path / "op-sentinel.toml").write_text('db = "default-file.duckdb"\n')
    assert load_settings({}, environ={}).db == Path("default-file.duckdb")


def test_no_default_toml_file_is_fine() -> None:
    assert load_settings({}, environ={}).sink == "duckdb"


# --- the token ------------------------------------------------------------------------------------


def test_the_token_comes_from_the_environment_as_a_secret() -> None:
    settings = load({}, {"OP_SENTINEL_TOKEN": f"  {TOKEN}\n"})
    assert settings.api_token().reveal() == TOKEN
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert TOKEN not in settings.model_dump_json()


def test_token_file_flag_beats_the_token_environment_variable(tmp_path: Path) -> None:
    (tmp_path / "flag-token").write_text("from-file\n")
    (tmp_path / "flag-token").chmod(0o600)
    settings = load({"token_file": tmp_path / "flag-token"}, {"OP_SENTINEL_TOKEN": TOKEN})
    assert settings.api_token().reveal() == "from-file"


def test_the_token_environment_variable_beats_a_token_file_in_the_toml_file(tmp_path: Path) -> None:
    (tmp_path / "file-token").write_text("from-toml-file\n")
    settings = load({}, {"OP_SENTINEL_TOKEN": TOKEN}, 'token_file = "file-token"\n')
    assert settings.api_token().reveal() == TOKEN


def test_a_token_file_from_the_environment_beats_one_from_the_toml_file(tmp_path: Path) -> None:
    (tmp_path / "env-token").write_text("from-env-file\n")
    (tmp_path / "env-token").chmod(0o600)
    settings = load({}, {"OP_SENTINEL_TOKEN_FILE": str(tmp_path / "env-token")}, 'token_file = "elsewhere"\n')
    assert settings.api_token().reveal() == "from-env-file"


def test_token_file_in_toml_is_relative_to_the_toml_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "op-token").write_text("relative\n")
    (conf / "op-token").chmod(0o600)
    settings = load({}, {}, 'token_file = "op-token"\n', path=conf / "settings.toml")
    assert settings.token_file == (conf / "op-token").resolve()
    assert settings.api_token().reveal() == "relative"


def test_no_token_is_one_line_naming_both_ways() -> None:
    with pytest.raises(ConfigError, match=r"--token-file .*OP_SENTINEL_TOKEN"):
        load({}, {"OP_SENTINEL_TOKEN": "   "}).api_token()


def test_the_token_is_refused_in_the_toml_file_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        load({}, {}, f'token = "{TOKEN}"\n')
    assert "token_file" in str(info.value)
    assert TOKEN not in str(info.value)


# --- first-run start ------------------------------------------------------------------------------


def test_the_default_start_is_seven_days_back() -> None:
    assert load().first_run_start(NOW) == (NOW - timedelta(days=7), None)


def test_since_and_lookback_set_the_start() -> None:
    since = load({"since": "2026-11-20T06:30:00+02:00"})
    assert since.first_run_start(NOW) == (datetime(2026, 11, 20, 4, 30, tzinfo=UTC), None)
    assert load({"lookback": "36h"}).first_run_start(NOW) == (NOW - timedelta(hours=36), None)


@pytest.mark.parametrize("flags", [{"lookback": "200d"}, {"since": "2020-01-01T00:00:00Z"}])
def test_a_start_beyond_120_days_is_clamped_with_a_warning(flags: dict[str, str]) -> None:
    start, warning = load(flags).first_run_start(NOW)
    assert start == retention_floor(NOW)
    assert NOW - RETENTION < start < NOW - RETENTION + timedelta(hours=1)
    assert warning is not None
    assert "120" in warning


@pytest.mark.parametrize(
    ("flags", "env", "toml"),
    [
        ({"since": "2026-11-01T00:00:00Z", "lookback": "3d"}, {}, None),
        ({}, {"OP_SENTINEL_SINCE": "2026-11-01T00:00:00Z", "OP_SENTINEL_LOOKBACK": "3d"}, None),
        ({}, {}, 'since = "2026-11-01T00:00:00Z"\nlookback = "3d"\n'),
    ],
)
def test_since_and_lookback_from_the_same_place_is_an_error(
    flags: dict[str, str], env: dict[str, str], toml: str | None
) -> None:
    with pytest.raises(ConfigError, match=r"either since .* or lookback"):
        load(flags, env, toml)


def test_since_and_lookback_are_one_setting_so_the_higher_precedence_wins() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    by_flag = load({"since": "2026-11-01T00:00:00Z"}, {"OP_SENTINEL_LOOKBACK": "3d"}, 'lookback = "9d"')
    assert (by_flag.since, by_flag.lookback) == (since, None)
    by_env = load({}, {"OP_SENTINEL_LOOKBACK": "3d"}, 'since = "2026-11-01T00:00:00Z"')
    assert (by_env.since, by_env.lookback) == (None, timedelta(days=3))
    lookback_flag = load({"lookback": "2d"}, {"OP_SENTINEL_SINCE": "2026-11-01T00:00:00Z"})
    assert (lookback_flag.since, lookback_flag.lookback) == (None, timedelta(days=2))


# --- bad settings: one line naming the setting and where it came from -------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "says"),
    [
        ({"poll_interval": "10x"}, {}, "invalid poll_interval (--poll-interval)"),
        ({}, {"OP_SENTINEL_LOOKBACK": "a week"}, "invalid lookback (OP_SENTINEL_LOOKBACK)"),
        ({"health_interval": "0s"}, {}, "must be more than 0s"),
        ({"since": "2026-11-01"}, {}, "invalid since (--since)"),
        ({"since": "2026-11-01T00:00:00"}, {}, "not an RFC 3339"),
        ({"streams": "auditevents,bogus"}, {}, "unknown stream 'bogus'"),
        ({"streams": " , "}, {}, "no stream named"),
        ({"sink": "kafka"}, {}, "invalid sink (--sink)"),
        ({}, {"OP_SENTINEL_ALLOW_CUSTOM_HOST": "maybe"}, "OP_SENTINEL_ALLOW_CUSTOM_HOST"),
        ({"log_level": "loud"}, {}, "invalid log_level"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(
    flags: dict[str, str], env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(flags, env)
    message = str(info.value)
    assert says in message
    assert "\n" not in message


def test_a_bad_value_in_the_toml_file_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"invalid lookback \(settings.toml\)"):
        load({}, {}, 'lookback = "soon"\n')


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('colour = "blue"\n', "unknown setting 'colour'"),
        ("db = [unclosed\n", "not valid TOML"),
    ],
)
def test_a_bad_toml_file_is_one_line(toml: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load({}, {}, toml)


def test_an_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, environ={}, config_path=tmp_path / "missing.toml")


def test_streams_are_trimmed_and_deduplicated_in_order() -> None:
    streams = load({"streams": " itemusages, auditevents ,itemusages,"}).streams
    assert streams == ("itemusages", "auditevents")


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("0", False), ("off", False)])
def test_allow_custom_host_from_the_environment(value: str, expected: bool) -> None:
    assert load({}, {"OP_SENTINEL_ALLOW_CUSTOM_HOST": value}).allow_custom_host is expected


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(ValueError, match="frozen"):
        settings.db = Path("other")  # type: ignore[misc]


@pytest.mark.parametrize("workers", ["-1", "33", "many"])
def test_backfill_workers_out_of_range_is_one_clear_error(workers: str) -> None:
    with pytest.raises(ConfigError, match=r"backfill_workers \(OP_SENTINEL_BACKFILL_WORKERS\)"):
        load({}, {"OP_SENTINEL_BACKFILL_WORKERS": workers})
