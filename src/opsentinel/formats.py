"""Output formats of `op-sentinel query` (and any other command that prints rows).

    table   a rich table for people
    json    one JSON array of objects
    jsonl   one JSON object a line
    csv     a header line, then one line a row

In json and jsonl, JSON (dynamic) columns are nested JSON, not strings; in csv and table they are
compact JSON text. Datetimes are RFC 3339 in UTC with `Z` (a TIMESTAMP without time zone is taken as
UTC); dates and times are ISO 8601; decimals are numbers; bytes are base64; NaN and infinities are
null in JSON. SQL NULL is JSON null, an empty csv field and an empty table cell.
"""

from __future__ import annotations

import base64
import csv
import math
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any, Final, Literal

import orjson

__all__ = ["FORMATS", "Format", "json_value", "text_value", "write_result"]

Format = Literal["table", "json", "jsonl", "csv"]
FORMATS: Final[tuple[Format, ...]] = ("table", "json", "jsonl", "csv")

_JSON_TYPE: Final = "JSON"


def _time_text(moment: datetime) -> str:
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


def _duration_text(delta: timedelta) -> str:
    return str(delta)


def json_value(value: Any, is_json: bool = False) -> Any:
    """`value` as something orjson writes faithfully (nested JSON for a JSON column's text)."""
    if value is None:
        return None
    if is_json and isinstance(value, str):
        return orjson.Fragment(value)  # already JSON text: embed it, do not re-quote it
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return _time_text(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _duration_text(value)
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value)) if value.is_finite() else None
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)


def text_value(value: Any, is_json: bool = False) -> str:
    """`value` as one cell of csv or table output ("" for NULL)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _time_text(value)
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(json_value(value)).decode()
    converted = json_value(value, is_json)
    return "" if converted is None else str(converted)


def _objects(
    names: Sequence[str], json_flags: Sequence[bool], rows: Iterable[Sequence[Any]]
) -> Iterable[Any]:
    for row in rows:
        yield {name: json_value(v, j) for name, v, j in zip(names, row, json_flags, strict=True)}


def write_result(
    columns: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    fmt: str,
    out: IO[str],
) -> None:
    """Write `rows` to `out` in `fmt`. `columns` are names or (name, type) pairs such as
    store_read.ResultColumn; a column whose type is JSON is written as nested JSON in json/jsonl.
    """
    names = [c if isinstance(c, str) else str(c[0]) for c in columns]
    json_flags = [not isinstance(c, str) and str(c[1]).upper() == _JSON_TYPE for c in columns]
    if fmt == "json":
        out.write(orjson.dumps(list(_objects(names, json_flags, rows))).decode())
        out.write("\n")
    elif fmt == "jsonl":
        for obj in _objects(names, json_flags, rows):
            out.write(orjson.dumps(obj).decode())
            out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow([text_value(v, j) for v, j in zip(row, json_flags, strict=True)])
    elif fmt == "table":
        _render_table(names, json_flags, rows, out)
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _render_table(
    names: Sequence[str], json_flags: Sequence[bool], rows: Iterable[Sequence[Any]], out: IO[str]
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # plain Text: "[...]" in a value is data, never rich markup

    table = Table(show_header=True, header_style="bold")
    for name in names:
        table.add_column(name, overflow="fold")
    count = 0
    for row in rows:
        table.add_row(*(Text(text_value(v, j)) for v, j in zip(row, json_flags, strict=True)))
        count += 1
    console = Console(file=out, soft_wrap=False)
    console.print(table)
    console.print(f"{count} row{'s' if count != 1 else ''}", style="dim")
