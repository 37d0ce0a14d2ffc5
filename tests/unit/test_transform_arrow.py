"""to_arrow: the rows of `to_columns` as the Arrow table the DuckDB sink loads, on either path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from tests.contract.storehelp import make_events

from opsentinel.schema import COLUMN_NAMES
from opsentinel.transform import to_columns
from opsentinel.transform_arrow import ARROW_SCHEMA, to_arrow

NOW = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)


def as_columns(table: pa.Table) -> dict[str, list[Any]]:
    return table.to_pydict()


def expected(events: list[dict[str, Any]], stream: str = "auditevents") -> dict[str, list[Any]]:
    return dict(zip(COLUMN_NAMES, to_columns(stream, events, NOW), strict=True))


def test_a_page_of_string_fields_gives_the_values_of_to_columns() -> None:
    events = make_events("auditevents", 50)
    table = to_arrow("auditevents", events, NOW)
    assert table.schema == ARROW_SCHEMA
    assert as_columns(table) == expected(events)


@pytest.mark.parametrize("odd", [12, 1.5, True, {"a": [1, "b"]}, [1, 2]])
def test_one_non_string_in_a_string_field_takes_the_tostring_form(odd: Any) -> None:
    # pyarrow refuses the value; the whole page then takes the Python path (Kusto `tostring`).
    events = make_events("auditevents", 5)
    events[3] = dict(events[3], aux_info=odd, type=odd)
    got = as_columns(to_arrow("auditevents", events, NOW))
    assert got == expected(events)
    assert isinstance(got["aux_info"][3], str) and got["aux_info"][3] == got["action_type"][3]


def test_values_orjson_refuses_are_written_by_the_standard_library() -> None:
    events = make_events("signinattempts", 3)
    events[1] = dict(events[1], details={"big": 2**70})
    got = as_columns(to_arrow("signinattempts", events, NOW))
    assert got == expected(events, "signinattempts")
    assert got["details"][1] == '{"big":1180591620717411303424}'


def test_an_empty_batch_is_an_empty_table_of_the_schema() -> None:
    table = to_arrow("auditevents", [], NOW)
    assert table.num_rows == 0 and table.schema == ARROW_SCHEMA
