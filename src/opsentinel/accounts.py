"""Many 1Password accounts in one deployment: the `[[account]]` tables of the TOML config.

    [[account]]
    name = "acme"
    token_file = "tokens/acme"          # relative to the config file, or
    # token_env = "ACME_OP_TOKEN"       # the name of an environment variable holding the token
    base_url = "https://events.1password.eu"        # optional, like every key below
    streams = ["auditevents", "signinattempts"]
    lookback = "30d"                    # or since = "2026-10-01T00:00:00Z"
    dce = "https://..."                 # a destination of its own (Sentinel)
    dcr_id = "dcr-..."
    stream = "Custom-OnePasswordEventLogs_CL"
    history_stream = "Custom-OnePasswordEventLogsHistory_CL"

Every other setting (sink, state, poll interval, late window, ...) is the deployment's, from the
top level, the environment or flags. With `[[account]]` tables present the single-account token
settings are not used. `account_settings` turns each table into the Settings one account runs with,
validated like any settings (an error names the account).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import SecretStr, ValidationError

from opsentinel.errors import ConfigError

if TYPE_CHECKING:
    from opsentinel.config import Settings

__all__ = ["ACCOUNT_KEYS", "account_settings", "parse_account_tables"]

ACCOUNT_KEYS: Final = frozenset(
    {
        "name",
        "token_file",
        "token_env",
        "base_url",
        "streams",
        "since",
        "lookback",
        "dce",
        "dcr_id",
        "stream",
        "history_stream",
    }
)


def parse_account_tables(value: Any, config_path: Path) -> tuple[dict[str, Any], ...]:
    """The `account` array of a config file, checked for shape: each a table with a unique `name`
    and exactly one of `token_file` (made absolute against the config file) or `token_env`."""
    where = f"config file {config_path}"
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{where}: account must be [[account]] tables")
    names: set[str] = set()
    out = []
    for table in value:
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: every [[account]] needs a name")
        if name in names:
            raise ConfigError(f"{where}: two [[account]] tables are named {name!r}")
        names.add(name)
        if "token" in table:
            raise ConfigError(f"{where}: account {name!r}: put the token in a file (token_file) or token_env")
        unknown = sorted(set(table) - ACCOUNT_KEYS)
        if unknown:
            raise ConfigError(f"{where}: account {name!r}: unknown setting {unknown[0]!r}")
        if ("token_file" in table) == ("token_env" in table):
            raise ConfigError(f"{where}: account {name!r} needs exactly one of token_file or token_env")
        entry = dict(table)
        if "token_file" in entry:
            entry["token_file"] = (config_path.parent / str(entry["token_file"])).resolve()
        out.append(entry)
    return tuple(out)


def account_settings(settings: Settings, environ: dict[str, str] | None = None) -> list[Settings]:
    """The Settings each account runs with: the deployment's settings with the account's own keys on
    top. Without `[[account]]` tables, the one account the settings describe."""
    if not settings.accounts:
        return [settings]
    env = os.environ if environ is None else environ
    base = settings.model_dump(exclude={"accounts", "token", "token_file", "account_name"})
    out = []
    for table in settings.accounts:
        name = table["name"]
        merged = {**base, **{k: v for k, v in table.items() if k not in ("name", "token_env")}}
        merged["account_name"] = name
        if merged.get("since") is not None and "lookback" in table:
            merged["since"] = None
        if merged.get("lookback") is not None and "since" in table:
            merged["lookback"] = None
        if "token_env" in table:
            variable = str(table["token_env"])
            secret = env.get(variable, "").strip()
            if not secret:
                raise ConfigError(f"account {name!r}: the environment variable {variable} holds no token")
            merged["token"] = SecretStr(secret)
        try:
            out.append(type(settings)(**merged))
        except ValidationError as exc:
            err = exc.errors()[0]
            key = str(err["loc"][0]) if err["loc"] else "settings"
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"account {name!r}: invalid {key}: {msg}") from None
    return out
