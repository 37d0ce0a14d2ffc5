"""A batch's rows as one Arrow table: the values of `transform.to_columns`, in Arrow's types.

For sinks that bulk-load Arrow (DuckDB). Dynamic columns use Arrow's JSON type, so the loader takes
our JSON text as JSON without parsing it again.

Fast path. The string columns (16 of the 33) are the fields as received when they are strings, which
is nearly always. pyarrow reads them straight out of the event dicts (one struct conversion in C++)
and refuses any value that is not a string; the whole batch then takes the Python path of
`transform.to_column`, which converts such values (`tostring`). Either way the table is the same.
Measured on pages of 1,000 audit events (best of 5, one core): building the table took 7.0 ms per
page with every column from Python lists, 5.2 ms with the fast path. The constant columns and the
parsed times go to Arrow without a Python list (0.8 ms less per page, measured on the benchmark's
pages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import pyarrow as pa

from opsentinel.schema import COLUMNS
from opsentinel.transform import STRING_FIELDS, ingestion_time, to_column

__all__ = ["ARROW_SCHEMA", "to_arrow"]

_TIME: Final = pa.timestamp("us", tz="UTC")
_ARROW_TYPES: Final = {
    "string": pa.string(),
    # JSON text we wrote with orjson: as Arrow's JSON type DuckDB stores it without parsing it again.
    "dynamic": pa.json_(),
    "datetime": _TIME,
    "int": pa.int64(),
}
ARROW_SCHEMA: Final = pa.schema([(c.name, _ARROW_TYPES[c.kind]) for c in COLUMNS])

_STRING_STRUCT: Final = pa.struct([(name, pa.string()) for _, name in STRING_FIELDS])


def to_arrow(
    log_source: str,
    events: Sequence[Mapping[str, Any]],
    ingested_at: datetime,
    times: Sequence[datetime | None] | None = None,
) -> pa.Table:
    """`to_columns(log_source, events, ingested_at, times)` as a table of `ARROW_SCHEMA`.

    `events` hold JSON values, as the API sends them. (A `bytes` value, which JSON cannot hold, would
    be read as UTF-8 text by the fast path instead of taking `tostring`'s form.)
    """
    n = len(events)
    # Columns that need no Python loop: constants, and the times the page parser already read.
    direct = {
        "SourceSystem": pa.nulls(n, pa.string()),
        "TimeGenerated": pa.repeat(pa.scalar(ingestion_time(ingested_at), type=_TIME), n),
        "log_source": pa.repeat(pa.scalar(log_source, type=pa.string()), n),
        **_string_arrays(events),
    }
    if times is not None:
        direct["timestamp"] = pa.array(times, type=_TIME)
    arrays = [
        direct[f.name]
        if f.name in direct
        else pa.array(to_column(f.name, log_source, events, ingested_at, times), type=f.type)
        for f in ARROW_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def _string_arrays(events: Sequence[Mapping[str, Any]]) -> dict[str, pa.Array]:
    """The string columns read by pyarrow, or {} when some value is not a string (or not a dict)."""
    try:
        struct = pa.array(events, type=_STRING_STRUCT)
    except (pa.ArrowException, TypeError, ValueError, UnicodeError):
        return {}
    if struct.null_count:  # an event that is None: leave it to the Python path
        return {}
    return {column: struct.field(i) for i, (column, _) in enumerate(STRING_FIELDS)}
