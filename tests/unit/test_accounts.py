"""[[account]] tables: each account's settings are the deployment's with its own keys on top."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from opsentinel.accounts import account_settings
from opsentinel.config import load_settings
from opsentinel.errors import ConfigError

CONFIG = """
sink = "sentinel"
dce = "https://shared.eastus-1.ingest.monitor.azure.com"
dcr_id = "dcr-00000000000000000000000000000001"
lookback = "3d"
poll_interval = "30s"

[[account]]
name = "acme"
token_file = "tokens/acme"
streams = ["auditevents"]

[[account]]
name = "globex"
token_env = "GLOBEX_TOKEN"
base_url = "https://events.1password.eu"
dcr_id = "dcr-00000000000000000000000000000002"
since = "2026-11-01T00:00:00Z"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "op-sentinel.toml"
    path.write_text(text)
    return path


def test_each_account_gets_the_deployment_settings_with_its_own_on_top(tmp_path: Path) -> None:
    path = _write(tmp_path, CONFIG)
    settings = load_settings({}, environ={}, config_path=path)
    acme, globex = account_settings(settings, environ={"GLOBEX_TOKEN": "secret-globex"})
    assert acme.account_name == "acme" and globex.account_name == "globex"
    assert acme.token_file == (tmp_path / "tokens" / "acme").resolve()
    assert acme.streams == ("auditevents",)
    assert acme.lookback == timedelta(days=3) and acme.poll_interval == timedelta(seconds=30)
    assert globex.token is not None and globex.token.get_secret_value() == "secret-globex"
    assert "secret-globex" not in repr(globex)
    assert globex.base_url == "https://events.1password.eu"
    assert globex.dcr_id.endswith("2") and acme.dcr_id.endswith("1")
    assert globex.since is not None and globex.lookback is None, "an account's since replaces the lookback"
    assert not acme.accounts and not globex.accounts


def test_without_account_tables_there_is_one_account(tmp_path: Path) -> None:
    settings = load_settings({"lookback": "1d"}, environ={"OP_SENTINEL_TOKEN": "t"}, config_path=None)
    assert account_settings(settings) == [settings]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[[account]]\ntoken_file = "x"\n', "needs a name"),
        ('[[account]]\nname = "a"\n', "exactly one of token_file or token_env"),
        ('[[account]]\nname = "a"\ntoken_file = "x"\ntoken_env = "Y"\n', "exactly one"),
        ('[[account]]\nname = "a"\ntoken_env = "Y"\n[[account]]\nname = "a"\ntoken_env = "Z"\n', "two"),
        (
            '[[account]]\nname = "a"\ntoken_env = "Y"\npoll_interval = "1s"\n',
            "unknown setting 'poll_interval'",
        ),
        ('[[account]]\nname = "a"\ntoken = "secret"\n', "token_file"),
    ],
)
def test_bad_account_tables_are_one_line_errors(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings({}, environ={}, config_path=_write(tmp_path, table))
    assert "\n" not in str(info.value)
    assert "secret" not in str(info.value)


def test_an_account_value_is_validated_and_named(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[account]]\nname = "acme"\ntoken_env = "T"\nstreams = ["logins"]\n')
    settings = load_settings({}, environ={}, config_path=path)
    with pytest.raises(ConfigError, match="account 'acme': invalid streams"):
        account_settings(settings, environ={"T": "x"})
    path = _write(tmp_path, '[[account]]\nname = "acme"\ntoken_env = "ACME_TOKEN"\n')
    with pytest.raises(
        ConfigError, match="account 'acme': the environment variable ACME_TOKEN holds no token"
    ):
        account_settings(load_settings({}, environ={}, config_path=path), environ={})
