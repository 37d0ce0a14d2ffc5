"""Events to rows: what the official DCR transform makes of an event, as a pure function.

`to_row` reproduces the `transformKql` of Microsoft's 1Password DCR (`1Password_DCR.json`):

    source | project TimeGenerated = now(), uuid_s = uuid, session_uuid, timestamp, country, category,
      action_type = type, details, target_user, client, location, actor_uuid, actor_details, actor_type,
      actor_account_uuid, account_uuid,
      user_type = tostring(coalesce(target_user.user_type, user.user_type)),
      user_account_uuid = tostring(coalesce(target_user.user_account_uuid, user.user_account_uuid)),
      action, object_type, object_uuid, object_details, aux_id, aux_uuid, aux_details, aux_info, session,
      used_version, vault_uuid, item_uuid, user, log_source = case(...field-presence guess...)

with one deliberate difference: `log_source` is the stream the event was read from (the argument),
never the guess, which labels audit events that carry `aux_id` as `itemusages`. `SourceSystem` is not
set by the transform and stays NULL; `TimeGenerated` is the injected ingestion time.

Value rules (per column kind, see `_COLUMN_SPEC`):

- absent or JSON null is SQL NULL everywhere (Log Analytics *displays* an absent string as "", and
  `tostring(null)` is "" there too; we keep the NULL, which `isempty()` treats the same way);
- string: a string as received; other scalars in Kusto `tostring` form (`true`, `12`, `1.5`);
  objects and arrays as compact JSON text;
- datetime: RFC 3339 with 0-9 fraction digits and `Z` or an offset (a missing offset means UTC, as
  Kusto reads it), stored as UTC with microsecond precision (extra digits truncated); a value that is
  not a date-time is NULL;
- dynamic: the value as received, as JSON text (so `"x"` for a bare string);
- int: an int, an integral float or a string of digits within the signed 64-bit range; anything
  else (including booleans) is NULL.

Health rows (`log_source` "healthevents") go through the same functions: their `category`, `type`
and `details` fill `category`, `action_type` and `details`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from opsentinel.schema import COLUMN_NAMES, DCR_INPUT_COLUMNS

__all__ = [
    "STRING_FIELDS",
    "ingestion_time",
    "parse_event_time",
    "to_column",
    "to_columns",
    "to_dcr_record",
    "to_row",
    "to_rows",
]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_DIGITS = re.compile(r"^\s*[+-]?\d+\s*$")
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})?$")

# --- value conversions ------------------------------------------------------------------------


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        # orjson refuses ints beyond 64 bits and unknown types; the stdlib writes both.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _as_string(value: Any) -> str | None:
    """Kusto `tostring`, except that null stays NULL."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, datetime):
        return _time_text(value)
    return _json_text(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        result = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and _DIGITS.match(value)
    ):
        result = int(value)
    else:
        return None
    return result if _INT64_MIN <= result <= _INT64_MAX else None


