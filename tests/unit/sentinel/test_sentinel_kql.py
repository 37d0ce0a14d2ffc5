"""Both DCR transforms, run by a small KQL evaluator over sample events: what lands in the table.

Shows that our template's transform keeps the stream each record came from, that Microsoft's guesses
wrong for audit events carrying aux_id, that a row Azure would store equals `transform.to_row`, and that
the DCR's history flow stores exactly the row its main flow would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from tests.unit.azure.arm_expressions import Context
from tests.unit.sentinel.kql_eval import KqlError, compile_transform, evaluate
from tests.unit.sentinel.reference import (
    official_stream_columns,
    official_table_columns,
    official_transform,
    transform_history,
)
from tests.unit.sentinel.samples import (
    STREAMS,
    audit_with_aux_id,
    events,
    health_event,
    itemusage_without_action,
    signin_msp,
)

from opsentinel.azure import build_function_app_template, build_template
from opsentinel.azure.template import stream_columns, table_columns, transform_kql
from opsentinel.schema import COLUMNS
from opsentinel.transform import to_dcr_record, to_row

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def uploaded(stream: str, event: dict[str, Any]) -> dict[str, Any]:
    """The record as Azure receives it: to_dcr_record, through JSON."""
    return json.loads(orjson.dumps(to_dcr_record(stream, event)))


def ours(stream: str, event: dict[str, Any], time_generated: str = "ingestion") -> dict[str, Any]:
    return evaluate(
        transform_kql(time_generated),  # type: ignore[arg-type]
        uploaded(stream, event),
        stream_columns=stream_columns(),
        table_columns=table_columns(),
        now=NOW,
    )


def microsofts(stream: str, event: dict[str, Any]) -> dict[str, Any]:
    return evaluate(
        official_transform(),
        uploaded(stream, event),
        stream_columns=official_stream_columns(),
        table_columns=official_table_columns(),
        now=NOW,
    )


def samples() -> list[tuple[str, dict[str, Any]]]:
    cases = [(s, e) for s in STREAMS for e in events(s, 25, seed=5)]
    cases += [("auditevents", audit_with_aux_id()), ("signinattempts", signin_msp())]
    cases += [("itemusages", itemusage_without_action()), ("healthevents", health_event())]
    return cases


def test_the_evaluator_runs_every_historical_transform() -> None:
    for name, text in transform_history().items():
        row = evaluate(
            text,
            uploaded("signinattempts", signin_msp()),
            stream_columns=official_stream_columns(),
            table_columns=official_table_columns(),
            now=NOW,
        )
        assert row["TimeGenerated"] == NOW, name
        assert row["country"] == "ZA", name
        if "log_source" in text:  # the Function-app DCR left log_source to the function
            assert row["log_source"] == "signinattempts", name


def test_the_evaluator_refuses_what_it_does_not_implement() -> None:
    for text in ("source | where x == 1", "source | summarize count()", "source | extend y = strlen(x)"):
        with pytest.raises(KqlError):
            compile_transform(text)


@pytest.mark.parametrize(("stream", "event"), samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_our_transform_keeps_the_stream_the_record_came_from(stream: str, event: dict[str, Any]) -> None:
    assert ours(stream, event)["log_source"] == stream


def test_our_transform_falls_back_to_the_official_guess_without_log_source() -> None:
    record = {k: v for k, v in uploaded("signinattempts", signin_msp()).items() if k != "log_source"}
    row = evaluate(
        transform_kql(), record, stream_columns=stream_columns(), table_columns=table_columns(), now=NOW
    )
    assert row["log_source"] == "signinattempts"


def test_microsofts_transform_mislabels_audit_events_with_aux_id_and_health_rows() -> None:
    assert microsofts("auditevents", audit_with_aux_id())["log_source"] == "itemusages"
    assert ours("auditevents", audit_with_aux_id())["log_source"] == "auditevents"
    assert microsofts("healthevents", health_event())["log_source"] == "auditevents"
    audits = events("auditevents", 200, seed=5)
    with_aux_id = [e for e in audits if "aux_id" in e]
    assert with_aux_id  # the simulator produces them, as the real API does
    assert {microsofts("auditevents", e)["log_source"] for e in with_aux_id} == {"itemusages"}


def _same(kind: str, from_kql: Any, from_row: Any) -> bool:
    if kind == "string":  # Kusto has no null string: "" and NULL are the same value
        return (from_kql or "") == (from_row or "")
    if kind == "dynamic":
        return from_kql == (None if from_row is None else json.loads(from_row))
    return bool(from_kql == from_row)


@pytest.mark.parametrize(("stream", "event"), samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_row_azure_would_store_equals_to_row(stream: str, event: dict[str, Any]) -> None:
    kql = ours(stream, event)
    row = to_row(stream, event, NOW)
    for column, value in zip(COLUMNS, row, strict=True):
        if column.name == "TimeGenerated":
            continue
        assert _same(column.kind, kql[column.name], value), (column.name, kql[column.name], value)


def test_our_transform_agrees_with_microsofts_on_every_column_but_log_source() -> None:
    for stream, event in samples():
        mine, theirs = ours(stream, event), microsofts(stream, event)
        assert {k: v for k, v in mine.items() if k != "log_source"} == {
            k: v for k, v in theirs.items() if k != "log_source"
        }


def test_event_time_mode_uses_the_event_timestamp() -> None:
    row = ours("signinattempts", signin_msp(), "event")
    assert row["TimeGenerated"] == datetime(2024, 3, 1, 1, 3, 6, 92123, tzinfo=UTC) == row["timestamp"]
    assert ours("signinattempts", signin_msp())["TimeGenerated"] == NOW


def _flow_rows(
    template: dict[str, Any], time_generated: str, cases: list[tuple[str, dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Every case through each of the DCR's dataFlows as deployed: the flow's transform, its stream's
    declaration, its output table's columns (all three read from the template)."""
    ctx = Context(template, {"workspaceName": "ws", "timeGenerated": time_generated})
    (rule,) = [r for r in template["resources"] if r["type"] == "Microsoft.Insights/dataCollectionRules"]
    tables = {
        f"Custom-{r['properties']['schema']['name']}": r["properties"]["schema"]["columns"]
        for r in template["resources"]
        if r["type"] == "Microsoft.OperationalInsights/workspaces/tables"
    }
    rows: dict[str, list[dict[str, Any]]] = {}
    for flow in rule["properties"]["dataFlows"]:
        (stream,) = ctx.value(flow["streams"])
        rows[flow["outputStream"]] = [
            evaluate(
                ctx.value(flow["transformKql"]),
                uploaded(source, event),
                stream_columns=rule["properties"]["streamDeclarations"][stream]["columns"],
                table_columns=tables[flow["outputStream"]],
                now=NOW,
            )
            for source, event in cases
        ]
    return rows


@pytest.mark.parametrize("time_generated", ["ingestion", "event"])
@pytest.mark.parametrize(
    "build", [build_template, build_function_app_template], ids=["plain", "function-app"]
)
def test_a_history_row_is_the_row_the_rules_table_would_have_stored(
    build: Callable[[], dict[str, Any]], time_generated: str
) -> None:
    # The first-run history goes to its own stream and table; nothing of the row may differ for it.
    cases = samples()  # once: the samples' timestamps follow the clock
    rows = _flow_rows(build(), time_generated, cases)
    assert set(rows) == {"Custom-OnePasswordEventLogs_CL", "Custom-OnePasswordEventLogsHistory_CL"}
    main, history = rows["Custom-OnePasswordEventLogs_CL"], rows["Custom-OnePasswordEventLogsHistory_CL"]
    assert len(main) == len(cases) and all(len(row) == len(COLUMNS) for row in main)
    assert history == main
    assert main == [ours(stream, event, time_generated) for stream, event in cases]
