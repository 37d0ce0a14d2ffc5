"""The ARM template: well-formed, and matching Microsoft's 1Password table and DCR where it should.

Both tables (the rules' OnePasswordEventLogs_CL and the first-run history table) are the official table,
and the DCR's two streams are one declaration and one transform, so a row is the same whichever of the
two a record was sent to.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from tests.unit.azure.arm_expressions import Context, resource_id
from tests.unit.sentinel.reference import official_stream_columns, official_table_columns, official_transform
from typer.testing import CliRunner

from opsentinel.azure import build_template, transform_kql
from opsentinel.azure.cli import azure_app
from opsentinel.azure.template import OFFICIAL_LOG_SOURCE_GUESS

ARM_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def resource(template: dict[str, Any], type_: str) -> dict[str, Any]:
    (found,) = [r for r in template["resources"] if r["type"] == type_]
    return found


def tables(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The table resources by table name."""
    found = [
        r for r in template["resources"] if r["type"] == "Microsoft.OperationalInsights/workspaces/tables"
    ]
    return {r["properties"]["schema"]["name"]: r for r in found}


def flows(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The DCR's dataFlows by output stream."""
    rule = resource(template, "Microsoft.Insights/dataCollectionRules")
    return {f["outputStream"]: f for f in rule["properties"]["dataFlows"]}


def test_template_is_well_formed_arm() -> None:
    template = json.loads(json.dumps(build_template()))
    assert template["$schema"] == ARM_SCHEMA
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", template["contentVersion"])
    assert set(template) >= {"parameters", "variables", "resources", "outputs"}
    for spec in template["parameters"].values():
        assert spec["type"] in ("string", "int", "bool", "object", "array", "securestring")
        if "allowedValues" in spec and "defaultValue" in spec:
            assert spec["defaultValue"] in spec["allowedValues"]
    for res in template["resources"]:
        assert {"type", "apiVersion", "name"} <= set(res)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", res["apiVersion"])
    for output in template["outputs"].values():
        assert output["type"] == "string"
        assert output["value"].startswith("[")
    for text in strings(template):  # an expression is one bracketed string with balanced parentheses
        if text.startswith("[") and not text.startswith("[["):
            assert text.endswith("]"), text
            assert text.count("(") == text.count(")"), text


def test_every_referenced_parameter_and_variable_is_declared_and_every_parameter_used() -> None:
    template = build_template()
    texts = strings({k: v for k, v in template.items() if k != "parameters"}) + strings(
        template["parameters"]
    )
    used_params = {m for t in texts for m in re.findall(r"parameters\('([^']+)'\)", t)}
    used_vars = {m for t in texts for m in re.findall(r"variables\('([^']+)'\)", t)}
    assert used_params <= set(template["parameters"])
    assert used_vars <= set(template["variables"])
    assert set(template["parameters"]) <= used_params


@pytest.mark.parametrize("name", ["OnePasswordEventLogs_CL", "OnePasswordEventLogsHistory_CL"])
def test_both_tables_are_exactly_the_official_table(name: str) -> None:
    template = build_template()
    table = tables(template)[name]
    assert Context(template, {"workspaceName": "ws"}).value(table["name"]) == f"ws/{name}"
    # Same names, order and types; the type spelled as the tables API does (dateTime for datetime).
    ours = [(c["name"], c["type"].lower()) for c in table["properties"]["schema"]["columns"]]
    assert len(ours) == 33
    assert ours == [(c["name"], c["type"].lower()) for c in official_table_columns()]
    assert {c["type"] for c in table["properties"]["schema"]["columns"]} == {
        "string",
        "dateTime",
        "dynamic",
        "int",
    }
    assert table["properties"]["plan"] == "Analytics"  # a union with the rules' table in one query


def test_each_table_is_deployed_by_its_own_switch_and_history_retention_follows_the_main_table() -> None:
    template = build_template()
    main, history = (
        tables(template)[n] for n in ("OnePasswordEventLogs_CL", "OnePasswordEventLogsHistory_CL")
    )
    assert main["condition"] == "[parameters('deployTable')]"
    # deployTable=false protects an existing main table (Microsoft's); the DCR still needs the history one.
    assert history["condition"] == "[parameters('deployHistoryTable')]"
    assert template["parameters"]["deployHistoryTable"]["defaultValue"] is True

    def retention(table: dict[str, Any], **parameters: Any) -> tuple[Any, Any]:
        ctx = Context(template, {"workspaceName": "ws", **parameters})
        props = table["properties"]
        return ctx.value(props["retentionInDays"]), ctx.value(props["totalRetentionInDays"])

    assert retention(history) == (-1, -1)  # the workspace's default, as the main table
    main_set = {"tableRetentionInDays": 90, "tableTotalRetentionInDays": 730}
    assert retention(main, **main_set) == retention(history, **main_set) == (90, 730)
    own = {**main_set, "historyTableRetentionInDays": 30, "historyTableTotalRetentionInDays": 365}
    assert retention(history, **own) == (30, 365)
    assert retention(main, **own) == (90, 730)


def test_the_dcr_depends_on_both_tables() -> None:
    template = build_template()
    ctx = Context(template, {"workspaceName": "ws"})
    rule = resource(template, "Microsoft.Insights/dataCollectionRules")
    depends = {ctx.value(d) for d in rule["dependsOn"]}
    for table in tables(template).values():
        assert resource_id(table, ctx) in depends


def test_the_stream_declares_the_official_columns_plus_log_source() -> None:
    rule = resource(build_template(), "Microsoft.Insights/dataCollectionRules")
    declarations = rule["properties"]["streamDeclarations"]
    assert set(declarations) == {"Custom-OnePasswordEventLogs_CL", "Custom-OnePasswordEventLogsHistory_CL"}
    for declaration in declarations.values():
        assert declaration["columns"] == [
            *official_stream_columns(),
            {"name": "log_source", "type": "string"},
        ]
    assert rule["properties"]["dataCollectionEndpointId"] == "[variables('dataCollectionEndpointId')]"


def test_two_flows_each_stream_to_its_own_table_through_the_same_transform() -> None:
    template = build_template()
    ctx = Context(template, {"workspaceName": "ws"})
    by_output = flows(template)
    assert set(by_output) == {"Custom-OnePasswordEventLogs_CL", "Custom-OnePasswordEventLogsHistory_CL"}
    (destination,) = resource(template, "Microsoft.Insights/dataCollectionRules")["properties"][
        "destinations"
    ]["logAnalytics"]
    for output, flow in by_output.items():
        # Each stream flows to the table of the same name; never the history stream to the rules' table.
        assert ctx.value(flow["streams"]) == [output]
        assert flow["destinations"] == [destination["name"]]
    main, history = (
        by_output["Custom-OnePasswordEventLogs_CL"],
        by_output["Custom-OnePasswordEventLogsHistory_CL"],
    )
    assert main["transformKql"] == history["transformKql"]
    for time_generated in ("ingestion", "event"):
        both = Context(template, {"workspaceName": "ws", "timeGenerated": time_generated})
        assert (
            both.value(main["transformKql"])
            == both.value(history["transformKql"])
            == transform_kql(time_generated)
        )


def test_the_transform_is_the_official_one_keeping_the_records_log_source() -> None:
    official = official_transform()
    guess = f"log_source = {OFFICIAL_LOG_SOURCE_GUESS}"
    assert official.endswith(guess)
    ours = official.replace(
        guess, f"log_source = iff(isnotempty(log_source), log_source, {OFFICIAL_LOG_SOURCE_GUESS})"
    )
    assert transform_kql("ingestion") == ours
    assert transform_kql("event") == ours.replace(
        "TimeGenerated = now()", "TimeGenerated = coalesce(timestamp, now())"
    )
    template = build_template()
    variables = template["variables"]
    assert variables["transformIngestionTime"] == transform_kql("ingestion")
    assert variables["transformEventTime"] == transform_kql("event")
    for flow in flows(template).values():
        assert "variables('transformEventTime')" in flow["transformKql"]
        assert "variables('transformIngestionTime')" in flow["transformKql"]
    assert template["parameters"]["timeGenerated"]["defaultValue"] == "ingestion"


def test_outputs_are_what_op_sentinel_needs() -> None:
    outputs = build_template()["outputs"]
    assert ".logsIngestion.endpoint" in outputs["logsIngestionEndpoint"]["value"]
    assert ".immutableId" in outputs["dataCollectionRuleImmutableId"]["value"]
    assert outputs["streamName"]["value"] == "[variables('streamName')]"
    assert build_template()["variables"]["streamName"] == "Custom-OnePasswordEventLogs_CL"
    # The default of --history-stream; the docs tell Microsoft-DCR users to set it empty instead.
    assert outputs["historyStreamName"]["value"] == "[variables('historyStreamName')]"
    assert build_template()["variables"]["historyStreamName"] == "Custom-OnePasswordEventLogsHistory_CL"
    assert "--dce {0} --dcr-id {1} --stream {2}" in outputs["opSentinelArguments"]["value"]


def test_the_endpoint_and_the_role_assignment_are_optional() -> None:
    template = build_template()
    endpoint = resource(template, "Microsoft.Insights/dataCollectionEndpoints")
    assert endpoint["condition"] == "[variables('createDataCollectionEndpoint')]"
    assert "existingDataCollectionEndpointId" in template["variables"]["dataCollectionEndpointId"]
    assert template["parameters"]["existingDataCollectionEndpointId"]["defaultValue"] == ""
    role = resource(template, "Microsoft.Authorization/roleAssignments")
    assert role["condition"] == "[not(empty(parameters('principalId')))]"
    assert "Microsoft.Insights/dataCollectionRules/" in role["scope"]
    assert "3913510d-42f4-4e42-8a64-420c390055eb" in template["variables"]["monitoringMetricsPublisher"]
    assert role["properties"]["roleDefinitionId"] == "[variables('monitoringMetricsPublisher')]"
    assert role["properties"]["principalId"] == "[parameters('principalId')]"


def test_cli_prints_the_template_or_writes_it_to_a_file(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(azure_app, ["template"])
    assert printed.exit_code == 0
    assert json.loads(printed.stdout) == build_template()
    assert printed.stdout.startswith('{\n  "$schema"')
    target = tmp_path / "op-sentinel.json"
    written = runner.invoke(azure_app, ["template", "--output", str(target)])
    assert written.exit_code == 0
    assert json.loads(target.read_text()) == build_template()