def parse_event_time(value: Any) -> datetime | None:
    """An event time as an aware UTC datetime (microseconds), or None when it is not one.

    Accepts RFC 3339 strings (0-9 fraction digits, `Z`/`z` or `+hh:mm`; without an offset: UTC) and
    datetime objects (naive ones are taken as UTC). A time outside years 1-9999 in UTC is None.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        m = _TIME.match(value)
        if m is None:
            return None
        try:
            moment = datetime.fromisoformat(value)  # 3.11 reads Z and 7-9 digits (truncating)
        except ValueError:
            date, clock, fraction, offset = m.groups()  # e.g. a lowercase z
            micro = (fraction or "").ljust(6, "0")[:6]
            tz = "+00:00" if offset is None or offset in ("Z", "z") else offset
            try:
                moment = datetime.fromisoformat(f"{date}T{clock}.{micro}{tz}")
            except ValueError:  # well-formed but impossible, e.g. month 13 or second 62
                return None
    else:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        return None


def _time_text(moment: datetime) -> str:
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


# --- the column table -------------------------------------------------------------------------

# Column -> (kind, API field). Kinds: string/time/dynamic/int read one field; "coalesce" reads
# `field` inside target_user, else inside user; the rest take no field.
_COLUMN_SPEC: Final[tuple[tuple[str, str, str], ...]] = (
    ("SourceSystem", "null", ""),
    ("TimeGenerated", "ingested", ""),
    ("uuid_s", "string", "uuid"),
    ("session_uuid", "string", "session_uuid"),
    ("timestamp", "time", "timestamp"),
    ("country", "string", "country"),
    ("category", "string", "category"),
    ("action_type", "string", "type"),
    ("details", "dynamic", "details"),
    ("target_user", "dynamic", "target_user"),
    ("client", "dynamic", "client"),
    ("location", "dynamic", "location"),
    ("actor_uuid", "string", "actor_uuid"),
    ("actor_details", "dynamic", "actor_details"),
    ("actor_type", "string", "actor_type"),
    ("actor_account_uuid", "string", "actor_account_uuid"),
    ("account_uuid", "string", "account_uuid"),
    ("user_type", "coalesce", "user_type"),
    ("user_account_uuid", "coalesce", "user_account_uuid"),
    ("action", "string", "action"),
    ("object_type", "string", "object_type"),
    ("object_uuid", "string", "object_uuid"),
    ("object_details", "dynamic", "object_details"),
    ("aux_id", "int", "aux_id"),
    ("aux_uuid", "string", "aux_uuid"),
    ("aux_details", "dynamic", "aux_details"),
    ("aux_info", "string", "aux_info"),
    ("session", "dynamic", "session"),
    ("used_version", "int", "used_version"),
    ("vault_uuid", "string", "vault_uuid"),
    ("item_uuid", "string", "item_uuid"),
    ("user", "dynamic", "user"),
    ("log_source", "log_source", ""),
)
if tuple(spec[0] for spec in _COLUMN_SPEC) != COLUMN_NAMES:  # pragma: no cover - import-time guard
    raise RuntimeError("transform column table is out of step with schema.COLUMNS")
_SPEC_BY_COLUMN: Final = {column: (kind, name) for column, kind, name in _COLUMN_SPEC}

STRING_FIELDS: Final[tuple[tuple[str, str], ...]] = tuple(
    (column, name) for column, kind, name in _COLUMN_SPEC if kind == "string"
)
"""(column, API field) of the columns that hold a string field as received (non-strings converted)."""


def _coalesced(event: Mapping[str, Any], child: str) -> str | None:
    """`tostring(coalesce(target_user.<child>, user.<child>))`, null kept as NULL."""
    for parent in ("target_user", "user"):
        container = event.get(parent)
        # `type(...) is dict` first: the ABC check alone costs more than the lookup it guards.
        if type(container) is dict or isinstance(container, Mapping):
            value = container.get(child)
            if value is not None:
                return _as_string(value)
    return None


def _column(
    kind: str, name: str, events: Sequence[Mapping[str, Any]], log_source: str, now: datetime
) -> list[Any]:
    # Comprehensions per kind, with the common case inlined: this runs for every stored event.
    if kind == "string":
        return [v if (v := e.get(name)) is None or type(v) is str else _as_string(v) for e in events]
    if kind == "dynamic":
        try:  # orjson straight away; `_json_text` only for a column holding what orjson refuses
            return [None if (v := e.get(name)) is None else orjson.dumps(v).decode() for e in events]
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            return [None if (v := e.get(name)) is None else _json_text(v) for e in events]
    if kind == "time":
        return [parse_event_time(e.get(name)) for e in events]
    if kind == "int":
        return [
            v if type(v := e.get(name)) is int and _INT64_MIN <= v <= _INT64_MAX else _as_int(v)
            for e in events
        ]
    if kind == "coalesce":
        return [_coalesced(e, name) for e in events]
    if kind == "ingested":
        return [now] * len(events)
    if kind == "log_source":
        return [log_source] * len(events)
    return [None] * len(events)


def ingestion_time(ingested_at: datetime) -> datetime:
    """`ingested_at` in UTC, as `TimeGenerated` holds it; ValueError when it is naive."""
    if ingested_at.tzinfo is None:
        raise ValueError("ingested_at must be timezone-aware")
    return ingested_at.astimezone(UTC)


def to_columns(
    log_source: str,
    events: Sequence[Mapping[str, Any]],
    ingested_at: datetime,
    times: Sequence[datetime | None] | None = None,
) -> list[list[Any]]:
    """The rows of a batch, column-wise: 33 lists (in `schema.COLUMNS` order) of len(events) values.

    Same values as `to_row`; this is the fast path for sinks that load columns (Arrow, DuckDB).
    `times` may give the events' `timestamp` values already parsed (as `source.page` parses them,
    which reads every accepted timestamp as `parse_event_time` does); they fill `timestamp` as is.
    """
    now = _checked_now(events, ingested_at, times)
    return [_column_or_times(column, log_source, events, now, times) for column in COLUMN_NAMES]


def to_column(
    column: str,
    log_source: str,
    events: Sequence[Mapping[str, Any]],
    ingested_at: datetime,
    times: Sequence[datetime | None] | None = None,
) -> list[Any]:
    """One column of `to_columns` (by its name in `schema.COLUMNS`)."""
    now = _checked_now(events, ingested_at, times)
    return _column_or_times(column, log_source, events, now, times)


def _checked_now(
    events: Sequence[Mapping[str, Any]], ingested_at: datetime, times: Sequence[datetime | None] | None
) -> datetime:
    now = ingestion_time(ingested_at)
    if times is not None and len(times) != len(events):
        raise ValueError("times must be aligned with events")
    return now


def _column_or_times(
    column: str,
    log_source: str,
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    times: Sequence[datetime | None] | None,
) -> list[Any]:
    kind, name = _SPEC_BY_COLUMN[column]
    if kind == "time" and times is not None:
        return list(times)
    return _column(kind, name, events, log_source, now)


def to_row(log_source: str, event: Mapping[str, Any], ingested_at: datetime) -> tuple[Any, ...]:
    """The 33 values of `schema.COLUMNS`, in order, for one event read from stream `log_source`.

    Pure: no I/O, and the only time used is `ingested_at` (timezone-aware; stored as UTC).
    """
    return tuple(column[0] for column in to_columns(log_source, [event], ingested_at))


def to_rows(
    log_source: str, events: Sequence[Mapping[str, Any]], ingested_at: datetime
) -> list[tuple[Any, ...]]:
    """`to_row` for every event of a batch (same `log_source` and `ingested_at`)."""
    return list(zip(*to_columns(log_source, events, ingested_at), strict=True)) if events else []


# --- the Logs Ingestion API record ------------------------------------------------------------

_DCR_FIELDS: Final = tuple(c.name for c in DCR_INPUT_COLUMNS)


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return _time_text(value)
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def to_dcr_record(log_source: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The record the official DCR stream declaration expects (raw API field names: `uuid`, `type`,
    `timestamp`, ...), holding only the declared fields the event has (null counts as absent), as
    received, plus `log_source`. Values are JSON-ready: a `timestamp` string is passed on unchanged,
    a datetime object becomes RFC 3339 UTC text.
    """
    record: dict[str, Any] = {}
    for name in _DCR_FIELDS:
        value = event.get(name)
        if value is not None:
            record[name] = _json_ready(value)
    record["log_source"] = log_source
    return record
