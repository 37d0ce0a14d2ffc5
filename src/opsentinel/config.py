"""Settings: one typed object, validated once, from flags > environment > TOML file > defaults.

The names are fixed by the user contract (../shared/design/interface.md, "Settings"). The API token is
never a plain field: it is read from `--token-file` / `token_file` or `OP_SENTINEL_TOKEN` into a
`SecretStr` and only revealed for the Authorization header.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from opsentinel.errors import ConfigError
from opsentinel.schema import DCR_HISTORY_STREAM_NAME, DCR_STREAM_NAME
from opsentinel.streams import STREAM_NAMES
from opsentinel.timefmt import parse_duration, parse_rfc3339

if TYPE_CHECKING:
    from opsentinel.source.token import ApiToken

SinkName = Literal["duckdb", "sentinel", "jsonl"]

RETENTION = timedelta(days=120)
# Requests never ask for the very edge of retention: by the time one arrives, it would be past it.
RETENTION_MARGIN = timedelta(minutes=10)
DEFAULT_LOOKBACK = timedelta(days=7)
DEFAULT_LATE_WINDOW = timedelta(hours=24)
DEFAULT_CONFIG_FILE = "op-sentinel.toml"
DEFAULT_STATE_DIR = ".op-sentinel"


@dataclass(frozen=True)
class SettingSpec:
    """Where one setting may come from."""

    name: str
    env: str | None


# Every setting, with its environment variable (flags carry the same name with dashes).
SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("base_url", "OP_SENTINEL_BASE_URL"),
    SettingSpec("token_file", "OP_SENTINEL_TOKEN_FILE"),
    SettingSpec("streams", "OP_SENTINEL_STREAMS"),
    SettingSpec("since", "OP_SENTINEL_SINCE"),
    SettingSpec("lookback", "OP_SENTINEL_LOOKBACK"),
    SettingSpec("sink", "OP_SENTINEL_SINK"),
    SettingSpec("db", "OP_SENTINEL_DB"),
    SettingSpec("jsonl_path", "OP_SENTINEL_JSONL"),
    SettingSpec("dce", "OP_SENTINEL_DCE"),
    SettingSpec("dcr_id", "OP_SENTINEL_DCR_ID"),
    SettingSpec("stream", "OP_SENTINEL_STREAM"),
    SettingSpec("history_stream", "OP_SENTINEL_HISTORY_STREAM"),
    SettingSpec("state", "OP_SENTINEL_STATE"),
    SettingSpec("poll_interval", "OP_SENTINEL_POLL_INTERVAL"),
    SettingSpec("health_interval", "OP_SENTINEL_HEALTH_INTERVAL"),
    SettingSpec("backfill_workers", "OP_SENTINEL_BACKFILL_WORKERS"),
    SettingSpec("late_window", "OP_SENTINEL_LATE_WINDOW"),
    SettingSpec("replica_id", "OP_SENTINEL_REPLICA_ID"),
    SettingSpec("allow_custom_host", "OP_SENTINEL_ALLOW_CUSTOM_HOST"),
    SettingSpec("log_level", "OP_SENTINEL_LOG_LEVEL"),
)
TOKEN_ENV = "OP_SENTINEL_TOKEN"  # noqa: S105 - the variable name, not a secret


class Settings(BaseModel):
    """Validated settings. Build with `load_settings`, not directly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    streams: tuple[str, ...] | None = None
    since: datetime | None = None
    lookback: timedelta | None = None
    sink: SinkName = "duckdb"
    db: Path = Path("op-sentinel.duckdb")
    jsonl_path: Path = Path("op-sentinel.jsonl")
    dce: str | None = None
    dcr_id: str | None = None
    stream: str = DCR_STREAM_NAME
    history_stream: str = DCR_HISTORY_STREAM_NAME
    # a directory, or an Azure Blob container URL (see checkpoints.blobaccess.parse_state_url)
    state: str = ".op-sentinel"
    poll_interval: timedelta = timedelta(seconds=10)
    health_interval: timedelta = timedelta(minutes=15)
    backfill_workers: int = Field(default=8, ge=0, le=32)
    late_window: timedelta = DEFAULT_LATE_WINDOW
    # This process's name among replicas sharing a Blob state (User-Agent, logs, health rows).
    replica_id: str = Field(default_factory=lambda: secrets.token_hex(4), pattern=r"^[A-Za-z0-9._-]{1,64}$")
    # [[account]] tables of the config file (see accounts.py); account_name names the one these
    # settings are for, once split per account
    accounts: tuple[dict[str, Any], ...] = ()
    account_name: str | None = None
    allow_custom_host: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("streams", mode="before")
    @classmethod
    def _streams(cls, value: Any) -> Any:
        if value is None:
            return None
        items = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
        items = [s for s in items if s]
        unknown = [s for s in items if s not in STREAM_NAMES]
        if unknown:
            raise ValueError(f"unknown stream {unknown[0]!r} (choose from {', '.join(STREAM_NAMES)})")
        if not items:
            raise ValueError("no stream named")
        return tuple(dict.fromkeys(items))

    @field_validator("since", mode="before")
    @classmethod
    def _since(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_rfc3339(value)
        return value

    @field_validator("lookback", "poll_interval", "health_interval", "late_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_duration(value)
        return value

    @field_validator("poll_interval", "health_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be more than 0s")
        return value

    @field_validator("late_window")
    @classmethod
    def _late_window(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        if value > RETENTION:
            raise ValueError("must be at most 120d (the API keeps events 120 days)")
        return value

    @field_validator("allow_custom_host", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected 1 or 0, got {value[:20]!r}")
        return value

    @field_validator("history_stream", mode="before")
    @classmethod
    def _history_stream(cls, value: Any) -> Any:
        # "none" (or an empty value where one can be given) sends no history to Sentinel
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return ""
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def first_run_start(self, now: datetime) -> tuple[datetime, str | None]:
        """Where a stream without a checkpoint starts, and a warning when the start was clamped."""
        if self.since is not None:
            start = self.since
        else:
            start = now - (self.lookback or DEFAULT_LOOKBACK)
        oldest = retention_floor(now)
        if start < oldest:
            return (
                oldest,
                "the start is older than the API's 120-day retention; starting 120 days ago instead",
            )
        return start, None

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value

    @property
    def state_url(self) -> str | None:
        """The Blob container URL `--state` names, or None when it is a directory."""
        return self.state if is_blob_url(self.state) else None

    @property
    def state_dir(self) -> Path:
        """The state directory; with a Blob state, the local directory kept for dead letters."""
        return Path(DEFAULT_STATE_DIR if self.state_url is not None else self.state)

    @property
    def sends_history(self) -> bool:
        """Whether a first run reads history: always, except into Sentinel with no history stream
        (history would otherwise reach the analytic rules' table as if it were new)."""
        return self.sink != "sentinel" or bool(self.history_stream.strip())

    @property
    def start_was_given(self) -> bool:
        return self.since is not None or self.lookback is not None

    def api_token(self) -> ApiToken:
        """The token from `--token-file`/`token_file` or `OP_SENTINEL_TOKEN`; ConfigError if none."""
        from opsentinel.source.token import ApiToken

        if self.token_file is not None:
            return ApiToken.from_file(self.token_file)
        if self.token is not None:
            return ApiToken(self.token.get_secret_value())
        raise ConfigError(f"no API token: pass --token-file PATH or set {TOKEN_ENV}")


def _read_config_file(path: Path, explicit: bool) -> dict[str, Any]:
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {type(exc).__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {s.name for s in SPECS}
    for key in data:
        if key == "token":
            raise ConfigError(f"config file {path}: put the token in a file and set token_file, not token")
        if key == "account":
            from opsentinel.accounts import parse_account_tables

            data["account"] = parse_account_tables(data["account"], path)
            continue
        if key not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
    if "token_file" in data:
        data["token_file"] = (path.parent / str(data["token_file"])).resolve()
    return data


def load_settings(
    flags: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Merge flags > environment > TOML file > defaults into validated Settings.

    `flags` holds only the flags the user gave (None values are ignored). ConfigError on any problem,
    with one line naming the setting and where it came from.
    """
    env = os.environ if environ is None else environ
    explicit = config_path is not None
    file_values = _read_config_file(config_path or Path(DEFAULT_CONFIG_FILE), explicit)

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    level: dict[str, int] = {}  # where each value came from: 0 flag, 1 environment, 2 file
    for spec in SPECS:
        if flags.get(spec.name) is not None:
            merged[spec.name] = flags[spec.name]
            origin[spec.name] = "--" + spec.name.replace("_", "-")
            level[spec.name] = 0
        elif spec.env and env.get(spec.env, "") != "":
            merged[spec.name] = env[spec.env]
            origin[spec.name] = spec.env
            level[spec.name] = 1
        elif spec.name in file_values:
            merged[spec.name] = file_values[spec.name]
            origin[spec.name] = f"{config_path or DEFAULT_CONFIG_FILE}"
            level[spec.name] = 2
    # The token itself only from the environment; it is the same setting as the token file, so it
    # beats a token_file from the TOML file and loses to --token-file (and to OP_SENTINEL_TOKEN_FILE).
    if env.get(TOKEN_ENV, "").strip():
        if level.get("token_file") == 2:
            merged.pop("token_file")
        if "token_file" not in merged:
            merged["token"] = SecretStr(env[TOKEN_ENV].strip())
    # since and lookback are two spellings of one setting (the first-run start): the higher
    # precedence wins; both at the same level is an error.
    if merged.get("since") is not None and merged.get("lookback") is not None:
        if level["since"] == level["lookback"]:
            raise ConfigError(
                f"give either since ({origin['since']}) or lookback ({origin['lookback']}), not both"
            )
        merged.pop("lookback" if level["since"] < level["lookback"] else "since")
    if file_values.get("account"):
        merged["accounts"] = file_values["account"]
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = origin.get(name, name)
        raise ConfigError(f"invalid {name} ({where}): {msg}") from None
    return settings


def is_blob_url(text: str) -> bool:
    """Whether a `--state` value means a Blob container (a URL) rather than a directory."""
    return text[:8].lower().startswith(("https://", "http://"))


def retention_floor(now: datetime) -> datetime:
    """The oldest start time worth asking the API for at `now` (120 days, less a margin)."""
    return now - RETENTION + RETENTION_MARGIN


def now_utc() -> datetime:
    return datetime.now(UTC)
