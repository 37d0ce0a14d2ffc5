"""The ARM template: well-formed, and matching Microsoft's 1Password table and DCR where it should."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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


def test_the_table_is_exactly_the_official_table() -> None:
    table = resource(build_template(), "Microsoft.OperationalInsights/workspaces/tables")
    assert table["properties"]["schema"]["name"] == "OnePasswordEventLogs_CL"
    # Same names, order and types; the type spelled as the tables API does (dateTime for datetime).
    ours = [(c["name"], c["type"].lower()) for c in table["properties"]["schema"]["columns"]]
    assert ours == [(c["name"], c["type"].lower()) for c in official_table_columns()]
    assert {c["type"] for c in table["properties"]["schema"]["columns"]} == {
        "string",
        "dateTime",
        "dynamic",
        "int",
    }


def test_the_stream_declares_the_official_columns_plus_log_source() -> None:
    rule = resource(build_template(), "Microsoft.Insights/dataCollectionRules")
    columns = rule["properties"]["streamDeclarations"]["Custom-OnePasswordEventLogs_CL"]["columns"]
    assert columns == [*official_stream_columns(), {"name": "log_source", "type": "string"}]
    (flow,) = rule["properties"]["dataFlows"]
    assert flow["streams"] == "[variables('dataFlowStreams')]"
    assert build_template()["variables"]["dataFlowStreams"] == ["Custom-OnePasswordEventLogs_CL"]
    assert flow["outputStream"] == "Custom-OnePasswordEventLogs_CL"
    (destination,) = rule["properties"]["destinations"]["logAnalytics"]
    assert flow["destinations"] == [destination["name"]]
    assert rule["properties"]["dataCollectionEndpointId"] == "[variables('dataCollectionEndpointId')]"


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
    flow = resource(template, "Microsoft.Insights/dataCollectionRules")["properties"]["dataFlows"][0]
    assert "variables('transformEventTime')" in flow["transformKql"]
    assert "variables('transformIngestionTime')" in flow["transformKql"]
    assert template["parameters"]["timeGenerated"]["defaultValue"] == "ingestion"


def test_outputs_are_what_op_sentinel_needs() -> None:
    outputs = build_template()["outputs"]
    assert ".logsIngestion.endpoint" in outputs["logsIngestionEndpoint"]["value"]
    assert ".immutableId" in outputs["dataCollectionRuleImmutableId"]["value"]
    assert outputs["streamName"]["value"] == "[variables('streamName')]"
    assert build_template()["variables"]["streamName"] == "Custom-OnePasswordEventLogs_CL"
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
